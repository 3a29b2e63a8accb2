"""The runtime of the ``stats`` plugin (imported by its `setup`); see the package's
docstring for what it does."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import attrs

from daz_actors.cytube.commands import CommandContext
from daz_actors.plugins.api import PluginContext
from daz_actors.plugins.declaration import PluginCommand, PluginParts
from daz_actors.plugins.stats import StatsParams

__all__ = ["ChannelStats", "channel_stats", "day_start", "plain_channel_stats", "stats_reply"]


Fetch = Callable[..., Awaitable[list[Any]]]  # (sql, *args) -> rows: SqlClient.query, conn.fetch


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
