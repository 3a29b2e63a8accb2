"""The five built-in plugins end to end: `daz-actors run` as a real process, the local
CyTube server, a PostgreSQL of the test's own; the process SIGKILLed and started again,
and the database stopped and started under it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import trio
from builtin_harness import Db, bot_lines, database, said
from cytube_peer import fixtures

from daz_actors.testing import poll

cytube_peer = fixtures.cytube_peer
cytube_peer_factory = fixtures.cytube_peer_factory

CONFIG = """
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
[actors.sql-gateway.params]
breaker_open_seconds = 0.5
reconnect_initial = 0.1
reconnect_max = 0.5
call_timeout = 3.0
[actors.retry]
kind = "retry"
[actors.retry.params]
poll_interval = 0.3
lock_timeout = 5.0
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

[plugins.tell]
enabled = false
[plugins.remind]
enabled = false
[plugins.usertracker]
enabled = true
cooldown = 0
write_timeout = 2.0
[plugins.mediatracker]
enabled = true
cooldown = 0
write_timeout = 2.0
[plugins.greeter]
enabled = true
greetings = ["welcome, {{name}}!"]
write_timeout = 2.0
[plugins.quote]
enabled = true
cooldown = 0
[plugins.stats]
enabled = true
cooldown = 0

[retry_policies.usertracker_write]
initial = 0.2
max_delay = 1.0
max_retries = 50
attempt_timeout = 4.5
[retry_policies.mediatracker_write]
attempt_timeout = 4.5
[retry_policies.greeter_write]
attempt_timeout = 4.5
[retry_policies.sql_operation]
initial = 0.2
max_delay = 1.0
max_retries = 50
attempt_timeout = 4.5
[retry_policies.cytube_command]
attempt_timeout = 4.5
[retry_policies.plugin_request]
attempt_timeout = 4.5
[retry_policies.default]
attempt_timeout = 4.5
"""


async def _start(config: Any, env: dict[str, str], log_file: Any) -> trio.Process:
    with log_file.open("ab") as log:
        return await trio.lowlevel.open_process(
            [sys.executable, "-m", "daz_actors.app.cli", "run", str(config)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def _ask(peer: Any, user: str, text: str, pred: Any) -> str:
    skip = len(await trio.to_thread.run_sync(bot_lines, peer))
    await trio.to_thread.run_sync(peer.say, "lobby", user, text)
    return await said(peer, pred, skip=skip, timeout=60)


async def _joined(peer: Any, present: bool = True) -> None:
    await peer.wait_state(
        lambda s: ("bot" in s["channels"].get("lobby", {}).get("users", [])) == present, 60
    )


async def _value(url: str, sql: str, *args: Any) -> Any:
    async with database(url) as db:
        return await db.value(sql, *args)


async def _until(url: str, sql: str, timeout: float = 60) -> Any:
    """`sql`'s value once it is truthy; the database may be away meanwhile."""

    async def check() -> Any:
        try:
            return await _value(url, sql)
        except Exception:  # down or starting: try again
            return None

    return await poll(check, timeout=timeout, interval=0.2)


