"""End to end: `daz-actors run` as a real process, a real CyTube peer, a real PostgreSQL.

Chat lines land in the database, commands are answered, lines received while the database
is down are stored after it comes back (none twice), and the bot rejoins and answers after
the chat server restarts.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import trio
import trio_asyncio
from cytube_peer import fixtures

from daz_actors.testing import poll as poll_until

cytube_peer = fixtures.cytube_peer
cytube_peer_factory = fixtures.cytube_peer_factory

CONFIG = """
[http]
port = 0

[tree]
root = "daz"

[supervisors.daz]
children = ["storage", "rooms", "failure-log"]

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

[actors.rooms]
kind = "rooms"
[actors.rooms.params]
server = "{server}"
channels = ["lobby"]
name = "bot"
reconnect_initial = 0.2
reconnect_max = 1.0
command_cooldown = 0.1

[actors.failure-log]
kind = "failure-log"

# every attempt must end before the worker's lock (lock_timeout = 5) does
[retry_policies.sql_operation]
initial = 0.2
max_delay = 1.0
max_retries = 20
attempt_timeout = 4.5

[retry_policies.cytube_command]
initial = 0.2
max_delay = 1.0
attempt_timeout = 4.5

[retry_policies.plugin_request]
attempt_timeout = 4.5

[retry_policies.default]
attempt_timeout = 4.5
"""


@contextlib.asynccontextmanager
async def connect(dsn: str) -> AsyncIterator[Callable[..., Any]]:
    """A trio-side `fetchval(sql, *args)` on a new asyncpg connection."""
    async with trio_asyncio.open_loop():
        conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(dsn)

        async def fetchval(sql: str, *args: Any) -> Any:
            return await trio_asyncio.aio_as_trio(conn.fetchval)(sql, *args)

        try:
            yield fetchval
        finally:
            await trio_asyncio.aio_as_trio(conn.close)()


async def poll(check: Callable[[], Any], timeout: float = 60) -> Any:
    """Call async `check` until it returns something truthy, within `timeout` seconds."""
    return await poll_until(check, timeout=timeout, interval=0.1)


def bot_lines(peer: Any) -> list[str]:
    return [c["msg"] for c in peer.state()["chat_received"] if c.get("username") == "bot"]


async def test_the_bot_logs_answers_survives_a_database_outage_and_a_server_restart(
    cytube_peer, own_server, tmp_path
):
    """The whole bot against a CyTube-like server and PostgreSQL, with both going away."""
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
    with log_file.open("wb") as log:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "daz_actors.app.cli", "run", str(config)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        async with connect(own_server.url) as fetchval:

            async def logged(msg: str) -> int:
                try:
                    return int(
                        await fetchval(
                            "SELECT count(*) FROM daz_chat_messages WHERE message = $1", msg
                        )
                    )
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    return 0

            async def joined() -> bool:
                state = await trio.to_thread.run_sync(cytube_peer.state)
                return "bot" in state["channels"].get("lobby", {}).get("users", [])

            await poll(joined)
            await trio.to_thread.run_sync(cytube_peer.say, "lobby", "ann", "hello world")
            assert await poll(lambda: logged("hello world")) == 1

            for command in ("!uptime", "!help", "!about"):
                await trio.to_thread.run_sync(cytube_peer.say, "lobby", "ann", command)

            async def answered() -> list[str]:
                lines = await trio.to_thread.run_sync(bot_lines, cytube_peer)
                return lines if len(lines) >= 3 else []

            replies = await poll(answered)
            assert any(re.fullmatch(r"up \d+[smhd].*", r) for r in replies), replies
            assert any(
                r.startswith("Commands: ")
                and "!help: list the commands you can use" in r
                and "!about: " in r
                and "!uptime: " in r
                for r in replies
            ), replies
            assert any(r.startswith("daz-actors 0.") for r in replies), replies

            # --- the database goes away; chat goes on
            await trio.to_thread.run_sync(own_server.handle.stop)
            during = [f"said during the outage {n}" for n in range(5)]
            for line in during:
                await trio.to_thread.run_sync(cytube_peer.say, "lobby", "bea", line)
            await trio.to_thread.run_sync(own_server.handle.start)

        async with connect(own_server.url) as fetchval:

            async def all_logged() -> bool:
                counts = [
                    await fetchval(
                        "SELECT count(*) FROM daz_chat_messages WHERE message = $1", line
                    )
                    for line in during
                ]
                return counts == [1] * len(during)

            assert await poll(all_logged, timeout=90)

            # --- the chat server restarts; the bot rejoins and answers again
            await trio.to_thread.run_sync(cytube_peer.restart)
            await trio.to_thread.run_sync(cytube_peer.add_account, "bot", "secret")
            await poll(joined)
            await trio.to_thread.run_sync(cytube_peer.say, "lobby", "ann", "!about")

            async def answered_again() -> list[str]:
                return await trio.to_thread.run_sync(bot_lines, cytube_peer)

            async def abouts() -> bool:  # the restarted server's record starts empty
                lines = await trio.to_thread.run_sync(bot_lines, cytube_peer)
                return any(r.startswith("daz-actors ") for r in lines)

            assert await poll(abouts)
            # every line said once is one row (the history replayed on rejoin adds none);
            # "!about" was said twice, so it is two rows
            said = {"hello world": 1, "!uptime": 1, "!help": 1, "!about": 2}
            said |= dict.fromkeys(during, 1)
            rows: dict[str, int] = {}

            async def stored_as_said() -> bool:
                # the row of a line is written beside its command's run (the router's log
                # writer), so the reply can come before the line's row: wait for it
                rows.update(
                    {
                        message: await fetchval(
                            "SELECT count(*) FROM daz_chat_messages"
                            " WHERE message = $1 AND username <> 'bot'",
                            message,
                        )
                        for message in said
                    }
                )
                return rows == said

            with contextlib.suppress(trio.TooSlowError):
                await poll(stored_as_said, timeout=30)
            assert rows == said
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(60):
            await process.wait()
        if process.returncode is None:
            process.kill()
        code = await process.wait()
    output = log_file.read_text()
    assert code == 0, output[-3000:]
    assert "secret" not in output
