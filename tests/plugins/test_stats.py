"""The stats plugin: its counts against the chat log itself (a property over random logs,
PostgreSQL real), the lines logged before its migration, its rollback, and !stats in the
real tree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio
from builtin_harness import ask, bot_joined, database, make_config, run
from cytube_peer import fixtures
from hypothesis import HealthCheck, given, settings
from strategies import chat_batches

from daz_actors.app.runner import RunningSystem
from daz_actors.plugins.migrations import migrate_plugins, rollback_plugin
from daz_actors.plugins.stats import plugin
from daz_actors.plugins.stats.runtime import (
    ChannelStats,
    channel_stats,
    day_start,
    plain_channel_stats,
    stats_reply,
)
from daz_actors.runtime.errors import ConfigError

cytube_peer = fixtures.cytube_peer
cytube_peer_factory = fixtures.cytube_peer_factory

START = datetime(2026, 3, 1, tzinfo=UTC)
NOW = START + timedelta(days=2, hours=13)
INSERT = (
    "INSERT INTO daz_chat_messages (event_id, channel, username, message, sent_at)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])"
    " ON CONFLICT (event_id) DO NOTHING"
)


async def _insert(conn: Any, batch: list[tuple[int, str, str, int, str]]) -> None:
    """One INSERT statement of the rows of `batch` (as the core's writes and its spool)."""
    columns = list(zip(*batch, strict=True))
    await conn.execute(
        INSERT,
        [f"e{i}" for i in columns[0]],
        list(columns[1]),
        list(columns[2]),
        list(columns[4]),
        [START + timedelta(minutes=m) for m in columns[3]],
    )


async def _both(conn: Any, channel: str, zone: str = "UTC") -> tuple[ChannelStats, ChannelStats]:
    args: dict[str, Any] = {"bot": "Bot", "top": 3, "zone": zone, "now": NOW}
    return (
        await channel_stats(conn.fetch, channel, **args),
        await plain_channel_stats(conn.fetch, channel, **args),
    )


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=chat_batches())
def test_the_counts_match_the_chat_log(pg, batches):
    """Whatever lines arrive, in statements of any size, some logged twice: !stats's
    figures from the counts equal the same figures read from the chat log."""

    async def check(conn: Any) -> list[tuple[ChannelStats, ChannelStats]]:
        await conn.execute("TRUNCATE daz_chat_messages, daz_stats_hours, daz_stats_users")
        for batch in batches:
            await _insert(conn, batch)
        return [await _both(conn, c, z) for c in ("lobby", "den") for z in ("UTC", "Asia/Tokyo")]

    async def migrated(conn: Any) -> None:
        await migrate_plugins(conn, [plugin])

    pg.run(migrated)
    for rolled, plain in pg.run(check):
        assert rolled == plain


def test_lines_logged_before_the_migration_are_counted_and_rollback_removes_it(pg):
    """The migration fills the counts from the lines already logged; lines logged after it
    add to them; rolling it back removes the tables and the trigger."""
    today = 2 * 24 * 60 + 600  # minutes from START: 10:00 on NOW's day
    lines = [
        (1, "lobby", "ann", 0, "hi"),
        (2, "lobby", "Ann", 1, "again"),
        (3, "lobby", "cat", today, "this morning"),
        (4, "lobby", "bob", 62, "yo"),
        (5, "lobby", "bot", 63, "I am the bot"),
    ]

    async def check(conn: Any) -> dict[str, Any]:
        await _insert(conn, lines[:3])
        await migrate_plugins(conn, [plugin])
        await _insert(conn, lines[3:])
        await _insert(conn, lines[3:])  # logged twice: counted once
        out: dict[str, Any] = {"stats": (await _both(conn, "lobby"))[0]}
        await rollback_plugin(conn, plugin, 0)
        out["left"] = await conn.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'daz_stats_count_lines'"
        )
        out["table"] = await conn.fetchval("SELECT to_regclass('daz_stats_hours')")
        await _insert(conn, [(6, "lobby", "cat", 64, "still logged")])
        return out

    out = pg.run(check)
    assert out["stats"] == ChannelStats(
        lines_today=1,
        lines_total=5,
        top=(("Ann", 2), ("bob", 1), ("cat", 1)),
        busiest_hour=0,  # hour 0 had 2 lines, logged before the migration
        media_today=0,
    )
    assert (out["left"], out["table"]) == (0, None)


