-- stats 0001: per-channel counts of the chat log, kept by a trigger on the core's
-- daz_chat_messages, so that !stats reads a few hundred rows instead of millions.
--
-- The trigger runs for each row an INSERT actually inserts (a line the core logs twice,
-- ON CONFLICT DO NOTHING, is counted once), in the same transaction as the insert: the
-- counts are exactly as durable as the lines.
-- Lines deleted from the chat log later stay counted.

-- lines per channel and hour (UTC)
CREATE TABLE daz_stats_hours (
    channel  text NOT NULL,
    hour     timestamptz NOT NULL,          -- date_trunc('hour', sent_at, 'UTC')
    lines    bigint NOT NULL,
    PRIMARY KEY (channel, hour)
);

-- lines per channel and user
CREATE TABLE daz_stats_users (
    channel   text NOT NULL,
    lname     text NOT NULL,                -- lower-case name: the key
    username  text NOT NULL,                -- as last seen
    lines     bigint NOT NULL,
    last_at   timestamptz NOT NULL,         -- their newest line
    PRIMARY KEY (channel, lname)
);
CREATE INDEX daz_stats_users_top ON daz_stats_users (channel, lines DESC);

CREATE FUNCTION daz_stats_count_lines() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO daz_stats_hours AS h (channel, hour, lines)
    VALUES (NEW.channel, date_trunc('hour', NEW.sent_at, 'UTC'), 1)
    ON CONFLICT (channel, hour) DO UPDATE SET lines = h.lines + 1;

    INSERT INTO daz_stats_users AS u (channel, lname, username, lines, last_at)
    VALUES (NEW.channel, lower(NEW.username), NEW.username, 1, NEW.sent_at)
    ON CONFLICT (channel, lname) DO UPDATE SET
        lines = u.lines + 1,
        -- the name of their newest line (ties: the greater spelling, as the backfill)
        username = CASE WHEN (EXCLUDED.last_at, EXCLUDED.username) >= (u.last_at, u.username)
                        THEN EXCLUDED.username ELSE u.username END,
        last_at = GREATEST(u.last_at, EXCLUDED.last_at);
    RETURN NULL;
END
$$;

-- a row trigger, not a statement trigger with a transition table: the core logs one line
-- per INSERT, and per line this costs about a quarter of the statement trigger's overhead
-- (bench/README.md). AFTER INSERT row triggers fire only for rows actually inserted.
CREATE TRIGGER daz_stats_count_lines
    AFTER INSERT ON daz_chat_messages
    FOR EACH ROW EXECUTE FUNCTION daz_stats_count_lines();

-- the lines logged before this migration
INSERT INTO daz_stats_hours (channel, hour, lines)
SELECT channel, date_trunc('hour', sent_at, 'UTC'), count(*) FROM daz_chat_messages GROUP BY 1, 2;

INSERT INTO daz_stats_users (channel, lname, username, lines, last_at)
SELECT DISTINCT ON (channel, lower(username))
    channel, lower(username), username,
    count(*) OVER (PARTITION BY channel, lower(username)),
    max(sent_at) OVER (PARTITION BY channel, lower(username))
FROM daz_chat_messages
ORDER BY channel, lower(username), sent_at DESC, username DESC;
