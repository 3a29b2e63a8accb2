"""The usertracker plugin in the real tree: sessions, !seen, a restart that is not a leave
and join, and writes that a database outage sends to the retry queue."""

from __future__ import annotations

import time
from typing import Any

import trio
from builtin_harness import ask, bot_joined, database, make_config, run
from cytube_peer import fixtures

from daz_actors.app.runner import RunningSystem
from daz_actors.cytube.channel_events import ChannelEventKind, channel_topic
from daz_actors.cytube.events import ChatMessage, User, UserJoined
from daz_actors.plugins.usertracker.runtime import GetTrackerStats
from daz_actors.runtime.bus import Published

cytube_peer = fixtures.cytube_peer
cytube_peer_factory = fixtures.cytube_peer_factory

PLUGINS = """
[plugins.usertracker]
enabled = true
write_timeout = 2.0
cooldown = 0
"""


def _setup(cytube_peer: Any, tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAZ_CYTUBE_PASSWORD", "secret")
    cytube_peer.add_account("bot", "secret")


def test_seen_says_who_is_here_and_who_was(cytube_peer, pg, tmp_path, monkeypatch):
    """A join opens a session, a line is remembered, a leave closes the session; !seen
    answers for a user here, a user gone and a user never seen."""
    _setup(cytube_peer, tmp_path, monkeypatch)
    config, kinds = make_config(pg.dsn, cytube_peer.url, PLUGINS)
    seen: dict[str, Any] = {}

    async def check(system: RunningSystem) -> None:
        async with database(pg.dsn) as db:
            await bot_joined(cytube_peer)
            await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "ann", 1)
            await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "cat", 1)
            await db.until(
                "SELECT count(*) FROM daz_usertracker_sessions WHERE lname = 'ann'"
                " AND left_at IS NULL AND join_seen"
            )
            await trio.to_thread.run_sync(cytube_peer.say, "lobby", "ann", "fish & chips")
            await db.until("SELECT last_line FROM daz_usertracker_users WHERE lname = 'ann'")
            seen["here"] = await ask(cytube_peer, "cat", "!seen ANN", lambda r: "ann" in r)
            await trio.to_thread.run_sync(cytube_peer.remove_user, "lobby", "ann")
            await db.until("SELECT NOT present FROM daz_usertracker_users WHERE lname = 'ann'")
            seen["gone"] = await ask(cytube_peer, "cat", "!seen @ann", lambda r: "ann" in r)
            seen["never"] = await ask(cytube_peer, "cat", "!seen zed", lambda r: "zed" in r)
            seen["usage"] = await ask(cytube_peer, "cat", "!seen", lambda r: "usage" in r)
            seen["sessions"] = [
                tuple(r)
                for r in await db.fetch(
                    "SELECT username, left_at IS NOT NULL, join_seen, leave_seen"
                    " FROM daz_usertracker_sessions WHERE lname IN ('ann', 'cat') ORDER BY id"
                )
            ]

    run(config, kinds, check)
    assert seen["here"].startswith('ann is here now, last said "fish & chips" ')
    assert seen["gone"].startswith("ann was last here ")
    assert 'last said "fish & chips"' in seen["gone"]
    assert seen["never"] == "I have not seen zed here"
    assert seen["usage"] == "usage: !seen <name>"
    assert seen["sessions"] == [("ann", True, True, True), ("cat", False, True, None)]


def test_a_restart_is_a_snapshot_not_leaves_and_joins(cytube_peer, pg, tmp_path, monkeypatch):
    """The bot stops and starts again: a user here throughout keeps the one open session
    they had; one who came meanwhile gets a session marked as seen in a userlist; one who
    left meanwhile has theirs closed, marked as not seen leaving."""
    _setup(cytube_peer, tmp_path, monkeypatch)
    config, kinds = make_config(pg.dsn, cytube_peer.url, PLUGINS)
    seen: dict[str, Any] = {}
    query = (
        "SELECT id, lname, joined_at, left_at IS NULL AS open, join_seen, leave_seen"
        " FROM daz_usertracker_sessions WHERE lname <> 'bot' ORDER BY id"
    )

    async def first(system: RunningSystem) -> None:
        async with database(pg.dsn) as db:
            await bot_joined(cytube_peer)
            await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "ann", 1)
            await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "cat", 1)
            await db.until(
                "SELECT count(*) = 2 FROM daz_usertracker_sessions WHERE left_at IS NULL"
                " AND lname IN ('ann', 'cat')"
            )
            seen["before"] = [dict(r) for r in await db.fetch(query)]

    run(config, kinds, first)
    # while the bot is away: cat leaves, dan comes
    assert "bot" not in cytube_peer.state()["channels"]["lobby"]["users"]
    cytube_peer.remove_user("lobby", "cat")
    cytube_peer.add_user("lobby", "dan", 1)

    async def second(system: RunningSystem) -> None:
        async with database(pg.dsn) as db:
            await bot_joined(cytube_peer)
            await db.until("SELECT count(*) FROM daz_usertracker_sessions WHERE lname = 'dan'")
            seen["after"] = [dict(r) for r in await db.fetch(query)]
            seen["ann"] = await ask(cytube_peer, "dan", "!seen ann", lambda r: "ann" in r)
            seen["cat"] = await ask(cytube_peer, "dan", "!seen cat", lambda r: "cat" in r)

    run(config, kinds, second)
    before, after = seen["before"], seen["after"]
    assert [(r["lname"], r["open"]) for r in before] == [("ann", True), ("cat", True)]
    assert after[0] == before[0]  # ann: the very same session, still open
    assert (after[1]["lname"], after[1]["open"]) == ("cat", False)
    assert after[1]["leave_seen"] is False  # left while the bot was away
    assert (after[2]["lname"], after[2]["open"], after[2]["join_seen"]) == ("dan", True, False)
    assert len(after) == 3
    assert seen["ann"] == "ann is here now"
    assert seen["cat"].startswith("cat was last here ")