def test_day_start_and_the_reply() -> None:
    """Today starts at local midnight (as a UTC hour); the reply reads as documented."""
    tokyo = ZoneInfo("Asia/Tokyo")
    assert day_start(NOW, tokyo) == datetime(2026, 3, 2, 15, tzinfo=UTC)  # 22:00 there
    assert day_start(NOW, ZoneInfo("UTC")) == datetime(2026, 3, 3, tzinfo=UTC)
    stats = ChannelStats(
        lines_today=5, lines_total=9, top=(("ann", 4), ("bob", 3)), busiest_hour=23,
        media_today=2,
    )  # fmt: skip
    assert stats_reply("lobby", stats, "UTC") == (
        "lobby: 5 lines today (9 in all) | top chatters: ann 4, bob 3"
        " | busiest hour: 23:00-00:00 UTC | media played today: 2"
    )
    empty = ChannelStats(lines_today=0, lines_total=0, top=(), busiest_hour=None, media_today=0)
    assert stats_reply("lobby", empty, "UTC") == "no lines in lobby yet"


def test_an_unknown_time_zone_is_a_config_error() -> None:
    """[plugins.stats] timezone must name a zone."""
    with pytest.raises(ConfigError, match=r"plugins\.stats: unknown time zone 'Mars/Olympus'"):
        make_config("postgresql://x@/y", "http://x:1", '[plugins.stats]\ntimezone = "Mars/Olympus"')


def test_stats_in_the_real_tree(cytube_peer, pg, tmp_path, monkeypatch):
    """!stats counts the lines said (the bot's own among them), names the top chatters
    without the bot, the busiest hour, and the media played today."""
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAZ_CYTUBE_PASSWORD", "secret")
    cytube_peer.add_account("bot", "secret")
    config, kinds = make_config(
        pg.dsn, cytube_peer.url, "[plugins.stats]\nenabled = true\ncooldown = 0\n"
    )
    seen: dict[str, Any] = {}

    async def check(system: RunningSystem) -> None:
        async with database(pg.dsn) as db:
            await bot_joined(cytube_peer)
            seen["hours"] = {datetime.now(UTC).hour}
            for user, line in (("ann", "one"), ("ann", "two"), ("cat", "three"), ("ann", "4")):
                await trio.to_thread.run_sync(cytube_peer.say, "lobby", user, line)
            await db.until("SELECT sum(lines) = 4 FROM daz_stats_users WHERE channel = 'lobby'")
            await db.until("SELECT count(*) FROM daz_channel_events WHERE kind = 'media'")
            seen["first"] = await ask(cytube_peer, "cat", "!stats", lambda r: "lines" in r)
            # the router writes the chat log behind its replies: wait for cat's line and
            # the bot's answer before asking again
            await db.until("SELECT sum(lines) = 6 FROM daz_stats_users WHERE channel = 'lobby'")
            seen["second"] = await ask(cytube_peer, "cat", "!stats", lambda r: "lines" in r)
            seen["hours"].add(datetime.now(UTC).hour)  # the hour may turn meanwhile

    run(config, kinds, check)

    def reply(lines: int, top: str) -> set[str]:
        return {
            f"lobby: {lines} lines today ({lines} in all) | top chatters: {top}"
            f" | busiest hour: {h:02d}:00-{(h + 1) % 24:02d}:00 UTC | media played today: 1"
            for h in seen["hours"]
        }

    # the asking line is counted if it was written before the answer, else not
    assert seen["first"] in reply(4, "ann 3, cat 1") | reply(5, "ann 3, cat 2"), seen["first"]
    # the bot's first answer is a line too (not a chatter), and cat asked again
    assert seen["second"] in reply(6, "ann 3, cat 2") | reply(7, "ann 3, cat 3"), seen["second"]
