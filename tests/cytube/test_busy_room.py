"""A busy room: chat lines stored in groups, never lost to a crash mid-batch, and a
connection that answers the server's pings while PostgreSQL stalls (issue 15)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
import trio
import trio_asyncio
from cytube_peer import fixtures
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from test_router import (
    T0,
    chat,
    insert_waiting_on_a_lock,
    lock,
    open_room,
    router_restarts,
    settled,
    unlock,
)

from daz_actors import ChildSpec, EventBus, Registry, Strategy, Supervisor
from daz_actors.app.handlers import default_handlers
from daz_actors.cytube.chat_log import (
    LogRow,
    batch_statements,
    channel_event_write,
    chat_write,
    private_write,
)
from daz_actors.cytube.connection import CytubeConnection
from daz_actors.cytube.events import ConnectionStatus, PrivateMessage, User, UserJoined
from daz_actors.cytube.rooms import RoomsParams, room_spec
from daz_actors.cytube.router import GetRouterStats, RouterStats
from daz_actors.ops.metrics import Metrics, Sources, snapshot
from daz_actors.retry.kind import RetryParams, build_retry
from daz_actors.retry.policies import RetryPolicy
from daz_actors.runtime.kinds import BuildContext
from daz_actors.storage.migrations import migrate
from daz_actors.storage.sql_gateway import SqlGateway, SqlGatewayParams
from daz_actors.storage.sql_messages import CALL_FAILED, SqlClient
from daz_actors.testing import fast_policy, open_tree, poll, wait_until

cytube_peer = fixtures.cytube_peer
cytube_peer_factory = fixtures.cytube_peer_factory


async def stored_ids(room: Any) -> list[str]:
    rows = await room.rows("SELECT event_id FROM daz_chat_messages ORDER BY id")
    return [r["event_id"] for r in rows]


async def test_lines_that_arrive_together_are_stored_once_each_in_few_batches(pg):
    """500 lines told at once (with a line told twice and a live line also replayed as
    history) are stored in a few multi-row batches, each line once, the live flag kept."""
    lines = [chat("ann", f"line {n}", time=T0 + n) for n in range(500)]
    again = lines[7]  # the same event twice: one row
    replay = chat("ann", "line 9", time=T0 + 9, history=True)  # a live line's replay
    async with open_room(pg.dsn) as room:
        for event in [*lines[:10], again, replay, *lines[10:]]:
            await room.router.send(event)
        stats = await settled(room.router)
        ids = await stored_ids(room)
        history = await room.rows(
            "SELECT count(*) AS n FROM daz_chat_messages WHERE is_history"
        )
    expected = [chat_write(line, 0).event_id for line in lines]
    assert ids == expected  # each once, in arrival order
    assert history[0]["n"] == 0
    assert stats.logged == 502  # the copies were written (and found already written)
    assert stats.log_failures == 0
    assert stats.log_batches < 100  # grouped, not one insert per line


async def test_a_router_crash_mid_batch_loses_nothing_and_duplicates_nothing(pg):
    """The router is killed while its writer's batch waits on a lock and that insert is
    then cancelled in PostgreSQL: the next incarnation writes the whole batch again, and
    every line told before and after the crash is stored exactly once, none queued."""
    first = [chat("ann", f"before {n}", time=T0 + n) for n in range(300)]
    later = [chat("bob", f"after {n}", time=T0 + 1000 + n) for n in range(50)]
    async with open_room(pg.dsn) as room, pg.trio_connection() as locker:
        await locker.call(lock)
        for event in first:
            await room.router.send(event)
        await poll(lambda: locker.call(insert_waiting_on_a_lock), timeout=30, interval=0.01)
        pids = await locker.call(
            lambda conn: conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE 'INSERT INTO daz_chat_messages%'"
            )
        )
        assert len(pids) == 1  # the writer's batch, in flight
        stats: RouterStats = await room.router.ask(GetRouterStats(), timeout=30)
        assert stats.log_pending == 300
        assert stats.logged == 0
        room.room.kill_child("event-router", "crash injected mid-batch")
        await wait_until(lambda: router_restarts(room) == 1, timeout=30)
        # the killed incarnation's insert can never commit now
        await locker.call(lambda conn: conn.execute(f"SELECT pg_cancel_backend({pids[0]['pid']})"))
        for event in later:
            await room.router.send(event)
        await locker.call(unlock)
        stats = await settled(room.router)
        ids = await stored_ids(room)
        queued = await room.rows("SELECT count(*) AS n FROM daz_retry_queue")
    assert sorted(ids) == sorted(chat_write(e, 0).event_id for e in [*first, *later])
    assert len(ids) == len(set(ids)) == 350
    assert stats.log_failures == 0
    assert queued[0]["n"] == 0
    assert stats.logged == 350  # the new incarnation wrote the killed batch and the rest


async def test_a_full_log_buffer_makes_the_router_wait_and_loses_nothing(pg):
    """With room for 50 rows and every insert waiting on a lock, the router waits for
    room instead of dropping lines; once the lock goes, all 400 lines are stored once."""
    lines = [chat("ann", f"line {n}", time=T0 + n) for n in range(400)]
    async with open_room(pg.dsn, log_buffer=50, log_batch=20) as room:
        async with pg.trio_connection() as locker, trio.open_nursery() as nursery:
            await locker.call(lock)

            async def tell_all() -> None:
                for event in lines:
                    await room.router.send(event)

            nursery.start_soon(tell_all)
            await poll(lambda: locker.call(insert_waiting_on_a_lock), timeout=30, interval=0.01)
            # the buffer fills up and the router waits: its mailbox takes the rest
            await wait_until(lambda: room.router.mailbox_depth > 0, timeout=30)
            await locker.call(unlock)
        stats = await settled(room.router)
        ids = await stored_ids(room)
    assert ids == [chat_write(line, 0).event_id for line in lines]
    assert stats.log_full_waits > 0
    assert stats.log_failures == 0


async def test_an_orderly_stop_writes_what_the_buffer_still_holds(pg):
    """2,000 lines wait behind a locked table in batches of 50; the lock goes and the tree
    stops at once: the router's writer gets its moment and every line is stored."""
    lines = [chat("ann", f"line {n}", time=T0 + n) for n in range(2000)]
    async with open_room(pg.dsn, log_batch=50) as room, pg.trio_connection() as locker:
        await locker.call(lock)
        for event in lines:
            await room.router.send(event)
        await poll(lambda: locker.call(insert_waiting_on_a_lock), timeout=30, interval=0.01)
        stats: RouterStats = await room.router.ask(GetRouterStats(), timeout=30)
        assert stats.log_pending == 2000
        await locker.call(unlock)
        # leaving the block stops the tree now, with most lines still in the buffer

    async with pg.trio_connection() as conn:
        stored = await conn.call(
            lambda c: c.fetchval("SELECT count(DISTINCT event_id) FROM daz_chat_messages")
        )
    assert stored == 2000


