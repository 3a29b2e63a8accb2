-- greeter 0001: per user and channel, when they were last greeted, when they may be
-- greeted again (a random cooldown), and whether they asked not to be (!greet off).
CREATE TABLE daz_greeter_users (
    channel          text NOT NULL,
    lname            text NOT NULL,          -- lower-case name: the key
    username         text NOT NULL,
    last_greeted_at  timestamptz,
    next_greet_at    timestamptz,            -- no greeting before this
    opted_out        boolean NOT NULL DEFAULT false,
    opted_at         timestamptz,            -- when !greet off|on was said (the newest wins)
    PRIMARY KEY (channel, lname)
);
