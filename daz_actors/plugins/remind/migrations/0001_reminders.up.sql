-- remind 0001: reminders, each fired once by its queue item (not before due_at).
CREATE TABLE daz_reminders (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel        text NOT NULL,
    username       text NOT NULL,
    text           text NOT NULL,       -- may be empty: "!remind 10m"
    created_at     timestamptz NOT NULL DEFAULT now(),
    due_at         timestamptz NOT NULL,
    said_text      text,                -- what the bot says, fixed at the first attempt
    said_to        text,                -- always NULL: said in the channel
    attempt_at     timestamptz,
    claimed_until  timestamptz,
    delivered_at   timestamptz          -- fired: the server echoed it
);

CREATE INDEX daz_reminders_pending ON daz_reminders (due_at) WHERE delivered_at IS NULL;
CREATE INDEX daz_reminders_user ON daz_reminders (channel, lower(username));
