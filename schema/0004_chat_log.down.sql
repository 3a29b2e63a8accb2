DROP TABLE daz_channel_events;
DROP TABLE daz_private_messages;
DROP TABLE daz_chat_messages;