async def test_the_chat_log_metrics_count_rows_across_router_restarts(pg, tmp_path):
    """`/metrics` shows each room's rows stored, queued for retry and waiting, counted by
    the room's buffer: a router restart does not reset them. (With the retry subtree: rows
    that no retry capture receives are counted refused, not queued.)"""
    async with open_room(pg.dsn, log_timeout=0.3, retry_in=tmp_path) as room:
        view = SimpleNamespace(
            root=room.root, stopping=False, which_children=room.root.which_children
        )

        async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            text = Metrics().render(await snapshot(Sources(tree=view))).decode()
            return {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }

        await room.tell(*(chat("ann", f"line {n}", time=T0 + n) for n in range(30)))
        room.room.kill_child("event-router", "restart it")
        await wait_until(lambda: router_restarts(room) == 1, timeout=30)
        async with pg.trio_connection() as locker:
            await locker.call(lock)
            await room.tell(*(chat("bob", f"late {n}", time=T0 + 100 + n) for n in range(5)))
            await locker.call(unlock)
        await room.tell(chat("ann", "after", time=T0 + 500))
        found = await scrape()
    channel = ("channel", "test")
    assert found[("daz_chat_log_rows_total", (channel, ("outcome", "stored")))] == 31
    assert found[("daz_chat_log_rows_total", (channel, ("outcome", "queued")))] == 5
    assert found[("daz_chat_log_rows_total", (channel, ("outcome", "refused")))] == 0
    assert found[("daz_chat_log_pending", (channel,))] == 0


