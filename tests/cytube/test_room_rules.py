"""A whole room (connection + event router) against the local CyTube server and real
PostgreSQL: channel ranks, text as readers see it, the identity of a line, and commands
while the bot cannot speak."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from cytube_peer import fixtures

from daz_actors import ChildSpec, EventBus, Registry, Supervisor
from daz_actors.cytube.commands import CommandContext, CommandRegistry
from daz_actors.cytube.connection import CytubeConnection
from daz_actors.cytube.events import ConnectionStatus
from daz_actors.cytube.rooms import RoomsParams, room_spec
from daz_actors.cytube.router import GetRouterStats, RouterStats
from daz_actors.ops.metrics import connections_in
from daz_actors.runtime.kinds import BuildContext
from daz_actors.storage.sql_gateway import SqlGateway, SqlGatewayParams
from daz_actors.storage.sql_messages import SqlClient
from daz_actors.testing import fast_policy, open_tree, poll, wait_until

cytube_peer = fixtures.cytube_peer
cytube_peer_factory = fixtures.cytube_peer_factory

CHANNEL = "lobby"


@attrs.define
class Bot:
    connection: CytubeConnection
    db: SqlClient
    registry: Registry
    peer: Any

    async def stats(self) -> RouterStats:
        router = self.registry.lookup(f"room:{CHANNEL}/event-router")
        stats: RouterStats = await router.ask(GetRouterStats(), timeout=30)
        return stats

    async def said(self) -> list[str]:
        """What the bot said in the channel, as the server broadcast it."""
        state = await trio.to_thread.run_sync(self.peer.state)
        return [
            c["msg"]
            for c in state["chat_received"]
            if c.get("username") == "bot" and c["outcome"] == "broadcast"
        ]

    async def rows(self, sql: str) -> list[Any]:
        return list(await self.db.query(sql))


@asynccontextmanager
async def open_bot(
    peer: Any, dsn: str, commands: CommandRegistry | None = None, **params: Any
) -> AsyncIterator[Bot]:
    """The SQL gateway and a ``room:lobby`` as the ``rooms`` kind builds it."""
    bus, registry = EventBus(), Registry()
    settings = {"server": peer.url, "channels": (CHANNEL,), "name": "bot",
                "password": "secret", "reconnect_initial": 0.1, "reconnect_max": 0.5,
                "command_cooldown": 0.0, **params}  # fmt: skip
    rooms = RoomsParams(**settings)
    resources = {"commands": commands} if commands is not None else {}
    ctx = BuildContext(name="rooms", config=None, registry=registry, bus=bus, resources=resources)
    root = Supervisor(
        "root",
        [
            ChildSpec(name="sql-gateway", start=SqlGateway(SqlGatewayParams(), dsn)),
            room_spec(CHANNEL, rooms, ctx),
        ],
        policy=fast_policy(),
        registry=registry,
        bus=bus,
    )
    with trio.fail_after(90):
        async with open_tree(root):
            yield Bot(
                connection=connections_in(root)[0],
                db=SqlClient(registry.lookup("sql-gateway")),
                registry=registry,
                peer=peer,
            )


async def joined(bot: Bot) -> None:
    await wait_until(lambda: bot.connection.status is ConnectionStatus.JOINED, timeout=20)


async def say(peer: Any, name: str, text: str, **more: Any) -> None:
    await trio.to_thread.run_sync(lambda: peer.say(CHANNEL, name, text, **more))


async def test_channel_ranks_come_from_set_user_rank_across_promotion_demotion_and_rejoin(
    cytube_peer, pg
):
    """The channel owner joins after the bot (addUser with her global rank 1, then
    setUserRank 5): `!debug` answers her; demoted she is refused; back at rank 5 after a
    rejoin she is answered again."""
    cytube_peer.add_account("bot", "secret")
    async with open_bot(cytube_peer, pg.dsn) as bot:
        await joined(bot)
        await trio.to_thread.run_sync(
            lambda: cytube_peer.add_user(CHANNEL, "owner", rank=1, channel_rank=5)
        )
        await say(cytube_peer, "owner", "!debug")
        await poll(lambda: _answered(bot, 1), timeout=30)
        await trio.to_thread.run_sync(cytube_peer.set_rank, CHANNEL, "owner", 1)
        await say(cytube_peer, "owner", "!debug")
        await poll(lambda: _refused(bot, 1), timeout=30)
        await trio.to_thread.run_sync(cytube_peer.remove_user, CHANNEL, "owner")
        await trio.to_thread.run_sync(cytube_peer.set_rank, CHANNEL, "owner", 5)
        await trio.to_thread.run_sync(lambda: cytube_peer.add_user(CHANNEL, "owner", rank=1))
        await say(cytube_peer, "owner", "!debug")
        await poll(lambda: _answered(bot, 2), timeout=30)
        assert (await bot.stats()).rank_ignored == 1


async def _answered(bot: Bot, n: int) -> bool:
    return (await bot.stats()).replies >= n


async def _refused(bot: Bot, n: int) -> bool:
    return (await bot.stats()).rank_ignored >= n


async def test_text_is_stored_as_a_reader_sees_it_beside_the_raw_text_and_commands_parse_it(
    cytube_peer, pg
):
    """The server escapes a line and makes its link a tag; the log stores what a reader
    sees with the raw text beside it, and a command gets the text as the user typed it."""
    cytube_peer.add_account("bot", "secret")
    commands = CommandRegistry()
    heard: list[str] = []

    @commands.register("tell", description="take a note: !tell <who> <what>")
    async def tell(ctx: CommandContext) -> str:
        heard.append(ctx.args)
        return "noted"

    typed = "<b>html & stuff</b> see http://example.com/a?b=1&c=2"
    async with open_bot(cytube_peer, pg.dsn, commands=commands) as bot:
        await joined(bot)
        await say(cytube_peer, "ann", typed)
        await say(cytube_peer, "ann", "!tell bob you & me")
        rows = await poll(
            lambda: bot.rows(
                "SELECT message, raw_message FROM daz_chat_messages"
                " WHERE username = 'ann' ORDER BY id"
            ),
            timeout=30,
        )
        await poll(lambda: _answered(bot, 1), timeout=30)
    assert rows[0]["message"] == typed
    assert rows[0]["raw_message"] == (
        "&lt;b&gt;html &amp; stuff&lt;/b&gt; see "
        '<a href="http://example.com/a?b=1&amp;c=2" target="_blank">'
        "http://example.com/a?b=1&amp;c=2</a>"
    )
    assert heard == ["bob you & me"]


async def test_identical_lines_in_one_millisecond_are_two_rows_and_a_replay_adds_none(
    cytube_peer, pg
):
    """Two separate identical lines by one user in the same millisecond are two rows; after
    a reconnect the history replay of them adds none, and both stay live lines."""
    cytube_peer.add_account("bot", "secret")
    async with open_bot(cytube_peer, pg.dsn) as bot:
        await joined(bot)
        for _ in range(2):
            await say(cytube_peer, "ann", "same", time=1_700_000_000_000)
        await say(cytube_peer, "ann", "marker")
        count = "SELECT count(*) AS n FROM daz_chat_messages WHERE username = 'ann'"
        await poll(lambda: _count_is(bot, count, 3), timeout=30)
        await trio.to_thread.run_sync(cytube_peer.kick, CHANNEL, "bot", "bye")
        await wait_until(lambda: bot.connection.reconnects >= 1, timeout=20)
        await joined(bot)
        await say(cytube_peer, "ann", "after")
        await poll(lambda: _count_is(bot, count, 4), timeout=30)
        rows = await bot.rows(
            "SELECT message, is_history FROM daz_chat_messages WHERE username = 'ann' ORDER BY id"
        )
    assert [(r["message"], r["is_history"]) for r in rows] == [
        ("same", False), ("same", False), ("marker", False), ("after", False)
    ]  # fmt: skip


async def _count_is(bot: Bot, sql: str, n: int) -> bool:
    return (await bot.rows(sql))[0]["n"] == n


async def test_commands_are_not_run_while_the_bot_cannot_speak(cytube_peer, pg):
    """With the login refused the bot cannot speak: a command is not run, so no reply is
    produced, queued for retry, or left to become a dead letter."""
    cytube_peer.add_account("bot", "right")
    async with open_bot(cytube_peer, pg.dsn) as bot:  # its password is "secret"
        await wait_until(lambda: bot.connection.status is ConnectionStatus.LOGIN_FAILED, timeout=20)
        await say(cytube_peer, "ann", "!about")
        stats = await poll(lambda: _silent(bot), timeout=30)
        queued = await bot.rows("SELECT count(*) AS n FROM daz_retry_queue")
    assert (stats.commands_started, stats.replies, stats.replies_failed) == (0, 0, 0)
    assert queued[0]["n"] == 0


async def _silent(bot: Bot) -> RouterStats | None:
    stats = await bot.stats()
    return stats if stats.silent_ignored >= 1 else None
