-- usertracker 0001: who is in each channel, their sessions, and what they last said.

-- one row per user and channel: the answer to !seen
CREATE TABLE daz_usertracker_users (
    channel        text NOT NULL,
    lname          text NOT NULL,           -- lower-case name: the key
    username       text NOT NULL,           -- as last seen
    present        boolean NOT NULL DEFAULT false,
    last_join_at   timestamptz,
    last_leave_at  timestamptz,
    last_line      text,                    -- the last chat line, as a reader sees it
    last_line_at   timestamptz,
    PRIMARY KEY (channel, lname)
);

-- one row per stay in the channel: open (left_at NULL) while the user is here
CREATE TABLE daz_usertracker_sessions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel     text NOT NULL,
    lname       text NOT NULL,
    username    text NOT NULL,
    joined_at   timestamptz NOT NULL,
    left_at     timestamptz,
    -- false: the user was already here in a userlist (the bot (re)joined), joined_at is
    -- when the bot saw them, not when they came
    join_seen   boolean NOT NULL DEFAULT true,
    -- false: missing from a userlist: they left while the bot was away, left_at is when the
    -- bot noticed
    leave_seen  boolean
);

-- at most one open session per user and channel
CREATE UNIQUE INDEX daz_usertracker_sessions_open
    ON daz_usertracker_sessions (channel, lname) WHERE left_at IS NULL;
-- a join recorded twice (a write redone by the retry queue) is one session
CREATE UNIQUE INDEX daz_usertracker_sessions_user
    ON daz_usertracker_sessions (channel, lname, joined_at);