@pytest.fixture(autouse=True)
def password(monkeypatch):
    monkeypatch.setenv("DAZ_CYTUBE_PASSWORD", "secret")


def say_many(peer: Any, channel: str, count: int) -> None:
    for n in range(count):
        peer.say(channel, "chatty", f"line {n}", time=T0 + n)


def flood_tree(dsn: str, peer: Any, data_dir: Path) -> tuple[Supervisor, Registry, Any]:
    """The gateway, the retry subtree (fast policies, its spool in `data_dir`) and the real
    room ``busy`` (connection and router as configured); and the room's connection."""
    registry, bus = Registry(), EventBus()
    fast = RetryPolicy(max_retries=50, initial=0.05, max_delay=0.5, attempt_timeout=10)
    settings = SimpleNamespace(
        data_dir=data_dir, retry_policies={"default": fast, "sql_operation": fast}
    )
    retry_context = BuildContext(
        name="retry", config=settings, registry=registry, bus=bus,
        resources={"database_url": dsn, "retry_handlers": default_handlers()},
    )  # fmt: skip
    retry = build_retry(RetryParams(worker_count=2, poll_interval=0.2), retry_context)
    params = RoomsParams(server=peer.url, channels=("busy",), name="bot",
                         reconnect_initial=0.1, reconnect_max=0.5)  # fmt: skip
    context = BuildContext(name="rooms", config=None, registry=registry, bus=bus, resources={})
    spec = room_spec("busy", params, context)
    room = spec.start
    assert isinstance(room, Supervisor)
    connection = next(s for s in room.startables() if isinstance(s, CytubeConnection))
    gateway = SqlGatewayParams(reconnect_initial=0.1, reconnect_max=0.5)
    root = Supervisor(
        "daz",
        [
            ChildSpec(name="sql-gateway", start=SqlGateway(gateway, dsn)),
            ChildSpec(name="retry", start=retry, shutdown_timeout=None),
            spec,
        ],
        policy=fast_policy(Strategy.REST_FOR_ONE),
        registry=registry,
        bus=bus,
    )
    return root, registry, connection


async def flood_through_a_fault(
    dsn: str,
    peer: Any,
    data_dir: Path,
    begin: Callable[[], Awaitable[None]],
    end: Callable[[], Awaitable[None]],
) -> int:
    """Join ``busy``, `begin` the database fault, have 1,500 lines said (more than the
    router's mailbox holds), keep the fault 8 s in all, check that the connection answered
    the server's pings throughout (1 s interval, 2 s timeout: it was never dropped), `end`
    the fault; the number of rows stored once the retry queue wrote what was left."""
    peer.add_account("bot", "secret")
    root, registry, connection = flood_tree(dsn, peer, data_dir)
    async with open_tree(root):
        await wait_until(lambda: connection.status is ConnectionStatus.JOINED, timeout=30)
        received = connection.received
        await begin()
        fault_began = trio.current_time()
        await trio.to_thread.run_sync(say_many, peer, "busy", 1500)
        # the reader took every line while the database was away
        await wait_until(lambda: connection.received - received >= 1500, timeout=60)
        # the fault's length, not a wait for something: it lasts 8 s in all
        await trio.sleep(max(0.0, fault_began + 8 - trio.current_time()))
        assert connection.reconnects == 0
        assert connection.status is ConnectionStatus.JOINED
        await end()
        await settled(registry.lookup("room:busy/event-router"))
        client = SqlClient(registry.lookup("sql-gateway"))

        async def stored() -> int:
            try:
                count: int = await client.query_value(
                    "SELECT count(*) FROM daz_chat_messages WHERE username = 'chatty'"
                )
            except CALL_FAILED:  # still reconnecting
                return 0
            return count if count >= 1500 else 0

        rows: int = await poll(stored, timeout=150, interval=0.2)  # the queue writes the rest
    assert connection.reconnects == 0
    return rows


