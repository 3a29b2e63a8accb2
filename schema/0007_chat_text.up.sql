-- 0007: chat text as a reader sees it, with the server's raw text beside it.
--
-- CyTube HTML-escapes chat text and applies its filters (links become <a> tags) before it
-- broadcasts a line. From now on `message` holds the text as a reader sees it (entities
-- unescaped, tags reduced to their text) and `raw_message` what the server sent. Rows
-- written before this migration stored the server's text in `message`: both columns get
-- it. An INSERT that names no raw_message (one queued for retry before this migration)
-- gets the message as its raw text.

ALTER TABLE daz_chat_messages ADD COLUMN raw_message text;
UPDATE daz_chat_messages SET raw_message = message;
ALTER TABLE daz_chat_messages ALTER COLUMN raw_message SET NOT NULL;

ALTER TABLE daz_private_messages ADD COLUMN raw_message text;
UPDATE daz_private_messages SET raw_message = message;
ALTER TABLE daz_private_messages ALTER COLUMN raw_message SET NOT NULL;

CREATE FUNCTION daz_default_raw_message() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.raw_message := coalesce(NEW.raw_message, NEW.message);
    RETURN NEW;
END
$$;

CREATE TRIGGER daz_chat_messages_raw_message
    BEFORE INSERT ON daz_chat_messages
    FOR EACH ROW EXECUTE FUNCTION daz_default_raw_message();

CREATE TRIGGER daz_private_messages_raw_message
    BEFORE INSERT ON daz_private_messages
    FOR EACH ROW EXECUTE FUNCTION daz_default_raw_message();
