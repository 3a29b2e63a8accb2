"""The SQL gateway actor against real PostgreSQL, including a real outage."""

from __future__ import annotations

import asyncio.selector_events
import gc
import threading
import tracemalloc
from typing import Any

import pytest
import trio
from probes import listen

from daz_actors import (
    ChildSpec,
    EventBus,
    Published,
    Registry,
    Supervisor,
)
from daz_actors.runtime.breaker import BreakerState
from daz_actors.runtime.events import FailureEvent
from daz_actors.storage.errors import CircuitOpen, SqlError
from daz_actors.storage.sql_gateway import (
    ERROR_CLASSES,
    SqlGateway,
    SqlGatewayParams,
    error_class,
)
from daz_actors.storage.sql_messages import SqlClient
from daz_actors.testing import fast_policy, open_tree


def gateway_tree(dsn: str, **params: Any) -> tuple[Supervisor, EventBus, SqlGateway]:
    bus = EventBus()
    gateway = SqlGateway(SqlGatewayParams(**params), dsn)
    sup = Supervisor(
        "storage",
        [ChildSpec(name="sql-gateway", start=gateway)],
        policy=fast_policy(),
        registry=Registry(),
        bus=bus,
    )
    return sup, bus, gateway


async def test_query_execute_executemany_and_transaction(pg):
    """Every call kind works and a transaction commits or rolls back as a whole."""
    sup, _bus, gateway = gateway_tree(pg.dsn)
    async with open_tree(sup):
        db = SqlClient(sup.ref("sql-gateway"))
        await gateway.connected.wait()
        await db.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
        assert await db.execute("INSERT INTO t VALUES ($1, $2)", 1, "one") == "INSERT 0 1"
        await db.executemany("INSERT INTO t VALUES ($1, $2)", [(2, "two"), (3, "three")])
        rows = await db.query("SELECT id, name FROM t ORDER BY id")
        assert [(r["id"], r["name"]) for r in rows] == [(1, "one"), (2, "two"), (3, "three")]

        async def move(conn: Any) -> int:
            await conn.execute("DELETE FROM t WHERE id = 1")
            return int(await conn.fetchval("SELECT count(*) FROM t"))

        assert await db.transaction(move) == 2

        async def half_then_fail(conn: Any) -> None:
            await conn.execute("DELETE FROM t")
            await conn.execute("INSERT INTO t VALUES (2, 'duplicate-free?')")
            await conn.execute("INSERT INTO t VALUES (2, 'duplicate')")

        with pytest.raises(SqlError) as caught:
            await db.transaction(half_then_fail)
        assert caught.value.code == "23505"
        assert not caught.value.retryable
        assert await db.query_value("SELECT count(*) FROM t") == 2
        status = await db.status()
        assert status.connected
        assert status.breaker is BreakerState.CLOSED


async def test_permanent_error_publishes_a_failure_event_and_leaves_the_breaker_closed(pg):
    """A syntax error is permanent: a failure event with the correlation id, no breaker trip."""
    sup, bus, gateway = gateway_tree(pg.dsn, breaker_min_calls=1, breaker_failure_ratio=0.1)
    events = listen(bus, "sql.*")
    async with open_tree(sup):
        await gateway.connected.wait()
        db = SqlClient(sup.ref("sql-gateway"))
        for _ in range(3):
            with pytest.raises(SqlError) as caught:
                await db.execute("INSERTT INTO nowhere VALUES ($1)", 5)
            assert caught.value.code == "42601"
            assert caught.value.retryable is False
        published = await events.get()
        assert isinstance(published, Published)
        assert published.topic == "sql.exec.failed"
        event = published.event
        assert isinstance(event, FailureEvent)
        assert event.retryable is False
        assert event.event_type == "sql.exec"
        assert event.intent is None  # reported to the caller; nothing queued behind its back
        assert event.source == "sql-gateway"
        assert (await db.status()).breaker is BreakerState.CLOSED


async def test_a_call_past_its_timeout_fails_as_retryable(pg):
    """A statement running past the call timeout is cancelled and reported as retryable."""
    sup, _bus, gateway = gateway_tree(pg.dsn)
    async with open_tree(sup):
        await gateway.connected.wait()
        db = SqlClient(sup.ref("sql-gateway"))
        with trio.fail_after(30), pytest.raises(SqlError) as caught:
            await db.query("SELECT pg_sleep(60)", timeout=0.2)
        assert caught.value.retryable
        assert caught.value.code == "timeout"
        # the cancelled call's asyncio task has ended before the caller got the error, and
        # the statement was cancelled on the server, not left running
        assert gateway.asyncio_tasks() == 0
        running = "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'"
        with trio.fail_after(10):
            while await db.query_value(running + " AND state = 'active'"):  # noqa: ASYNC110
                await trio.sleep(0.01)  # the server takes the cancel request asynchronously
        assert await db.query_value("SELECT 41 + 1") == 42


def gateway_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "asyncio:sql-gateway"]


