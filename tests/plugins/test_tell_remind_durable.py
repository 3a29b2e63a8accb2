"""tell and remind across faults, with `daz-actors run` as a real process: SIGKILLed and
restarted, PostgreSQL stopped and started under it, the chat server killed. Each message
and each reminder is said exactly once (one echo in the chat log, one line at the server)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
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
children = ["storage", "plugins", "rooms", "failure-log"]
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
[actors.failure-log]
kind = "failure-log"

[plugins.tell]
cooldown = 0
[plugins.remind]
cooldown = 0
late_after = 3

# every attempt must end before the worker's lock (lock_timeout = 5) does
[retry_policies.plugin_delivery]
initial = 0.3
max_delay = 2.0
max_retries = 200
attempt_timeout = 4.5
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


class Bot:
    """`daz-actors run` as a process, started and SIGKILLed at will."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.config, self.env, self.log = config, env, log
        self.process: trio.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts}\n".encode())
            out.flush()
            self.process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "daz_actors.app.cli", "run", str(self.config)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> int:
        if self.process is None or self.process.returncode is not None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(60):
            await self.process.wait()
        if self.process.returncode is None:
            self.process.kill()
        return await self.process.wait()


@contextlib.asynccontextmanager
async def connect(dsn: str) -> AsyncIterator[Callable[..., Any]]:
    """A trio-side `fetchval(sql, *args)` on a new connection; 0 while the server is away."""
    async with trio_asyncio.open_loop():
        conn: list[Any] = []

        async def fetchval(sql: str, *args: Any) -> Any:
            try:
                if not conn or conn[0].is_closed():
                    conn[:] = [await trio_asyncio.aio_as_trio(asyncpg.connect)(dsn)]
                return await trio_asyncio.aio_as_trio(conn[0].fetchval)(sql, *args)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.clear()
                return None

        try:
            yield fetchval
        finally:
            if conn:
                await trio_asyncio.aio_as_trio(conn[0].close)()


def bot_lines(peer: Any) -> list[str]:
    return [c["msg"] for c in peer.state()["chat_received"] if c.get("username") == "bot"]


