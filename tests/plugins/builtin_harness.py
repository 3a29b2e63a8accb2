"""Running the built-in plugins in the real tree: the local CyTube server, a real
PostgreSQL, `run_config` with an ``alongside`` check (the pattern of
test_example_plugin.py), and helpers the checks share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import trio
import trio_asyncio

from daz_actors import default_kinds
from daz_actors.app.config import Config, parse_config
from daz_actors.app.runner import RunningSystem, run_config
from daz_actors.testing import poll

BASE = """
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
[actors.sql-gateway.params]
{gateway}
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
[plugins.tell]
enabled = false
[plugins.remind]
enabled = false
"""


def make_config(dsn: str, server: str, plugins: str, *, gateway: str = "") -> tuple[Config, Any]:
    """The config of a tree with `plugins` (TOML ``[plugins.<name>]`` tables)."""
    kinds = default_kinds()
    text = BASE.format(dsn=dsn, server=server, gateway=gateway) + plugins
    return parse_config(text, kinds), kinds


def run(config: Config, kinds: Any, check: Callable[[RunningSystem], Any]) -> None:
    """Run the tree until `check` returns; the process's exit code must be 0."""
    assert run_config(config, kinds, handle_signals=False, alongside=check) == 0


def bot_lines(peer: Any) -> list[str]:
    return [c["msg"] for c in peer.state()["chat_received"] if c.get("username") == "bot"]


async def said(
    peer: Any, pred: Callable[[str], bool], *, skip: int = 0, timeout: float = 30
) -> str:
    """The first line of the bot after its first `skip` lines matching `pred` (waited for)."""

    async def check() -> str | None:
        lines = (await trio.to_thread.run_sync(bot_lines, peer))[skip:]
        return next((line for line in lines if pred(line)), None)

    found: str = await poll(check, timeout=timeout, interval=0.1)
    return found


async def ask(peer: Any, user: str, text: str, pred: Callable[[str], bool]) -> str:
    """`user` says `text`; the bot's first new line matching `pred`."""
    skip = len(await trio.to_thread.run_sync(bot_lines, peer))
    await trio.to_thread.run_sync(peer.say, "lobby", user, text)
    return await said(peer, pred, skip=skip)


async def bot_joined(peer: Any) -> None:
    await peer.wait_state(lambda s: "bot" in s["channels"].get("lobby", {}).get("users", []), 30)


class Db:
    """An asyncpg connection used from trio (inside `database`)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        rows: list[Any] = await trio_asyncio.aio_as_trio(self.conn.fetch)(sql, *args)
        return rows

    async def value(self, sql: str, *args: Any) -> Any:
        return await trio_asyncio.aio_as_trio(self.conn.fetchval)(sql, *args)

    async def execute(self, sql: str, *args: Any) -> Any:
        return await trio_asyncio.aio_as_trio(self.conn.execute)(sql, *args)

    async def until(self, sql: str, *args: Any, timeout: float = 30) -> Any:
        """The first value of `sql` once it is truthy (polled with a deadline)."""

        async def check() -> Any:
            return await self.value(sql, *args)

        return await poll(check, timeout=timeout, interval=0.05)


@asynccontextmanager
async def database(dsn: str) -> AsyncIterator[Db]:
    """A connection to `dsn` for the check (a trio-asyncio loop of its own)."""
    async with trio_asyncio.open_loop():
        conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(dsn)
        try:
            yield Db(conn)
        finally:
            await trio_asyncio.aio_as_trio(conn.close)()