async def test_the_pool_loop_thread_lives_and_dies_with_the_gateway(pg, tmp_path):
    """The gateway runs its pool on an asyncio loop in a thread of its own: one while it
    runs, none once the tree has stopped (none leaked), and none left after a start whose
    connection attempts failed either."""
    assert gateway_threads() == []
    sup, _bus, gateway = gateway_tree(pg.dsn)
    async with open_tree(sup):
        await gateway.connected.wait()
        assert len(gateway_threads()) == 1
        db = SqlClient(sup.ref("sql-gateway"))
        assert await db.query_value("SELECT 1") == 1
    assert gateway_threads() == []
    assert gateway.asyncio_tasks() == 0
    unreachable = f"postgresql://postgres@/postgres?host={tmp_path}&port=1"
    sup, _bus, gateway = gateway_tree(unreachable, reconnect_initial=0.05, connect_timeout=1)
    async with open_tree(sup):
        db = SqlClient(sup.ref("sql-gateway"))
        with pytest.raises(SqlError):
            await db.query("SELECT 1")
        assert len(gateway_threads()) == 1
    assert gateway_threads() == []


def _blocks_from_asyncio_reads(snapshot: tracemalloc.Snapshot) -> int:
    """Blocks allocated where asyncio hands received bytes to asyncpg's protocol (which
    builds the rows there), still alive."""
    return sum(
        1
        for trace in snapshot.traces
        if trace.traceback[-1].filename == asyncio.selector_events.__file__
    )


async def test_rows_freed_on_the_trio_side_are_not_kept(pg):
    """Rows are built on the gateway's asyncio thread and freed on trio's; asyncpg keeps
    freed `Record`s on a free list per thread (2,000 of each length), which the trio
    thread's would only fill. The gateway's rows are of a subclass asyncpg keeps none of:
    a thousand rows read and dropped leave nothing behind."""
    sup, _bus, gateway = gateway_tree(pg.dsn)
    async with open_tree(sup):
        db = SqlClient(sup.ref("sql-gateway"))
        await gateway.connected.wait()
        sql = "SELECT n FROM generate_series(1, 10) AS n"
        assert len(await db.query(sql)) == 10  # the statement prepared and cached first
        tracemalloc.start(1)
        try:
            gc.collect()
            before = _blocks_from_asyncio_reads(tracemalloc.take_snapshot())
            for _ in range(100):
                rows = await db.query(sql)
                assert [r["n"] for r in rows] == list(range(1, 11))
            del rows
            gc.collect()
            after = _blocks_from_asyncio_reads(tracemalloc.take_snapshot())
        finally:
            tracemalloc.stop()
    assert after - before < 100, f"{after - before} blocks of 1,000 rows read are still kept"


async def test_gateway_is_ready_before_the_database_is_reachable(tmp_path):
    """With no server, calls fail fast as retryable instead of hanging or crashing the tree."""
    dsn = f"postgresql://postgres@/postgres?host={tmp_path}&port=1"
    sup, _bus, _gateway = gateway_tree(dsn, reconnect_initial=0.05, connect_timeout=1)
    async with open_tree(sup):
        db = SqlClient(sup.ref("sql-gateway"))
        with trio.fail_after(30):
            for _ in range(6):
                with pytest.raises(SqlError) as caught:
                    await db.query("SELECT 1")
                assert caught.value.retryable
        assert isinstance(caught.value, CircuitOpen)
        assert sup.which_children()[0].restarts == 0


async def test_outage_breaker_opens_and_closes_and_nothing_committed_is_lost(own_server):
    """Stop PostgreSQL mid-use and start it again: classified errors, breaker round trip,
    recovery without any restart, and every committed row still there."""
    sup, bus, gateway = gateway_tree(
        own_server.url,
        breaker_min_calls=3,
        breaker_failure_ratio=0.5,
        breaker_open_seconds=0.3,
        reconnect_initial=0.05,
        call_timeout=5,
    )
    events = listen(bus, "sql.*")
    async with open_tree(sup):
        await gateway.connected.wait()
        db = SqlClient(sup.ref("sql-gateway"))
        await db.execute("CREATE TABLE kept (n int)")
        await db.executemany("INSERT INTO kept VALUES ($1)", [(n,) for n in range(100)])

        await trio.to_thread.run_sync(own_server.handle.stop)
        errors: list[SqlError] = []
        with trio.fail_after(60):
            while (await db.status()).breaker is not BreakerState.OPEN:
                with pytest.raises(SqlError) as caught:
                    await db.execute("INSERT INTO kept VALUES (-1)")
                errors.append(caught.value)
        assert errors
        assert all(e.retryable for e in errors), [(e.code, str(e)) for e in errors]
        with pytest.raises(CircuitOpen):
            await db.query("SELECT 1")
        failure = (await events.get()).event
        assert failure.retryable
        assert failure.event_type == "sql.exec"
        assert failure.intent is None

        await trio.to_thread.run_sync(own_server.handle.start)
        recovery_errors: list[SqlError] = []
        with trio.fail_after(60):
            while True:
                try:
                    count = await db.query_value("SELECT count(*) FROM kept WHERE n >= 0")
                    break
                except SqlError as exc:
                    recovery_errors.append(exc)
                    await trio.sleep(0.05)
        assert all(e.retryable for e in recovery_errors)
        assert count == 100
        status = await db.status()
        assert status.breaker is BreakerState.CLOSED
        assert status.breaker_transitions >= 3  # closed -> open -> half_open -> closed
        assert sup.which_children()[0].incarnation == 1


