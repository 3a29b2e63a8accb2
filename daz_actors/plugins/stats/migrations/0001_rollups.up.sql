-- stats 0001: per-channel counts of the chat log, kept by a trigger on the core's
-- daz_chat_messages, so that !stats reads a few hundred rows instead of millions.
--
-- The trigger runs once per INSERT statement over the rows it actually inserted (a
-- transition table: a line the core logs twice, ON CONFLICT DO NOTHING, is counted once),
-- in the same transaction as the insert: the counts are exactly as durable as the lines.
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
    -- rows are upserted in key order, so two inserts never lock them in opposite orders
    INSERT INTO daz_stats_hours AS h (channel, hour, lines)
    SELECT channel, date_trunc('hour', sent_at, 'UTC'), count(*) FROM daz_stats_new_lines
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (channel, hour) DO UPDATE SET lines = h.lines + EXCLUDED.lines;

    INSERT INTO daz_stats_users AS u (channel, lname, username, lines, last_at)
    SELECT DISTINCT ON (channel, lower(username))
        channel, lower(username), username,
        count(*) OVER (PARTITION BY channel, lower(username)),
        max(sent_at) OVER (PARTITION BY channel, lower(username))
    FROM daz_stats_new_lines
    ORDER BY channel, lower(username), sent_at DESC, username DESC
    ON CONFLICT (channel, lname) DO UPDATE SET
        lines = u.lines + EXCLUDED.lines,
        -- the name of their newest line (ties: the greater spelling, as the backfill)
        username = CASE WHEN (EXCLUDED.last_at, EXCLUDED.username) >= (u.last_at, u.username)
                        THEN EXCLUDED.username ELSE u.username END,
        last_at = GREATEST(u.last_at, EXCLUDED.last_at);
    RETURN NULL;
END
$$;

-- a statement trigger: the router writes a busy room's lines in batches (one INSERT of
-- many rows), where this costs about 3 us a row against about 27 for a row trigger; for
-- a one-row insert the two were within the noise of the commit (bench/README.md)
CREATE TRIGGER daz_stats_count_lines
    AFTER INSERT ON daz_chat_messages
    REFERENCING NEW TABLE AS daz_stats_new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION daz_stats_count_lines();

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
