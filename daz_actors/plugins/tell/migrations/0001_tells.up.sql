-- tell 0001: messages left for a user, said once when they next join or speak.
CREATE TABLE daz_tells (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel        text NOT NULL,
    sender         text NOT NULL,
    target         text NOT NULL,
    message        text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    said_text      text,          -- what the bot says, fixed at the first attempt
    said_to        text,          -- the PM recipient (delivery = "pm"), else NULL
    attempt_at     timestamptz,   -- when the first attempt to say it began
    claimed_until  timestamptz,   -- an attempt holds it until then
    delivered_at   timestamptz    -- the server echoed it
);

-- at most one message waiting per sender and target in a channel
CREATE UNIQUE INDEX daz_tells_one_pending
    ON daz_tells (channel, lower(sender), lower(target)) WHERE delivered_at IS NULL;
CREATE INDEX daz_tells_pending_target
    ON daz_tells (channel, lower(target)) WHERE delivered_at IS NULL;
