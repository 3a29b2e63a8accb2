-- mediatracker 0001: every media played per channel, and a row per media with its count.

CREATE TABLE daz_mediatracker_plays (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    text NOT NULL UNIQUE,       -- idempotent: a write redone is one row
    channel     text NOT NULL,
    media_type  text NOT NULL,              -- yt, vi, dm, sc, li, ...
    media_id    text NOT NULL,
    title       text NOT NULL,
    duration_s  double precision NOT NULL,  -- 0: a live stream, or unknown
    started_at  timestamptz NOT NULL,       -- when the bot heard it start
    queued_by   text                        -- who queued it, when the server said so
);

-- !nowplaying, !lastplayed: the newest plays of a channel
CREATE INDEX daz_mediatracker_plays_channel_started
    ON daz_mediatracker_plays (channel, started_at DESC);

CREATE TABLE daz_mediatracker_media (
    channel         text NOT NULL,
    media_type      text NOT NULL,
    media_id        text NOT NULL,
    title           text NOT NULL,          -- as last played
    duration_s      double precision NOT NULL,
    plays           bigint NOT NULL,
    first_played_at timestamptz NOT NULL,
    last_played_at  timestamptz NOT NULL,
    PRIMARY KEY (channel, media_type, media_id)
);

-- !topmedia
CREATE INDEX daz_mediatracker_media_top
    ON daz_mediatracker_media (channel, plays DESC, last_played_at DESC);
