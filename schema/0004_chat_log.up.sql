-- 0004: the chat log: who said what, when, and what happened in the channel.
--
-- Written by the event router, one INSERT ... ON CONFLICT (event_id) DO NOTHING per event.
-- event_id is derived from the event itself (a sha256 of its fields, see
-- daz_actors/_router.py), so the same line logged twice (a history line replayed after a
-- reconnect, a write retried through the queue) is stored once.

CREATE TABLE daz_chat_messages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    text NOT NULL,
    channel     text NOT NULL,
    username    text NOT NULL,
    message     text NOT NULL,
    sent_at     timestamptz NOT NULL,               -- the server's time of the line
    is_history  boolean NOT NULL DEFAULT false,     -- replayed by the server on join
    received_at timestamptz NOT NULL DEFAULT now(), -- when the bot received it
    meta        jsonb NOT NULL DEFAULT '{}'::jsonb, -- the server's meta object
    CONSTRAINT daz_chat_messages_event_id_key UNIQUE (event_id)
);

-- "what was said in #channel between X and Y", "what did <user> say in #channel"
CREATE INDEX daz_chat_messages_channel_sent_at_idx ON daz_chat_messages (channel, sent_at);
CREATE INDEX daz_chat_messages_channel_user_sent_at_idx
    ON daz_chat_messages (channel, lower(username), sent_at);

CREATE TABLE daz_private_messages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    text NOT NULL,
    channel     text NOT NULL,
    from_user   text NOT NULL,
    to_user     text NOT NULL,
    message     text NOT NULL,
    sent_at     timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT daz_private_messages_event_id_key UNIQUE (event_id)
);

CREATE INDEX daz_private_messages_from_idx
    ON daz_private_messages (channel, lower(from_user), sent_at);
CREATE INDEX daz_private_messages_to_idx
    ON daz_private_messages (channel, lower(to_user), sent_at);

-- joins, leaves and media changes. These carry no server time: `at` is when the bot
-- received the event, and the event id includes it.
CREATE TABLE daz_channel_events (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id text NOT NULL,
    kind     text NOT NULL,
    channel  text NOT NULL,
    username text,                               -- joins and leaves
    title    text,                               -- media changes
    payload  jsonb NOT NULL DEFAULT '{}'::jsonb, -- the rest of the event (rank, media id, ...)
    at       timestamptz NOT NULL,
    CONSTRAINT daz_channel_events_event_id_key UNIQUE (event_id),
    CONSTRAINT daz_channel_events_kind_check CHECK (kind IN ('join', 'leave', 'media'))
);

CREATE INDEX daz_channel_events_channel_at_idx ON daz_channel_events (channel, at);
CREATE INDEX daz_channel_events_channel_user_at_idx
    ON daz_channel_events (channel, lower(username), at) WHERE username IS NOT NULL;
