"""The runtime of the ``mediatracker`` plugin (imported by its `setup`); see the package's
docstring for what it does."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import attrs

from daz_actors.cytube.channel_events import ChannelEventKind
from daz_actors.cytube.commands import CommandContext
from daz_actors.cytube.events import MediaChanged, PlaylistQueued
from daz_actors.plugins.api import PluginContext
from daz_actors.plugins.declaration import PluginActor, PluginCommand, PluginParts
from daz_actors.plugins.mediatracker import NAME, MediaTrackerParams
from daz_actors.plugins.text import ago, clip
from daz_actors.plugins.writes import PluginWrite, write_or_queue
from daz_actors.runtime.actor import Actor, actor_factory
from daz_actors.runtime.bus import Published
from daz_actors.storage.sql_messages import SqlClient

__all__ = ["PLAYED", "Played", "clock"]

log = logging.getLogger("daz_actors.plugins.mediatracker")

TITLE_SHOWN = 80  # characters of a title in a reply


@attrs.frozen(kw_only=True)
class Played:
    """Intent ``mediatracker.play`` v1: a media started playing."""

    channel: str
    media_type: str
    media_id: str
    title: str
    duration_s: float
    at: float  # seconds since the epoch
    queued_by: str | None = None
    replay_slack: float = 120.0


# one statement: the play (unless it is the one playing already, heard again) and its count
_PLAY = """
WITH last AS (
    SELECT media_type, media_id, started_at, duration_s FROM daz_mediatracker_plays
    WHERE channel = $2 AND started_at <= $7 ORDER BY started_at DESC LIMIT 1
), play AS (
    INSERT INTO daz_mediatracker_plays
        (event_id, channel, media_type, media_id, title, duration_s, started_at, queued_by)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8
    WHERE NOT EXISTS (
        SELECT 1 FROM last WHERE last.media_type = $3 AND last.media_id = $4
        AND (last.duration_s <= 0
             OR last.started_at + make_interval(secs => last.duration_s + $9) > $7))
    ON CONFLICT (event_id) DO NOTHING
    RETURNING channel, media_type, media_id, title, duration_s, started_at
)
INSERT INTO daz_mediatracker_media AS m
    (channel, media_type, media_id, title, duration_s, plays, first_played_at, last_played_at)
