"""Hostile chat input through the real connection, the real router and real PostgreSQL.

A room built as the ``rooms`` kind builds it (one_for_all, redeliver 3, the production
restart policy) joins the CyTube test peer read-only; the peer sends what a hostile user
or a broken server could: lone surrogates, deep nesting, wrong shapes, absurd times and
sizes, malformed Socket.IO packets. The room must never restart.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from cytube_peer import fixtures
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daz_actors import ChildSpec, EventBus, Registry, Strategy, Supervisor, default_kinds
from daz_actors.app.config import load_config
from daz_actors.cytube.connection import CytubeConnection
from daz_actors.cytube.events import ConnectionStatus
from daz_actors.cytube.inbound import CHAT_STORE_LIMIT, FLAGS_KEY, NAME_LIMIT
from daz_actors.cytube.rooms import RoomsParams, build_rooms
from daz_actors.ops.metrics import Metrics, Sources, connections_in, snapshot
from daz_actors.runtime.kinds import BuildContext
from daz_actors.runtime.supervisor import ChildInfo
from daz_actors.storage.sql_gateway import SqlGateway, SqlGatewayParams
from daz_actors.storage.sql_messages import SqlClient
from daz_actors.testing import fast_policy, open_tree, poll, wait_until

cytube_peer = fixtures.cytube_peer
cytube_peer_factory = fixtures.cytube_peer_factory

DEADLINE = 30.0  # seconds for anything awaited here
_channels = itertools.count(1)


@attrs.frozen
class HostileRoom:
    channel: str
    root: Supervisor
    connection: CytubeConnection
    db: SqlClient

    def restarts(self) -> list[tuple[str, int]]:
        """(path, restarts) of the room and everything under it."""
        found: list[tuple[str, int]] = []

        def walk(infos: list[ChildInfo] | tuple[ChildInfo, ...], path: str) -> None:
            for info in infos:
                found.append((path + info.name, info.restarts))
                walk(info.children or (), path + info.name + "/")

        walk(self.root.which_children(), "")
        return found

    async def stored(self, username: str) -> list[Any]:
        return await self.db.query(
            "SELECT username, message, sent_at, received_at, meta FROM daz_chat_messages"
            " WHERE channel = $1 AND username = $2",
            self.channel,
            username,
        )

    async def count(self, sql: str, *args: Any) -> int:
        return int(await self.db.query_value(sql, self.channel, *args))


@asynccontextmanager
async def open_room(dsn: str, peer: Any) -> AsyncIterator[HostileRoom]:
    """The SQL gateway and a rooms subtree with one fresh channel, joined read-only."""
    channel = f"hostile{next(_channels)}"
    registry, bus = Registry(), EventBus()
    params = RoomsParams(
        server=peer.url, channels=(channel,), reconnect_initial=0.05, reconnect_max=0.2
    )
    context = BuildContext(
        name="rooms", config=load_config(None, default_kinds()), registry=registry, bus=bus,
        resources={},
    )  # fmt: skip
    root = Supervisor(
        "daz",
        [
            ChildSpec(name="sql-gateway", start=SqlGateway(SqlGatewayParams(), dsn)),
            ChildSpec(name="rooms", start=build_rooms(params, context), shutdown_timeout=None),
        ],
        policy=fast_policy(Strategy.REST_FOR_ONE),
        registry=registry,
        bus=bus,
    )
    with trio.fail_after(DEADLINE * 2):
        async with open_tree(root):
            [connection] = connections_in(root)
            room = HostileRoom(channel, root, connection, SqlClient(registry.lookup("sql-gateway")))
            await joined(peer, room)
            yield room


async def joined(peer: Any, room: HostileRoom) -> None:
    """Wait until the bot's session is in the channel again."""

    async def present() -> bool:
        state = await trio.to_thread.run_sync(peer.state)
        here = [s for s in state["sessions"] if s["channel"] == room.channel]
        return bool(here) and room.connection.status is ConnectionStatus.JOINED

    await poll(present, timeout=DEADLINE, interval=0.02)


async def emit(peer: Any, room: HostileRoom, event: str, data: Any, **kw: Any) -> None:
    assert await trio.to_thread.run_sync(lambda: peer.emit(room.channel, event, data, **kw)) == 1


async def raw(peer: Any, room: HostileRoom, packet: str) -> None:
    """Send a malformed packet; the session ends on it: wait for the bot to be back."""
    before = room.connection.reconnects
    assert await trio.to_thread.run_sync(peer.raw, room.channel, packet) == 1
    await wait_until(lambda: room.connection.reconnects > before, timeout=DEADLINE)
    await joined(peer, room)


def now_ms() -> int:
    return int(time.time() * 1000)


def line(username: str, msg: str, **extra: Any) -> dict[str, Any]:
    return {"username": username, "msg": msg, "meta": {}, "time": now_ms(), **extra}


@pytest.fixture
def peer(cytube_peer_factory):
    """A peer whose per-IP connection budget allows the many reconnects here."""
    return cytube_peer_factory(conn_burst=10_000)