@pytest.mark.slow
async def test_pings_are_answered_while_postgresql_stalls_under_a_flood(
    pg, cytube_peer, tmp_path
):
    """Every chat insert waits on a lock for 8 s while 1,500 lines come in: the connection
    keeps answering pings, the batches that time out go to the retry queue, and once the
    lock goes every line is stored once."""
    async with pg.trio_connection() as locker:

        async def begin() -> None:
            await locker.call(lock)

        async def end() -> None:
            assert await locker.call(insert_waiting_on_a_lock)  # it was stalled throughout
            await locker.call(unlock)

        rows = await flood_through_a_fault(pg.dsn, cytube_peer, tmp_path, begin, end)
    assert rows == 1500  # each line once (event ids are unique: more would be an error)


@pytest.mark.slow
async def test_pings_are_answered_while_postgresql_is_stopped_under_a_flood(
    own_server, cytube_peer, tmp_path
):
    """PostgreSQL is stopped for 8 s while 1,500 lines come in: the connection keeps
    answering pings, the lines go to the retry capture's spool, and once PostgreSQL is
    back every line is stored once."""

    async def migrated(conn: Any) -> None:
        await migrate(conn)

    async with trio_asyncio.open_loop():
        conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(own_server.url)
        try:
            await trio_asyncio.aio_as_trio(migrated)(conn)
        finally:
            await trio_asyncio.aio_as_trio(conn.close)()

        async def begin() -> None:
            await trio.to_thread.run_sync(own_server.handle.stop)

        async def end() -> None:
            await trio.to_thread.run_sync(own_server.handle.start)

        rows = await flood_through_a_fault(own_server.url, cytube_peer, tmp_path, begin, end)
    assert rows == 1500


# A few lines, each possibly told several times, live or as a history replay; PMs and
# channel events beside them, in any order.
_rows = st.lists(
    st.one_of(
        st.tuples(st.just("chat"), st.integers(0, 3), st.booleans()),
        st.tuples(st.just("pm"), st.integers(0, 2), st.just(False)),
        st.tuples(st.just("join"), st.integers(0, 2), st.just(False)),
    ),
    min_size=1,
    max_size=12,
)


def _row(kind: str, n: int, history: bool) -> LogRow:
    if kind == "chat":
        return chat_write(chat("ann", f"line {n}", time=T0 + n, history=history), T0 + 5)
    if kind == "pm":
        message = PrivateMessage(channel="test", username="ann", to="bob", msg=f"pm {n}", time=T0)
        return private_write(message, T0 + 5)
    return channel_event_write(
        UserJoined(channel="test", user=User(name=f"u{n}", rank=1)), T0 + n
    )


_TABLES = (
    "SELECT event_id, channel, username, message, sent_at, is_history, received_at, meta,"
    " raw_message FROM daz_chat_messages ORDER BY event_id",
    "SELECT event_id, channel, from_user, to_user, message, sent_at, received_at, raw_message"
    " FROM daz_private_messages ORDER BY event_id",
    "SELECT event_id, kind, channel, username, title, payload, at FROM daz_channel_events"
    " ORDER BY event_id",
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=_rows)
def test_a_batch_leaves_the_tables_as_the_one_row_inserts_in_order_would(pg, spec):
    """Whatever mix of rows (repeats, a live line and its replay in either order), one
    transaction of `batch_statements` leaves the three tables exactly as each row's own
    insert, run in order, does."""
    rows = [_row(*s) for s in spec]

    async def both(conn: Any) -> tuple[list[Any], list[Any]]:
        results = []
        for batched in (False, True):
            await conn.execute(
                "TRUNCATE daz_chat_messages, daz_private_messages, daz_channel_events"
            )
            async with conn.transaction():
                if batched:
                    for sql, args in batch_statements(rows):
                        await conn.execute(sql, *args)
                else:
                    for row in rows:
                        await conn.execute(row.sql, *row.args())
            results.append([[tuple(r) for r in await conn.fetch(q)] for q in _TABLES])
        return results[0], results[1]

    one_by_one, batched = pg.run(both)
    assert batched == one_by_one
