"""tell, remind and !help in the real tree (in process): the local CyTube server, PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
import trio
import trio_asyncio
from cytube_peer import fixtures

from daz_actors import default_kinds
from daz_actors.app.config import parse_config
from daz_actors.app.runner import RunningSystem, run_config
from daz_actors.plugins.migrations import migrate_plugins
from daz_actors.plugins.tell import plugin as tell_plugin
from daz_actors.testing import poll

cytube_peer = fixtures.cytube_peer
cytube_peer_factory = fixtures.cytube_peer_factory

CONFIG = """
[database]
url = "{dsn}"
[http]
port = 0
[tree]
root = "daz"
[supervisors.daz]
children = ["storage", "plugins", "rooms"]
[supervisors.storage]
strategy = "rest_for_one"
children = ["sql-gateway", "retry"]
[actors.sql-gateway]
kind = "sql-gateway"
[actors.retry]
kind = "retry"
[actors.retry.params]
poll_interval = 0.3
[actors.plugins]
kind = "plugins"
[actors.rooms]
kind = "rooms"
[actors.rooms.params]
server = "{server}"
channels = ["lobby"]
name = "bot"
reconnect_initial = 0.2
reconnect_max = 1.0
command_cooldown = 0
[plugins.hello]
enabled = false
[plugins.tell]
cooldown = 0
{tell}
[plugins.remind]
cooldown = 0
late_after = 5
max_duration = "1h"
"""


def bot_lines(peer: Any) -> list[str]:
    return [c["msg"] for c in peer.state()["chat_received"] if c.get("username") == "bot"]


def bot_pms(peer: Any) -> list[tuple[str, str]]:
    return [(p["to"], p["msg"]) for p in peer.state()["pm_received"] if p.get("username") == "bot"]


def run_with(
    cytube_peer: Any, pg: Any, tmp_path: Any, monkeypatch: Any, check: Any, tell: str = ""
) -> None:
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAZ_CYTUBE_PASSWORD", "secret")
    cytube_peer.add_account("bot", "secret")
    kinds = default_kinds()
    config = parse_config(CONFIG.format(dsn=pg.dsn, server=cytube_peer.url, tell=tell), kinds)

    async def alongside(system: RunningSystem) -> None:
        async with trio_asyncio.open_loop():
            conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(pg.dsn)
            try:
                await cytube_peer.wait_state(
                    lambda s: "bot" in s["channels"].get("lobby", {}).get("users", []), 30
                )
                await check(trio_asyncio.aio_as_trio(conn.fetchval))
            finally:
                await trio_asyncio.aio_as_trio(conn.close)()

    assert run_config(config, kinds, handle_signals=False, alongside=alongside) == 0


async def said(peer: Any, pred: Callable[[str], bool], *, count: int = 1) -> list[str]:
    async def check() -> list[str] | None:
        lines = [line for line in await trio.to_thread.run_sync(bot_lines, peer) if pred(line)]
        return lines if len(lines) >= count else None

    found: list[str] = await poll(check, timeout=30, interval=0.1)
    return found


async def say(peer: Any, user: str, text: str) -> None:
    await trio.to_thread.run_sync(peer.say, "lobby", user, text)


def test_tell_is_said_once_when_the_user_next_joins_or_speaks(
    cytube_peer, pg, tmp_path, monkeypatch
):
    """A message waits for its user: said once at their join (one per sender and target),
    never again; another user's is said when they speak."""

    async def check(fetchval: Any) -> None:
        await say(cytube_peer, "ann", "!tell bob hi there & welcome")
        await said(cytube_peer, lambda line: line.startswith("ok ann, I will tell bob"))
        await say(cytube_peer, "ann", "!tell bob another one")
        await said(cytube_peer, lambda line: "already have a message waiting for bob" in line)
        await say(cytube_peer, "ann", "!tell cat see you")
        await said(cytube_peer, lambda line: line.startswith("ok ann, I will tell cat"))
        await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "bob")
        await said(
            cytube_peer, lambda line: line == "bob, ann asked me to tell you: hi there & welcome"
        )
        await say(cytube_peer, "cat", "hello all")  # cat was here all along: speaking counts
        await said(cytube_peer, lambda line: line == "cat, ann asked me to tell you: see you")

        async def delivered() -> bool:
            return (
                await fetchval("SELECT count(*) FROM daz_tells WHERE delivered_at IS NOT NULL") == 2
            )

        await poll(delivered, timeout=30, interval=0.1)
        await say(cytube_peer, "bob", "I am back")
        await say(cytube_peer, "ann", "!tell bob a second message")  # a new one may wait now
        await said(cytube_peer, lambda line: line.startswith("ok ann, I will tell bob"), count=2)
        await say(cytube_peer, "bob", "and again")
        await said(
            cytube_peer, lambda line: line == "bob, ann asked me to tell you: a second message"
        )
        lines = await trio.to_thread.run_sync(bot_lines, cytube_peer)
        assert lines.count("bob, ann asked me to tell you: hi there & welcome") == 1
        assert lines.count("cat, ann asked me to tell you: see you") == 1
        items = await fetchval(
            "SELECT count(*) FROM daz_retry_queue WHERE plugin_name = 'tell'"
            " AND event_type = 'tell.deliver' AND status = 'completed'"
        )
        assert items >= 3

    run_with(cytube_peer, pg, tmp_path, monkeypatch, check)