async def test_hostile_lines_are_stored_safely_or_counted_and_the_room_never_restarts(pg, peer):
    """A lone surrogate, 900-deep nesting, wrong shapes, a 1969 time, a 100 KB name and a
    300 KB line: each is stored (replaced, cut or re-timed, flagged) or dropped and
    counted; the room never restarts and the good line after them is stored once."""
    async with open_room(pg.dsn, peer) as room:
        await emit(peer, room, "chatMsg", line("sur", "a\ud800b", meta={"k\udfff": 1}))
        await raw(peer, room, '2["chatMsg",{"meta":' + "[" * 900 + "]" * 900 + "}]")
        await emit(peer, room, "chatMsg", {})
        await emit(peer, room, "chatMsg", line("shape", 42))
        await emit(peer, room, "chatMsg", line("past", "then", time=-5))
        await emit(peer, room, "chatMsg", line("n" * 100_000, "big name"))
        await emit(peer, room, "chatMsg", line("longline", "m" * 300_000))
        peer.say(room.channel, "last", "after all that")
        await poll(lambda: room.stored("last"), timeout=DEADLINE)
        assert [n for n, r in room.restarts() if r] == []
        [sur] = await room.stored("sur")
        assert sur["message"] == "a\ufffdb"
        assert json.loads(sur["meta"]) == {"k\ufffd": 1, FLAGS_KEY: ["text_replaced"]}
        [past] = await room.stored("past")
        assert past["sent_at"].year > 2000  # the receive time, not 1969
        assert json.loads(past["meta"])[FLAGS_KEY] == ["time_replaced"]
        [big] = await room.stored("n" * NAME_LIMIT)
        assert json.loads(big["meta"])[FLAGS_KEY] == ["username_cut"]
        [long] = await room.stored("longline")
        assert len(long["message"]) == CHAT_STORE_LIMIT
        assert await room.count("SELECT count(*) FROM daz_chat_messages WHERE channel = $1") == 5
        assert room.connection.rejected == {
            ("frame", "frame_error"): 1,
            ("chatMsg", "missing_username"): 1,
            ("chatMsg", "wrong_type_msg"): 1,
        }
        assert len(await room.stored("last")) == 1


# -- fuzzing: hypothesis draws what the server sends --

names = st.text("abcXYZ019_-", min_size=1, max_size=NAME_LIMIT)
texts = st.text(st.characters(), max_size=400) | st.integers(0, 400_000).map(lambda n: "w" * n)
good_lines = st.builds(lambda u, m: ("good", u, m), names, texts)
bad_values = st.none() | st.booleans() | st.integers() | st.lists(st.integers(), max_size=2)
bad_lines = st.one_of(
    st.builds(lambda v: ("bad", {"msg": "x", "time": now_ms(), "username": v}), bad_values),
    st.builds(lambda v: ("bad", {"username": "u", "time": now_ms(), "msg": v}), bad_values),
    st.builds(lambda v: ("bad", {"username": "u", "msg": "x", "time": v}), st.none() | st.text()),
    st.just(("bad", {})),
    st.builds(lambda v: ("bad", v), bad_values | st.text(max_size=5)),
)
bad_frames = st.sampled_from(
    [
        '2["chatMsg",{"msg":',  # cut short
        '2["chatMsg",' + "[" * 40 + "]" * 40 + "]",  # nested past the limit
        "2{}",  # an event that is not an array
        "2[]",  # an event without a name
        "9",  # no such packet type
    ]
).map(lambda f: ("frame", f))
batches = st.lists(good_lines | bad_lines | bad_frames, min_size=1, max_size=8)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=batches)
async def test_fuzzed_server_input_never_restarts_the_room(pg, peer, batch):
    """Well-formed lines are stored exactly once, malformed events and frames are each
    counted, and the room never restarts, whatever hypothesis sends."""
    good: list[str] = []
    bad = 0
    async with open_room(pg.dsn, peer) as room:
        for i, (kind, *rest) in enumerate(batch):
            if kind == "good":
                username, text = rest
                username = f"{i}_{username}"[:NAME_LIMIT]  # unique per batch
                good.append(username)
                await emit(peer, room, "chatMsg", line(username, text))
            elif kind == "bad":
                bad += 1
                await emit(peer, room, "chatMsg", rest[0])
            else:
                bad += 1
                await raw(peer, room, rest[0])
        peer.say(room.channel, "sentinel", "done")
        await poll(lambda: room.stored("sentinel"), timeout=DEADLINE)
        assert [n for n, r in room.restarts() if r] == []
        for username in good:
            assert len(await room.stored(username)) == 1, username
        assert sum(room.connection.rejected.values()) == bad


LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


async def test_metric_labels_never_carry_user_names_texts_or_made_up_event_names(pg, peer):
    """Events the bot does not know, named by a hostile server and carrying text that is
    flagged, and lines from many users: no label on /metrics carries a user name, a chat
    text or a name the server made up (each would be a new series that never goes away)."""
    made_up = [f"madeUp{n}\t{'z' * 50}" for n in range(5)]
    users = [f"labeluser{n}" for n in range(20)]
    async with open_room(pg.dsn, peer) as room:
        for name in made_up:  # a lone surrogate: the scrub flags it text_replaced
            await emit(peer, room, name, {"username": "u", "msg": "a\ud800b"})
        for user in users:
            await emit(peer, room, "chatMsg", line(user, f"secret text of {user} \ud800"))
        await emit(peer, room, "chatMsg", line("sentinel", "done"))
        await poll(lambda: room.stored("sentinel"), timeout=DEADLINE)
        assert ("chatMsg", "text_replaced") in room.connection.flagged  # known: counted
        assert {event for event, _ in room.connection.flagged} == {"chatMsg"}
        sources = Sources(connections=lambda: [room.connection])
        exposition = Metrics().render(await snapshot(sources)).decode()
    values = {m.group(2) for m in LABEL.finditer(exposition)}
    assert values, exposition
    for value in values:
        assert "madeUp" not in value
        assert "labeluser" not in value
        assert "secret" not in value
        assert len(value) <= 40, value