async def test_the_builtin_plugins_survive_a_kill_and_a_database_outage(
    cytube_peer, own_server, tmp_path
):
    """Each plugin answers from what it stored; after a SIGKILL and a restart the user who
    stayed keeps their one session, the media playing is one play, nobody is greeted twice;
    joins and lines heard while PostgreSQL is down are written once it is back, through
    queue items carrying the plugin's name; a SIGTERM ends the process cleanly."""
    cytube_peer.add_account("bot", "secret")
    config = tmp_path / "bot.toml"
    config.write_text(CONFIG.format(server=cytube_peer.url))
    log_file = tmp_path / "bot.log"
    env = {
        **os.environ,
        "DAZ_DATABASE_URL": own_server.url,
        "DAZ_DATA_DIR": str(tmp_path / "data"),
        "DAZ_CYTUBE_PASSWORD": "secret",
    }
    url = own_server.url
    queue_item = {"media": {"id": "a1", "title": "Song A", "seconds": 600, "type": "yt"},
                  "uid": 1, "queueby": "ann"}  # fmt: skip
    process = await _start(config, env, log_file)
    try:
        # ---- first life
        await _joined(cytube_peer)
        await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "ann", 1)
        await said(cytube_peer, lambda r: r == "welcome, ann!", timeout=60)
        await trio.to_thread.run_sync(cytube_peer.say, "lobby", "ann", "the kettle is on")
        await trio.to_thread.run_sync(
            cytube_peer.emit, "lobby", "queue", {"item": queue_item, "after": 0}
        )
        await trio.to_thread.run_sync(
            lambda: cytube_peer.set_media("lobby", title="Song A", id="a1", seconds=600)
        )
        await _until(url, "SELECT count(*) FROM daz_mediatracker_plays WHERE media_id = 'a1'")
        await _until(url, "SELECT last_line FROM daz_usertracker_users WHERE lname = 'ann'")
        seen = await _ask(cytube_peer, "cat", "!seen ann", lambda r: r.startswith("ann is"))
        assert seen.startswith('ann is here now, last said "the kettle is on"')
        np = await _ask(cytube_peer, "ann", "!np", lambda r: r.startswith("now playing"))
        assert np.startswith("now playing: Song A (yt:a1, 10:00, queued by ann), started ")
        quote = await _ask(cytube_peer, "cat", "!quote ann", lambda r: r.startswith("ann:"))
        assert quote.startswith('ann: "the kettle is on" (')
        stats = await _ask(cytube_peer, "cat", "!stats", lambda r: r.startswith("lobby:"))
        # cat asked three times; the asking line may not be written yet (the router writes
        # the chat log behind its replies)
        assert ("top chatters: cat 3, ann 2 |" in stats) or (
            "top chatters: ann 2, cat 2 |" in stats
        )
        assert stats.endswith("media played today: 2")  # the peer's default media, then A
        first_session = await _value(
            url, "SELECT id FROM daz_usertracker_sessions WHERE lname = 'ann' AND left_at IS NULL"
        )

        # ---- killed; the chat goes on without the bot; started again
        process.send_signal(signal.SIGKILL)
        await process.wait()
        await _joined(cytube_peer, present=False)
        process = await _start(config, env, log_file)
        await _joined(cytube_peer)
        # the bot speaks again (its room is up) before anyone new comes
        await _ask(cytube_peer, "cat", "!seen ann", lambda r: r.startswith("ann is here now"))
        await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "bob", 1)
        await said(cytube_peer, lambda r: r == "welcome, bob!", timeout=60)
        await _until(url, "SELECT count(*) FROM daz_usertracker_sessions WHERE lname = 'bob'")
        async with database(url) as db:
            assert await _sessions(db, "ann") == [(first_session, True)]
            assert await db.value("SELECT count(*) FROM daz_mediatracker_plays") == 2
            assert (
                await db.value("SELECT plays FROM daz_mediatracker_media WHERE media_id = 'a1'")
                == 1
            )
        greetings = [r for r in await trio.to_thread.run_sync(bot_lines, cytube_peer)
                     if r.startswith("welcome")]  # fmt: skip
        assert greetings == ["welcome, ann!", "welcome, bob!"]

        # ---- PostgreSQL away: what is heard meanwhile is queued with the plugin's name
        await trio.to_thread.run_sync(own_server.handle.stop)
        await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "cat", 1)
        await trio.to_thread.run_sync(cytube_peer.say, "lobby", "cat", "is the database up?")
        await trio.to_thread.run_sync(cytube_peer.remove_user, "lobby", "bob")
        await trio.to_thread.run_sync(
            lambda: cytube_peer.set_media("lobby", title="Song B", id="b2", seconds=300)
        )
        # greeted by what the greeter remembers, its cooldown queued
        await said(cytube_peer, lambda r: r == "welcome, cat!", timeout=60)
        await trio.to_thread.run_sync(own_server.handle.start)
        await _until(
            url,
            "SELECT last_line = 'is the database up?' FROM daz_usertracker_users"
            " WHERE lname = 'cat'",
            timeout=120,
        )
        await _until(
            url, "SELECT NOT present FROM daz_usertracker_users WHERE lname = 'bob'", timeout=120
        )
        await _until(url, "SELECT count(*) FROM daz_mediatracker_plays WHERE media_id = 'b2'")
        await _until(url, "SELECT count(*) FROM daz_greeter_users WHERE lname = 'cat'")
        async with database(url) as db:
            items = await db.fetch(
                "SELECT plugin_name, event_type, status FROM daz_retry_queue"
                " WHERE plugin_name IN ('usertracker', 'mediatracker', 'greeter') ORDER BY id"
            )
            assert await _sessions(db, "ann") == [(first_session, True)]
            assert [open_ for _, open_ in await _sessions(db, "bob")] == [False]
            assert [open_ for _, open_ in await _sessions(db, "cat")] == [True]
        types = {(r["plugin_name"], r["event_type"]) for r in items}
        assert {("usertracker", "usertracker.join"), ("usertracker", "usertracker.line"),
                ("usertracker", "usertracker.leave"), ("mediatracker", "mediatracker.play"),
                ("greeter", "greeter.greeted")} <= types, items  # fmt: skip
    except BaseException:
        state = await trio.to_thread.run_sync(cytube_peer.state)
        print("chat:", [(c.get("username"), c["msg"]) for c in state["chat_received"]][-20:])
        print("bot log:", log_file.read_text()[-4000:])  # shown by pytest on failure
        raise
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(60):
                await process.wait()
            if process.returncode is None:
                process.kill()
        code = await process.wait()
    output = log_file.read_text()
    assert code == 0, output[-3000:]
    assert "secret" not in output


async def _sessions(db: Db, lname: str) -> list[tuple[int, bool]]:
    rows = await db.fetch(
        "SELECT id, left_at IS NULL FROM daz_usertracker_sessions WHERE lname = $1 ORDER BY id",
        lname,
    )
    return [(r[0], r[1]) for r in rows]