def test_tell_by_pm_and_its_refusals(cytube_peer, pg, tmp_path, monkeypatch):
    """delivery = "pm" says it privately; bad names, oneself, the bot and long messages
    are refused with a reason."""

    async def check(fetchval: Any) -> None:
        for text in ("!tell", "!tell bob", "!tell b@d hi", "!tell ann me", "!tell bot hi",
                     "!tell bob " + "x" * 201):  # fmt: skip
            await say(cytube_peer, "ann", text)
        await said(cytube_peer, lambda line: line.startswith("usage: !tell"), count=2)
        await said(cytube_peer, lambda line: "is not a user name" in line)
        await said(cytube_peer, lambda line: "you can tell yourself that" in line)
        await said(cytube_peer, lambda line: "I am listening already" in line)
        await said(cytube_peer, lambda line: "too long (201 characters, at most 200)" in line)
        await say(cytube_peer, "ann", "!tell bob psst")
        await said(cytube_peer, lambda line: line.startswith("ok ann, I will tell bob"))
        await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "bob")

        async def pmed() -> bool:
            pms = await trio.to_thread.run_sync(bot_pms, cytube_peer)
            return ("bob", "bob, ann asked me to tell you: psst") in pms

        await poll(pmed, timeout=30, interval=0.1)
        assert await fetchval("SELECT count(*) FROM daz_tells") == 1

    run_with(cytube_peer, pg, tmp_path, monkeypatch, check, tell='delivery = "pm"')


def test_remind_fires_when_due_and_help_lists_every_plugin_command(
    cytube_peer, pg, tmp_path, monkeypatch
):
    """!remind 1s fires through the queue (an item not handed out before it is due); bad
    durations are refused; !help lists the plugins' commands a user may run."""

    async def check(fetchval: Any) -> None:
        await say(cytube_peer, "ann", "!remind 1s stretch")
        await said(cytube_peer, lambda line: line == "ok ann, I will remind you in 1s")
        await said(cytube_peer, lambda line: line == "ann: reminder: stretch")
        await say(cytube_peer, "ann", "!remind 2s")
        await said(
            cytube_peer, lambda line: line == "ann: this is the reminder you asked for 2s ago"
        )
        for text in ("!remind", "!remind soon", "!remind 2h", "!remind 0s"):
            await say(cytube_peer, "ann", text)
        await said(cytube_peer, lambda line: line.startswith("usage: !remind"))
        await said(cytube_peer, lambda line: "is not a duration" in line)
        await said(cytube_peer, lambda line: "at most 1h 0m 0s ahead" in line)
        await said(cytube_peer, lambda line: "at least 1s" in line)
        item = await fetchval(
            "SELECT plugin_name || ' ' || event_type || ' ' || status FROM daz_retry_queue"
            " WHERE event_type = 'remind.fire' ORDER BY id LIMIT 1"
        )
        assert item == "remind remind.fire completed"
        await say(cytube_peer, "ann", "!help")
        helps = await said(cytube_peer, lambda line: line.startswith("Commands: "))
        assert "!tell: leave a message" in helps[0]
        assert "!remind: a reminder" in helps[0]
        assert "!debug" not in helps[0]  # ann's rank is 0

    run_with(cytube_peer, pg, tmp_path, monkeypatch, check)


