"""The ``stats`` plugin: ``!stats`` for the channel (lines today and in all, top chatters,
busiest hour, media played today).

It reads counts, not the chat log: its migration adds ``daz_stats_hours`` (lines per
channel and hour) and ``daz_stats_users`` (lines per channel and user), kept by a trigger
on the core's ``daz_chat_messages`` in the same transaction as each insert (so they are
exactly as durable as the lines, and a line logged twice is counted once), and filled
from the lines already logged when the migration runs. ``!stats`` then reads a few
hundred rows through their keys however long the log grows (``python -m bench.stats``
measures it on a million lines beside the plain queries of the chat log).

Media played today come from the mediatracker's plays when that plugin's table exists,
else from the media changes of the core's channel log (which also counts the media
announced again when the bot rejoins).

Config (``[plugins.stats]``): ``cooldown`` (seconds per user), ``top`` (chatters shown),
``timezone`` (an IANA name: when "today" starts and how the busiest hour is shown; the
counts are kept per UTC hour, so a zone whose offset is not whole hours starts "today"
at the hour holding local midnight).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from daz_actors.cytube.commands import CommandContext
from daz_actors.plugins.api import Plugin, PluginCommand, PluginContext, PluginParts
from daz_actors.runtime.validators import non_negative

__all__ = [
    "ChannelStats",
    "StatsParams",
    "channel_stats",
    "day_start",
    "plain_channel_stats",
    "plugin",
    "stats_reply",
]

NAME = "stats"

Fetch = Callable[..., Awaitable[list[Any]]]  # (sql, *args) -> rows: SqlClient.query, conn.fetch


def _timezone(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as UTC)") from None


def _top(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10:
        raise ValueError(f"top must be an integer from 1 to 10, got {value!r}")


@attrs.frozen(kw_only=True)
class StatsParams:
    """``[plugins.stats]``."""

    cooldown: float = attrs.field(default=10.0, validator=non_negative)
    top: int = attrs.field(default=3, validator=_top)
    timezone: str = attrs.field(default="UTC", validator=_timezone)


@attrs.frozen(kw_only=True)
class ChannelStats:
    """What !stats says."""

    lines_today: int
    lines_total: int
    top: tuple[tuple[str, int], ...]  # (name, lines), most first
    busiest_hour: int | None  # 0-23 in the configured zone; None: no line yet
    media_today: int


def day_start(now: datetime, zone: ZoneInfo) -> datetime:
    """The start of `now`'s day in `zone`, as the UTC hour that holds it."""
    local = now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    return local.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# $1 channel, $2 start of today, $3 the bot's lower-case name, $4 how many, $5 time zone
_STATS = """
SELECT
    (SELECT coalesce(sum(lines), 0) FROM daz_stats_hours
     WHERE channel = $1 AND hour >= $2) AS today,
    (SELECT coalesce(sum(lines), 0) FROM daz_stats_users WHERE channel = $1) AS total,
    (SELECT coalesce(json_agg(json_build_array(username, lines)), '[]') FROM (
        SELECT username, lines FROM daz_stats_users WHERE channel = $1 AND lname <> $3
        ORDER BY lines DESC, lname LIMIT $4) AS t) AS top,
    (SELECT extract(hour FROM hour AT TIME ZONE $5)::int FROM daz_stats_hours
     WHERE channel = $1 GROUP BY 1 ORDER BY sum(lines) DESC, 1 LIMIT 1) AS busiest"""
# the same figures straight from the chat log (what bench.stats compares against)
_PLAIN = """
SELECT
    (SELECT count(*) FROM daz_chat_messages WHERE channel = $1 AND sent_at >= $2) AS today,
    (SELECT count(*) FROM daz_chat_messages WHERE channel = $1) AS total,
    (SELECT coalesce(json_agg(json_build_array(username, lines)), '[]') FROM (
        SELECT (array_agg(username ORDER BY sent_at DESC, username DESC))[1] AS username,
            count(*) AS lines, lower(username) AS lname
        FROM daz_chat_messages WHERE channel = $1 AND lower(username) <> $3
        GROUP BY lower(username) ORDER BY lines DESC, lname LIMIT $4) AS t) AS top,
    (SELECT extract(hour FROM sent_at AT TIME ZONE $5)::int FROM daz_chat_messages
     WHERE channel = $1 GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1) AS busiest"""
_MEDIA_SOURCE = "SELECT to_regclass('daz_mediatracker_plays') IS NOT NULL"
_MEDIA_TRACKED = """
SELECT count(*) FROM daz_mediatracker_plays WHERE channel = $1 AND started_at >= $2"""
_MEDIA_LOGGED = """
SELECT count(*) FROM daz_channel_events WHERE channel = $1 AND at >= $2 AND kind = 'media'"""


async def _stats(
    fetch: Fetch, sql: str, channel: str, *, bot: str, top: int, zone: str, now: datetime
) -> ChannelStats:
    start = day_start(now, ZoneInfo(zone))
    row = (await fetch(sql, channel, start, bot.lower(), top, zone))[0]
    tracked = (await fetch(_MEDIA_SOURCE))[0][0]
    media = (await fetch(_MEDIA_TRACKED if tracked else _MEDIA_LOGGED, channel, start))[0][0]
    return ChannelStats(
        lines_today=int(row["today"]),
        lines_total=int(row["total"]),
        top=tuple((name, int(lines)) for name, lines in json.loads(row["top"])),
        busiest_hour=row["busiest"],
        media_today=int(media),
    )


async def channel_stats(
    fetch: Fetch, channel: str, *, bot: str, top: int, zone: str, now: datetime
) -> ChannelStats:
    """The figures of !stats, from the plugin's counts."""
    return await _stats(fetch, _STATS, channel, bot=bot, top=top, zone=zone, now=now)


async def plain_channel_stats(
    fetch: Fetch, channel: str, *, bot: str, top: int, zone: str, now: datetime
) -> ChannelStats:
    """The same figures read from the chat log itself (the benchmark's baseline)."""
    return await _stats(fetch, _PLAIN, channel, bot=bot, top=top, zone=zone, now=now)


def stats_reply(channel: str, stats: ChannelStats, zone: str) -> str:
    if not stats.lines_total:
        return f"no lines in {channel} yet"
    parts = [f"{channel}: {stats.lines_today} lines today ({stats.lines_total} in all)"]
    if stats.top:
        parts.append("top chatters: " + ", ".join(f"{n} {c}" for n, c in stats.top))
    if stats.busiest_hour is not None:
        hour = stats.busiest_hour
        parts.append(f"busiest hour: {hour:02d}:00-{(hour + 1) % 24:02d}:00 {zone}")
    parts.append(f"media played today: {stats.media_today}")
    return " | ".join(parts)


def setup(ctx: PluginContext[StatsParams]) -> PluginParts:
    """!stats."""
    params = ctx.params

    async def stats(command: CommandContext) -> str:
        figures = await channel_stats(
            ctx.db().query, command.channel, bot=ctx.bot_name(command.channel),
            top=params.top, zone=params.timezone, now=datetime.now(UTC),
        )  # fmt: skip
        return stats_reply(command.channel, figures, params.timezone)

    return PluginParts(
        commands=[
            PluginCommand(
                name="stats",
                fn=stats,
                help="this channel's chat and media figures",
                cooldown=params.cooldown,
            )
        ],
    )


plugin: Plugin[StatsParams] = Plugin(
    name=NAME,
    description="!stats: lines today, top chatters, busiest hour, media played",
    version="0.1.0",
    params=StatsParams,
    migrations=files(__name__).joinpath("migrations"),
    setup=setup,
)
