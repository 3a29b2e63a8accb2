DROP TABLE daz_usertracker_sessions;
DROP TABLE daz_usertracker_users;