async def test_tell_and_remind_survive_sigkill_outages_and_a_chat_server_kill(
    cytube_peer, own_server, tmp_path
):
    """A message stored before a SIGKILL is said after the restart; a reminder due while the
    bot was dead fires when it is back, saying it is late; a join heard while PostgreSQL is
    down (and the bot SIGKILLed before it came back) still gets its message; one said to a
    chat server that froze before echoing it is in the chat log once; one stored before
    the chat server is killed is said after it returns. Each exactly once."""
    cytube_peer.add_account("bot", "secret")
    config = tmp_path / "bot.toml"
    config.write_text(CONFIG.format(server=cytube_peer.url))
    env = {
        **os.environ,
        "DAZ_DATABASE_URL": own_server.url,
        "DAZ_DATA_DIR": str(tmp_path / "data"),
        "DAZ_CYTUBE_PASSWORD": "secret",
    }
    bot = Bot(config, env, tmp_path / "bot.log")

    async def poll(check: Callable[[], Any], timeout: float = 60) -> Any:
        return await poll_until(check, timeout=timeout, interval=0.1)

    def disconnects() -> int:
        """Times the bot logged that its connection to the chat server was lost."""
        return bot.log.read_text().count("room lobby: disconnected")

    async def joined() -> bool:
        state = await trio.to_thread.run_sync(cytube_peer.state)
        return "bot" in state["channels"].get("lobby", {}).get("users", [])

    async def say(user: str, text: str) -> None:
        await trio.to_thread.run_sync(cytube_peer.say, "lobby", user, text)

    async def answered(pred: Callable[[str], bool]) -> str:
        async def check() -> str | None:
            lines = await trio.to_thread.run_sync(bot_lines, cytube_peer)
            return next((line for line in lines if pred(line)), None)

        found: str = await poll(check)
        return found

    try:
        async with connect(own_server.url) as fetchval:

            async def echoes(text: str) -> int:
                """The bot's line `text` in the chat log (the server's echo, stored once)."""
                count = await fetchval(
                    "SELECT count(*) FROM daz_chat_messages WHERE username = 'bot'"
                    " AND message = $1",
                    text,
                )
                return int(count or 0)

            async def delivered(table: str, where: str) -> bool:
                return bool(
                    await fetchval(f"SELECT delivered_at IS NOT NULL FROM {table} WHERE {where}")
                )

            # --- stored, then the bot is SIGKILLed; said after the restart
            await bot.start()
            await poll(joined)
            await say("ann", "!tell bob one")
            await answered(lambda line: line == "ok ann, I will tell bob when they are next here")
            await say("ann", "!remind 1s wake up")
            await answered(lambda line: line == "ok ann, I will remind you in 1s")
            await bot.kill()

            # the reminder falls due while the bot is dead, and then some
            async def overdue() -> bool:
                return bool(
                    await fetchval(
                        "SELECT now() > due_at + interval '4 seconds' FROM daz_reminders"
                    )
                )

            await poll(overdue)
            await bot.start()
            late = await answered(lambda line: line.startswith("ann: reminder: wake up (late by"))
            assert late.endswith(": I was away)"), late
            await poll(joined)
            await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "bob")
            told_bob = "bob, ann asked me to tell you: one"
            await answered(lambda line: line == told_bob)
            await poll(lambda: delivered("daz_tells", "target = 'bob'"))

            # --- a join heard while PostgreSQL is down; SIGKILL before it comes back
            await say("ann", "!tell dan two")
            await answered(lambda line: line.startswith("ok ann, I will tell dan"))
            await trio.to_thread.run_sync(own_server.handle.stop)
            await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "dan")
            spool = tmp_path / "data" / "retry-spool"

            async def spooled_for(user: str) -> bool:  # the delivery is durable in the spool
                return spool.exists() and f"tell:lobby:{user}:".encode() in spool.read_bytes()

            await poll(lambda: spooled_for("dan"))
            await bot.kill()
            await trio.to_thread.run_sync(own_server.handle.start)
            await bot.start()
            told_dan = "dan, ann asked me to tell you: two"
            await answered(lambda line: line == told_dan)
            await poll(lambda: delivered("daz_tells", "target = 'dan'"))

            # --- the line goes out to a chat server that froze (SIGSTOP) before it echoed:
            # the bot finds the server dead, reconnects once it thaws, and the line is in
            # the chat log once (echoed late, or replayed on rejoin, or said again)
            await say("ann", "!tell fay four")
            await answered(lambda line: line.startswith("ok ann, I will tell fay"))
            await trio.to_thread.run_sync(own_server.handle.stop)
            await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "fay")
            await poll(lambda: spooled_for("fay"))
            drops_before = disconnects()
            await trio.to_thread.run_sync(cytube_peer.freeze)
            try:
                await trio.to_thread.run_sync(own_server.handle.start)

                async def attempted() -> bool:  # the line went out to the frozen server
                    return bool(
                        await fetchval(
                            "SELECT attempt_at IS NOT NULL FROM daz_tells WHERE target = 'fay'"
                        )
                    )

                await poll(attempted)

                # the line is out and no echo comes: the bot finds the server dead
                async def found_dead() -> bool:
                    return disconnects() > drops_before

                await poll(found_dead)
            finally:
                await trio.to_thread.run_sync(cytube_peer.thaw)
            told_fay = "fay, ann asked me to tell you: four"
            await poll(lambda: delivered("daz_tells", "target = 'fay'"))
            await poll(joined)
            await say("ann", "!about")  # answered after anything said before it
            await answered(lambda line: line.startswith("daz-actors "))
            lines = await trio.to_thread.run_sync(bot_lines, cytube_peer)
            assert lines.count(told_fay) == 1, lines  # the server showed it once

            # --- the chat server is killed after the message is stored
            await poll(joined)
            await say("ann", "!tell eve three")
            await answered(lambda line: line.startswith("ok ann, I will tell eve"))
            await trio.to_thread.run_sync(cytube_peer.restart)
            await trio.to_thread.run_sync(cytube_peer.add_account, "bot", "secret")
            await poll(joined)
            await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "eve")
            told_eve = "eve, ann asked me to tell you: three"
            await answered(lambda line: line == told_eve)
            await poll(lambda: delivered("daz_tells", "target = 'eve'"))
            await poll(lambda: delivered("daz_reminders", "true"))

            # --- exactly once: one echo each in the chat log, nothing left waiting
            for text in (told_bob, told_dan, told_fay, told_eve, late):
                assert await poll(lambda t=text: echoes(t)) == 1, text
            await say("bob", "still here")
            await say("dan", "me too")
            await say("ann", "!about")  # a later reply: the earlier ones had their turn
            await answered(lambda line: line.startswith("daz-actors "))
            for text in (told_bob, told_dan, told_fay, told_eve, late):
                assert await echoes(text) == 1, text
            assert await fetchval("SELECT count(*) FROM daz_tells WHERE delivered_at IS NULL") == 0
            lines = await trio.to_thread.run_sync(bot_lines, cytube_peer)
            assert lines.count(told_eve) == 1  # the restarted server's own record
            assert (
                await fetchval(
                    "SELECT count(*) FROM daz_retry_queue WHERE plugin_name IN ('tell', 'remind')"
                    " AND status = 'dead_letter'"
                )
                == 0
            )
    finally:
        code = await bot.stop()
    output = bot.log.read_text()
    assert code == 0, output[-3000:]
    assert "secret" not in output
