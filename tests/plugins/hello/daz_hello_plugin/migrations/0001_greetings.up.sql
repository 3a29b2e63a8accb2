-- hello 0001: one row per greeting the plugin said.
CREATE TABLE hello_greetings (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id  text NOT NULL UNIQUE,   -- idempotent: a retried greeting is one row
    channel   text NOT NULL,
    username  text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