@pytest.mark.parametrize("delivery", ["channel", "pm"])
def test_a_tell_whose_echo_is_logged_is_marked_not_said_again(
    delivery, cytube_peer, pg, tmp_path, monkeypatch
):
    """An earlier attempt that got as far as the server's echo (the process died before it
    marked the row) is found in the chat log at the next start (chat lines, or private
    messages with delivery = "pm"): the row is marked, the line not said again; one whose
    attempt left no echo is said, once."""
    said_text = "bob, ann asked me to tell you: already said"
    unsaid_text = "cat, ann asked me to tell you: never shown"
    pm = delivery == "pm"

    async def before(conn: Any) -> None:  # what a process killed mid-delivery left
        await migrate_plugins(conn, [tell_plugin])
        await conn.execute(
            "INSERT INTO daz_tells (channel, sender, target, message, said_text, said_to,"
            " attempt_at) VALUES"
            " ('lobby', 'ann', 'bob', 'already said', $1, $3, now() - interval '1 minute'),"
            " ('lobby', 'ann', 'cat', 'never shown', $2, $4, now() - interval '1 minute')",
            said_text,
            unsaid_text,
            "bob" if pm else None,
            "cat" if pm else None,
        )
        if pm:
            await conn.execute(
                "INSERT INTO daz_private_messages (event_id, channel, from_user, to_user,"
                " message, raw_message, sent_at, received_at) VALUES ('echo-1', 'lobby',"
                " 'bot', 'bob', $1, $1, now() - interval '50 seconds',"
                " now() - interval '50 seconds')",
                said_text,
            )
        else:
            await conn.execute(
                "INSERT INTO daz_chat_messages (event_id, channel, username, message,"
                " raw_message, sent_at, received_at) VALUES ('echo-1', 'lobby', 'bot', $1, $1,"
                " now() - interval '50 seconds', now() - interval '50 seconds')",
                said_text,
            )

    pg.run(before)

    def said_by_bot() -> list[str]:
        if pm:
            return [msg for _to, msg in bot_pms(cytube_peer)]
        return bot_lines(cytube_peer)

    async def check(fetchval: Any) -> None:
        if pm:  # a PM goes to a user who is there
            for user in ("bob", "cat"):
                await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", user)
        await say(cytube_peer, "bob", "hi")  # bob and cat speak: their messages are due
        await say(cytube_peer, "cat", "hi")

        async def unsaid_said() -> bool:
            return unsaid_text in await trio.to_thread.run_sync(said_by_bot)

        await poll(unsaid_said, timeout=30, interval=0.1)

        async def both_delivered() -> bool:
            return (
                await fetchval("SELECT count(*) FROM daz_tells WHERE delivered_at IS NOT NULL") == 2
            )

        await poll(both_delivered, timeout=30, interval=0.1)
        await say(cytube_peer, "ann", "!about")  # said after anything the bot would have said
        await said(cytube_peer, lambda line: line.startswith("daz-actors "))
        lines = await trio.to_thread.run_sync(said_by_bot)
        assert said_text not in lines
        assert lines.count(unsaid_text) == 1

    run_with(cytube_peer, pg, tmp_path, monkeypatch, check, tell=f'delivery = "{delivery}"')


def test_a_message_the_watcher_did_not_hear_of_is_found_by_its_refresh(
    cytube_peer, pg, tmp_path, monkeypatch
):
    """A message stored without the watcher being told (another process, a full mailbox)
    is found at the watcher's next read of the table and said when its user speaks."""
    text = "dan, eve asked me to tell you: from elsewhere"

    async def check(fetchval: Any) -> None:
        await fetchval(
            "INSERT INTO daz_tells (channel, sender, target, message)"
            " VALUES ('lobby', 'eve', 'dan', 'from elsewhere') RETURNING id"
        )

        async def told() -> bool:  # dan keeps talking until the watcher knows
            await say(cytube_peer, "dan", "anyone?")
            return text in await trio.to_thread.run_sync(bot_lines, cytube_peer)

        await poll(told, timeout=30, interval=0.3)
        await say(cytube_peer, "ann", "!about")
        await said(cytube_peer, lambda line: line.startswith("daz-actors "))
        assert (await trio.to_thread.run_sync(bot_lines, cytube_peer)).count(text) == 1

    run_with(cytube_peer, pg, tmp_path, monkeypatch, check, tell="refresh_seconds = 0.5")