def test_writes_during_an_outage_are_queued_with_the_plugin_name(
    cytube_peer, own_server, tmp_path, monkeypatch
):
    """PostgreSQL stops: the joins, lines and leaves heard meanwhile are queued (spooled
    while the queue is away) as usertracker intents with the plugin's name, and written
    once it is back."""
    _setup(cytube_peer, tmp_path, monkeypatch)
    gateway = "call_timeout = 2.0\nbreaker_open_seconds = 1.0\nreconnect_max = 1.0"
    config, kinds = make_config(own_server.url, cytube_peer.url, PLUGINS, gateway=gateway)
    seen: dict[str, Any] = {}

    async def check(system: RunningSystem) -> None:
        await bot_joined(cytube_peer)
        await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "ann", 1)
        async with database(own_server.url) as db:
            await db.until("SELECT count(*) FROM daz_usertracker_sessions WHERE lname = 'ann'")
        await trio.to_thread.run_sync(own_server.handle.stop)
        await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "eve", 1)
        await trio.to_thread.run_sync(cytube_peer.say, "lobby", "eve", "anyone here?")
        await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "fay", 1)
        await trio.to_thread.run_sync(cytube_peer.remove_user, "lobby", "fay")
        await trio.to_thread.run_sync(own_server.handle.start)
        async with database(own_server.url) as db:
            await db.until(
                "SELECT count(*) >= 4 AND bool_and(status = 'completed') FROM daz_retry_queue"
                " WHERE plugin_name = 'usertracker'",
                timeout=90,
            )
            seen["items"] = sorted(
                r["event_type"]
                for r in await db.fetch(
                    "SELECT event_type FROM daz_retry_queue WHERE plugin_name = 'usertracker'"
                )
            )
            seen["users"] = {
                r["lname"]: (r["present"], r["last_line"])
                for r in await db.fetch(
                    "SELECT lname, present, last_line FROM daz_usertracker_users"
                    " WHERE lname IN ('eve', 'fay')"
                )
            }
            seen["sessions"] = [
                tuple(r)
                for r in await db.fetch(
                    "SELECT lname, left_at IS NULL FROM daz_usertracker_sessions"
                    " WHERE lname IN ('eve', 'fay') ORDER BY lname"
                )
            ]

    run(config, kinds, check)
    assert {"usertracker.join", "usertracker.line", "usertracker.leave"} <= set(seen["items"])
    assert seen["items"].count("usertracker.join") == 2
    assert seen["users"] == {"eve": (True, "anyone here?"), "fay": (False, None)}
    assert seen["sessions"] == [("eve", True), ("fay", False)]


def test_a_burst_of_lines_is_written_once_per_user(cytube_peer, pg, tmp_path, monkeypatch):
    """300 lines of three users waiting in the tracker's mailbox at once (a busy room)
    are three writes, each user's newest line; a join after lines is written after them."""
    _setup(cytube_peer, tmp_path, monkeypatch)
    config, kinds = make_config(pg.dsn, cytube_peer.url, PLUGINS)
    seen: dict[str, Any] = {}

    async def check(system: RunningSystem) -> None:
        async with database(pg.dsn) as db:
            await bot_joined(cytube_peer)
            tracker = system.registry.lookup("plugin:usertracker/tracker")
            before = await tracker.ask(GetTrackerStats(), timeout=10)
            start = int(time.time() * 1000)
            topic = channel_topic("lobby", ChannelEventKind.LINE)
            for i in range(300):  # no await in between: all queued before the tracker runs
                line = ChatMessage(
                    channel="lobby", username=("amy", "ben", "cal")[i % 3], msg=f"line {i}",
                    time=start + i,
                )  # fmt: skip
                assert tracker.try_send(Published(topic=topic, event=line))
            tracker.try_send(Published(
                topic=channel_topic("lobby", ChannelEventKind.JOIN),
                event=UserJoined(channel="lobby", user=User(name="amy", rank=1)),
            ))  # fmt: skip
            after = await tracker.ask(GetTrackerStats(), timeout=30)
            seen["writes"] = after.line_writes - before.line_writes
            seen["heard"] = after.lines_heard - before.lines_heard
            seen["rows"] = {
                r["lname"]: r["last_line"]
                for r in await db.fetch(
                    "SELECT lname, last_line FROM daz_usertracker_users"
                    " WHERE lname IN ('amy', 'ben', 'cal')"
                )
            }
            seen["amy"] = await db.value(
                "SELECT count(*) FROM daz_usertracker_sessions WHERE lname = 'amy'"
                " AND left_at IS NULL"
            )

    run(config, kinds, check)
    assert seen["heard"] == 300
    assert seen["writes"] == 3
    assert seen["rows"] == {"amy": "line 297", "ben": "line 298", "cal": "line 299"}
    assert seen["amy"] == 1
