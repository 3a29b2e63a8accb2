"""The example plugin (tests/plugins/hello), installed as a distribution of its own through
its entry point, run in the real tree against the local CyTube server and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import trio
import trio_asyncio
from cytube_peer import fixtures

from daz_actors import default_kinds
from daz_actors.app.config import parse_config
from daz_actors.app.runner import RunningSystem, run_config
from daz_actors.plugins import installed_plugins
from daz_actors.runtime.supervisor import ChildInfo
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
greeting = "howdy"
[plugins.tell]
enabled = false
[plugins.remind]
enabled = false
"""


def bot_lines(peer: Any) -> list[str]:
    return [c["msg"] for c in peer.state()["chat_received"] if c.get("username") == "bot"]


def find(children: tuple[ChildInfo, ...] | list[ChildInfo], name: str) -> ChildInfo:
    for child in children:
        if child.registered_as == name:
            return child
        if child.children:
            try:
                return find(child.children, name)
            except LookupError:
                pass
    raise LookupError(name)


def test_the_example_plugin_is_installed_through_its_entry_point() -> None:
    """The test extra installs tests/plugins/hello as the distribution daz-hello-plugin."""
    entry = installed_plugins()["hello"]
    assert entry.distribution == "daz-hello-plugin"
    assert entry.error is None
    assert entry.plugin is not None
    assert entry.plugin.version == "0.1.0"


def test_the_example_plugin_runs_in_the_real_tree(cytube_peer, pg, tmp_path, monkeypatch):
    """Its table is migrated in its own sequence, its command answered with its config,
    its intent queued with its name and carried out, its actor hears joins on the bus, and
    its crash restarts that actor alone (the room and the retry workers untouched)."""
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAZ_CYTUBE_PASSWORD", "secret")
    cytube_peer.add_account("bot", "secret")
    kinds = default_kinds()
    config = parse_config(CONFIG.format(dsn=pg.dsn, server=cytube_peer.url), kinds)
    assert list(config.plugins) == ["hello"]
    seen: dict[str, Any] = {}

    async def said(pred: Callable[[str], bool]) -> str:
        async def check() -> str | None:
            lines = await trio.to_thread.run_sync(bot_lines, cytube_peer)
            return next((line for line in lines if pred(line)), None)

        found: str = await poll(check, timeout=30, interval=0.1)
        return found

    async def helps_after(count: int) -> list[str] | None:
        lines = await trio.to_thread.run_sync(bot_lines, cytube_peer)
        helps = [line for line in lines if line.startswith("Commands: ")]
        return helps if len(helps) >= count else None

    async def alongside(system: RunningSystem) -> None:
        async with trio_asyncio.open_loop():
            conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(pg.dsn)
            fetch = trio_asyncio.aio_as_trio(conn.fetch)
            fetchval = trio_asyncio.aio_as_trio(conn.fetchval)
            try:
                await cytube_peer.wait_state(
                    lambda s: "bot" in s["channels"].get("lobby", {}).get("users", []), 30
                )
                seen["migrations"] = [
                    tuple(r)
                    for r in await fetch("SELECT plugin, version, name FROM daz_plugin_migrations")
                ]
                await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "ann", 2)
                await trio.to_thread.run_sync(cytube_peer.say, "lobby", "ann", "!hello")
                seen["hello"] = await said(lambda line: line.startswith("howdy, ann"))
                seen["rows"] = await fetchval("SELECT count(*) FROM hello_greetings")

                await trio.to_thread.run_sync(cytube_peer.say, "lobby", "ann", "!hellolater")
                queued = await said(lambda line: line.startswith("queued "))
                event_id = queued.split()[1]

                async def recorded() -> bool:
                    return bool(
                        await fetchval(
                            "SELECT count(*) FROM hello_greetings WHERE event_id = $1", event_id
                        )
                    )

                await poll(recorded, timeout=30, interval=0.1)
                seen["item"] = tuple(
                    (
                        await fetch(
                            "SELECT plugin_name, event_type, status FROM daz_retry_queue"
                            " WHERE event_id = $1",
                            event_id,
                        )
                    )[0]
                )

                await trio.to_thread.run_sync(cytube_peer.add_user, "lobby", "cat")
                # !help: the plugin's commands beside the built-ins, as each user may run them
                await trio.to_thread.run_sync(cytube_peer.say, "lobby", "cat", "!help")
                await trio.to_thread.run_sync(cytube_peer.say, "lobby", "ann", "!help")
                seen["helps"] = await poll(lambda: helps_after(2), timeout=30, interval=0.1)
                await trio.to_thread.run_sync(cytube_peer.say, "lobby", "ann", "!joins")
                seen["joins"] = await said(lambda line: line.startswith("joins heard: "))

                before = system.tree.which_children()
                room = find(before, "room:lobby/connection")
                await trio.to_thread.run_sync(cytube_peer.say, "lobby", "ann", "!hellocrash")

                async def restarted() -> ChildInfo | None:
                    info = find(system.tree.which_children(), "plugin:hello/watcher")
                    return info if info.restarts == 1 and info.state.value == "running" else None

                watcher = await poll(restarted, timeout=30, interval=0.05)
                seen["watcher_error"] = watcher.last_error
                after = system.tree.which_children()
                seen["room"] = (room.incarnation, find(after, "room:lobby/connection").incarnation)
                seen["restarts"] = {
                    name: find(after, name).restarts
                    for name in ("room:lobby", "room:lobby/event-router", "plugins", "retry")
                }
                # a fresh incarnation: it heard no join since
                await trio.to_thread.run_sync(cytube_peer.say, "lobby", "ann", "!joins")
                seen["joins_after"] = await said(lambda line: line == "joins heard: 0")
            finally:
                await trio_asyncio.aio_as_trio(conn.close)()

    assert run_config(config, kinds, handle_signals=False, alongside=alongside) == 0
    assert seen["migrations"] == [("hello", 1, "greetings")]
    assert seen["hello"] == "howdy, ann! (greeting #1 here)"
    assert seen["rows"] == 1
    assert seen["item"] == ("hello", "hello.record", "completed")
    assert seen["joins"] != "joins heard: 0"  # it heard cat (and ann) join
    assert "asked to crash" in (seen["watcher_error"] or "")
    assert seen["room"][0] == seen["room"][1]  # the connection was not restarted
    assert seen["restarts"] == {
        "room:lobby": 0, "room:lobby/event-router": 0, "plugins": 0, "retry": 0,
    }  # fmt: skip
    assert seen["joins_after"] == "joins heard: 0"
    # cat (rank 0) and ann (rank 2) asked at once: ann's answer is the one with more in it
    cat_help, ann_help = sorted(seen["helps"], key=len)
    assert "!hello: say hello (and count it)" in cat_help
    assert "!hellocrash" not in cat_help
    assert "!debug" not in cat_help
    assert "!hellocrash: crash the watcher" in ann_help
    assert "!debug" in ann_help