SELECT channel, media_type, media_id, title, duration_s, 1, started_at, started_at FROM play
ON CONFLICT (channel, media_type, media_id) DO UPDATE SET
    plays = m.plays + 1,
    title = CASE WHEN EXCLUDED.last_played_at >= m.last_played_at THEN EXCLUDED.title
                 ELSE m.title END,
    duration_s = EXCLUDED.duration_s,
    first_played_at = LEAST(m.first_played_at, EXCLUDED.first_played_at),
    last_played_at = GREATEST(m.last_played_at, EXCLUDED.last_played_at)"""


def play_event_id(p: Played) -> str:
    return f"{NAME}:play:{p.channel}:{p.media_type}:{p.media_id}:{p.at}"


async def _play(db: SqlClient, p: Played) -> None:
    await db.execute(
        _PLAY, play_event_id(p), p.channel, p.media_type, p.media_id, p.title, p.duration_s,
        datetime.fromtimestamp(p.at, UTC), p.queued_by, p.replay_slack,
    )  # fmt: skip


PLAYED = PluginWrite.of("mediatracker.play", Played, _play, description="record a media play")


QUEUERS_KEPT = 2000  # playlist items remembered per channel (who queued them)


class Tracker(Actor):
    """Records each media change it hears, in order, with who queued it when the playlist
    said so (``playlist`` on join, ``queue`` for each item added)."""

    def __init__(self, plugin: PluginContext[MediaTrackerParams]) -> None:
        self.plugin = plugin
        # channel -> (media type, media id) -> who queued it, newest last
        self.queuers: dict[str, dict[tuple[str, str], str]] = {}

    async def on_start(self) -> None:
        self.plugin.subscribe(self.ctx.ref, [ChannelEventKind.MEDIA, ChannelEventKind.QUEUE])

    def _queued(self, event: PlaylistQueued) -> None:
        if event.full:
            self.queuers[event.channel] = {}
        known = self.queuers.setdefault(event.channel, {})
        for item in event.items:
            key = (item.media_type, item.media_id)
            known.pop(key, None)
            if item.queued_by:
                known[key] = item.queued_by
        while len(known) > QUEUERS_KEPT:
            del known[next(iter(known))]

    async def handle(self, message: Any) -> Any:
        event = message.event if isinstance(message, Published) else None
        if isinstance(event, PlaylistQueued):
            self._queued(event)
            return None
        if not isinstance(event, MediaChanged):
            log.warning("mediatracker ignores %s", type(message).__name__)
            return None
        if not event.media_id:
            return None  # nothing playing
        played = Played(
            channel=event.channel,
            media_type=event.media_type,
            media_id=event.media_id,
            title=event.title,
            duration_s=max(0.0, event.seconds),
            at=event.received_at,
            queued_by=self.queuers.get(event.channel, {}).get((event.media_type, event.media_id)),
            replay_slack=self.plugin.params.replay_slack,
        )
        await write_or_queue(
            self.plugin, PLAYED, played, event_id=play_event_id(played), channel=event.channel,
            timeout=self.plugin.params.write_timeout,
        )  # fmt: skip
        return None


def clock(seconds: float) -> str:
    """``"3:32"``, ``"1:02:03"``; ``"live"`` for 0."""
    total = round(seconds)
    if total <= 0:
        return "live"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


_NEWEST = """
SELECT title, media_type, media_id, duration_s, started_at, queued_by
FROM daz_mediatracker_plays WHERE channel = $1 ORDER BY started_at DESC LIMIT $2"""
_TOP = """
SELECT title, plays FROM daz_mediatracker_media WHERE channel = $1
ORDER BY plays DESC, last_played_at DESC LIMIT $2"""


def _title(row: Any) -> str:
    return clip(row["title"] or f"{row['media_type']}:{row['media_id']}", TITLE_SHOWN)


def setup(ctx: PluginContext[MediaTrackerParams]) -> PluginParts:
    """The tracker actor, the commands and the intent of the play write."""
    params = ctx.params

    async def nowplaying(command: CommandContext) -> str:
        rows = await ctx.db().query(_NEWEST, command.channel, 1)
        if not rows:
            return "nothing has played here yet"
        row = rows[0]
        by = f", queued by {row['queued_by']}" if row["queued_by"] else ""
        started = ago(row["started_at"], datetime.now(UTC)).removesuffix(" ago")
        return (
            f"now playing: {_title(row)} ({row['media_type']}:{row['media_id']}, "
            f"{clock(row['duration_s'])}{by}), started {started} ago"
        )

    async def lastplayed(command: CommandContext) -> str:
        arg = command.args.split()[0] if command.args.split() else "3"
        if not arg.isdigit() or not 1 <= int(arg) <= params.lastplayed_max:
            return f"usage: {command.prefix}lastplayed [1-{params.lastplayed_max}]"
        rows = await ctx.db().query(_NEWEST, command.channel, int(arg) + 1)
        earlier = rows[1:]  # the first is playing now
        if not earlier:
            return "nothing played here before this"
        now = datetime.now(UTC)
        items = [f"{_title(r)} ({ago(r['started_at'], now)})" for r in earlier]
        return "last played: " + " | ".join(items)

    async def topmedia(command: CommandContext) -> str:
        rows = await ctx.db().query(_TOP, command.channel, params.top)
        if not rows:
            return "nothing has played here yet"
        items = [f"{_title(r)} ({r['plays']} play{'s' if r['plays'] != 1 else ''})" for r in rows]
        return "most played: " + " | ".join(items)

    def command(name: str, fn: Any, help: str) -> PluginCommand:
        return PluginCommand(name=name, fn=fn, help=help, cooldown=params.cooldown)

    return PluginParts(
        commands=[
            command("nowplaying", nowplaying, "what is playing, and who queued it"),
            command("np", nowplaying, "same as !nowplaying"),
            command("lastplayed", lastplayed, "what played before: !lastplayed [n]"),
            command("topmedia", topmedia, "the most played media here"),
        ],
        actors=[PluginActor(name="tracker", start=actor_factory(lambda: Tracker(ctx)))],
        intents=[PLAYED.intent],
    )