async def test_call_latency_and_errors_by_class_are_measured(pg):
    """With a metrics registry, each call's duration is observed and errors are counted by
    a closed set of classes (SQLSTATE classes, the gateway's own codes, the client's side)
    and retryability."""
    from prometheus_client import CollectorRegistry

    metrics = CollectorRegistry()
    bus = EventBus()
    gateway = SqlGateway(SqlGatewayParams(), pg.dsn, metrics=metrics)
    sup = Supervisor(
        "storage",
        [ChildSpec(name="sql-gateway", start=gateway)],
        policy=fast_policy(),
        registry=Registry(),
        bus=bus,
    )

    def errors(error_class: str, retryable: str) -> float | None:
        labels = {"error_class": error_class, "retryable": retryable}
        return metrics.get_sample_value("daz_sql_errors_total", labels)

    # a closed set of classes, every series there (at 0) before any error
    assert [errors(c, r) for c in ERROR_CLASSES for r in ("true", "false")] == [0.0] * (
        2 * len(ERROR_CLASSES)
    )
    async with open_tree(sup):
        await gateway.connected.wait()
        db = SqlClient(sup.ref("sql-gateway"))
        await db.query("SELECT 1")
        await db.query("SELECT 2")
        with pytest.raises(SqlError):
            await db.execute("INSERTT nothing")
        with pytest.raises(SqlError):  # the driver's own error: wrong number of arguments
            await db.query("SELECT $1::int", 1, 2)
        with pytest.raises(SqlError):  # SQLSTATE 2201E, class 22: counted apart
            await db.query("SELECT ln(0)")
        with pytest.raises(SqlError):  # SQLSTATE P0001 (a RAISE): class P0 is not
            await db.execute("DO $$ BEGIN RAISE EXCEPTION 'no'; END $$")
    count = metrics.get_sample_value("daz_sql_call_seconds_count", {"kind": "query"})
    assert count == 4  # two and the failed two (the client's error is one too)
    assert metrics.get_sample_value("daz_sql_call_seconds_count", {"kind": "execute"}) == 2
    assert errors("42", "false") == 1
    assert errors("client", "true") == 1
    assert errors("22", "false") == 1
    assert errors("sqlstate_other", "false") == 1
    samples = [s for m in metrics.collect() if m.name == "daz_sql_errors" for s in m.samples]
    assert {s.labels["error_class"] for s in samples} == set(ERROR_CLASSES)


@pytest.mark.parametrize(
    ("code", "label"),
    [
        ("42P01", "42"),
        ("08006", "08"),
        ("57P01", "57"),
        ("XX000", "sqlstate_other"),
        ("timeout", "timeout"),
        ("circuit_open", "circuit_open"),
        ("database_unavailable", "database_unavailable"),
        ("InterfaceError", "client"),
        ("ConnectionRefusedError", "client"),
        (None, "unknown"),
    ],
)
def test_error_codes_map_to_the_closed_set_of_classes(code, label):
    assert error_class(code) == label
    assert label in ERROR_CLASSES


async def test_a_broken_client_protocol_state_is_a_failed_call_not_a_crash(pg):
    """asyncpg's InternalClientError (seen in the soak when PostgreSQL shut down under a
    write: 'cannot switch to state 12; another operation (2) is in progress') reaches the
    caller as a retryable SqlError, like a lost connection, and counts as a failure for
    the breaker; before, it passed through raw and crashed the caller (the event router;
    a retry worker would have left its items leased until the lock timeout)."""
    import asyncpg

    sup, _bus, gateway = gateway_tree(pg.dsn, breaker_min_calls=1, breaker_failure_ratio=0.5)
    async with open_tree(sup):
        await gateway.connected.wait()
        db = SqlClient(sup.ref("sql-gateway"))

        async def broken(pool: Any) -> None:
            async with pool.acquire() as conn:
                await conn.execute("SELECT 1")
                raise asyncpg.InternalClientError(
                    "cannot switch to state 12; another operation (2) is in progress"
                )

        with pytest.raises(SqlError) as caught:
            await db.run(broken, name="write")
        assert caught.value.retryable
        assert caught.value.code == "InternalClientError"
        assert isinstance(caught.value.__cause__, asyncpg.InternalClientError)
        assert gateway.failures == 1
        assert (await db.status()).breaker is BreakerState.OPEN  # one failure of one call
