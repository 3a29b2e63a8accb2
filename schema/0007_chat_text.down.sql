-- back to one text column holding what the server sent
DROP TRIGGER daz_private_messages_raw_message ON daz_private_messages;
DROP TRIGGER daz_chat_messages_raw_message ON daz_chat_messages;
DROP FUNCTION daz_default_raw_message();
UPDATE daz_private_messages SET message = raw_message;
ALTER TABLE daz_private_messages DROP COLUMN raw_message;
UPDATE daz_chat_messages SET message = raw_message;
ALTER TABLE daz_chat_messages DROP COLUMN raw_message;
