DROP TRIGGER daz_stats_count_lines ON daz_chat_messages;
DROP FUNCTION daz_stats_count_lines();
DROP TABLE daz_stats_users;
DROP TABLE daz_stats_hours;
