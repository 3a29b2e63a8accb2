"""The retry subsystem end to end: failure events become queue items that workers retry."""

from __future__ import annotations

import contextlib
import datetime
import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
from probes import listen
from retry_trees import fetchval, gone, item, item_in, retry_tree

from daz_actors import (
    Actor,
    ChildSpec,
    FailureEvent,
    actor_factory,
)
from daz_actors.app.handlers import default_handlers
from daz_actors.retry.capture import DrainSpool, ScheduleRetry
from daz_actors.retry.handlers import (
    AttemptContext,
    HandlerRegistry,
    ItemReleased,
    PermanentError,
)
from daz_actors.runtime.events import Intent
from daz_actors.storage import queue
from daz_actors.storage.queue_types import NewItem, QueueItem, RetryStatus
from daz_actors.testing import open_tree, poll, wait_until


def failure(event_type: str = "test.flaky", **kw: Any) -> FailureEvent:
    return FailureEvent(
        topic="test.op.failed",
        source="test",
        operation="default",
        event_type=event_type,
        error="boom",
        retryable=True,
        intent=Intent(name=event_type, version=1, args={"n": 1}),
        **kw,
    )


def scheduled(metrics: Any) -> dict[tuple[str, str], float]:
    """``daz_retry_scheduled_total`` on the registry `metrics`: (event_type, outcome) -> n,
    for the series counted above 0 (the handlers' event types have theirs from the start)."""
    return {
        (s.labels["event_type"], s.labels["outcome"]): s.value
        for family in metrics.collect()
        for s in family.samples
        if s.name == "daz_retry_scheduled_total" and s.value
    }


def drained(metrics: Any) -> dict[str, float]:
    """``daz_retry_spool_drained_total`` on the registry `metrics`: event_type -> n, above 0."""
    return {
        s.labels["event_type"]: s.value
        for family in metrics.collect()
        for s in family.samples
        if s.name == "daz_retry_spool_drained_total" and s.value
    }


async def test_the_handlers_event_types_have_their_capture_series_from_the_start(pg):
    """Before anything fails, every handler's event type has its scheduled series (each
    outcome) and its drained series at 0: the first outage adds no series to /metrics."""
    from daz_actors.ops.metrics import Metrics

    metrics = Metrics().registry
    handlers = HandlerRegistry()

    @handlers.register("test.a")
    async def a(item: QueueItem, ctx: AttemptContext) -> None:
        pass

    tree = retry_tree(pg.dsn, handlers, metrics_registry=metrics)
    async with open_tree(tree.sup):
        await tree.gateway.connected.wait()
        series = {
            (s.name, tuple(sorted(s.labels.items())))
            for family in metrics.collect()
            for s in family.samples
            if s.name in ("daz_retry_scheduled_total", "daz_retry_spool_drained_total")
        }
    assert series == {
        *(
            ("daz_retry_scheduled_total", (("event_type", "test.a"), ("outcome", o)))
            for o in ("queued", "duplicate", "spooled", "refused")
        ),
        ("daz_retry_spool_drained_total", (("event_type", "test.a"),)),
    }


async def test_failure_event_is_retried_until_it_succeeds_with_its_history(pg):
    """A retryable failure event is queued once, retried on schedule and completed; the
    second publication is counted as a duplicate in ``daz_retry_scheduled_total``."""
    from daz_actors.ops.metrics import Metrics

    metrics = Metrics().registry
    handlers = HandlerRegistry()
    calls: list[tuple[str, int, str | None]] = []

    @handlers.register("test.flaky")
    async def flaky(item: QueueItem, ctx: AttemptContext) -> None:
        calls.append((ctx.event_id, ctx.attempt, ctx.correlation_id))
        if ctx.attempt < 3:
            raise ConnectionError("not yet")

    tree = retry_tree(pg.dsn, handlers, metrics_registry=metrics)
    event = failure()
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        assert scheduled(metrics) == {}
        await tree.bus.publish(event.topic, event)
        await tree.bus.publish(event.topic, event)  # published twice, queued once
        # a round trip through the capture: both publications have been handled
        assert await tree.registry.lookup("retry-capture").ask(DrainSpool())
        assert scheduled(metrics) == {("test.flaky", "queued"): 1, ("test.flaky", "duplicate"): 1}
        await wait_until(lambda: len(calls) == 3, timeout=30)
        row = await item_in(db, event.event_id, RetryStatus.COMPLETED)
        assert calls == [(event.event_id, n, event.correlation_id) for n in (1, 2, 3)]
        assert row.correlation_id == event.correlation_id
        assert row.retry_count == 2
        history = await db.call(queue.history, row.id)
        assert [h.outcome for h in history] == ["failed", "failed", "completed"]
        count = await fetchval(
            db, "SELECT count(*) FROM daz_retry_queue WHERE event_id = $1", event.event_id
        )
        assert count == 1


async def test_exhausted_item_dead_letters_and_requeue_completes_it(pg):
    """An item that keeps failing lands in dead letter; requeued, it completes."""
    handlers = HandlerRegistry()
    healthy = trio.Event()
    attempts: list[int] = []

    @handlers.register("test.flaky")
    async def flaky(item: QueueItem, ctx: AttemptContext) -> None:
        attempts.append(ctx.attempt)
        if not healthy.is_set():
            raise ConnectionError("still down")

    tree = retry_tree(pg.dsn, handlers)
    event = failure()
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        await tree.bus.publish(event.topic, event)
        row = await item_in(db, event.event_id, RetryStatus.DEAD_LETTER)
        assert attempts == [1, 2, 3]  # max_retries=2: the first attempt and two retries
        healthy.set()
        assert await db.call(queue.requeue_dead_letter, row.id)
        row = await item_in(db, event.event_id, RetryStatus.COMPLETED)
        assert len(attempts) == 4


async def test_permanent_errors_and_unknown_types_dead_letter_at_once(pg):
    """PermanentError and an event type without a handler go straight to dead letter."""
    handlers = HandlerRegistry()

    @handlers.register("test.bad")
    async def bad(item: QueueItem, ctx: AttemptContext) -> None:
        raise PermanentError("this can never work")

    tree = retry_tree(pg.dsn, handlers)
    bad_event, unknown_event = failure("test.bad"), failure("test.nobody-handles-this")
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        for event in (bad_event, unknown_event):
            await tree.bus.publish(event.topic, event)
        rows = [
            await item_in(db, e.event_id, RetryStatus.DEAD_LETTER)
            for e in (bad_event, unknown_event)
        ]
        assert [r.last_error_code for r in rows] == ["permanent", "unknown_event_type"]
        assert [r.retry_count for r in rows] == [1, 1]


async def test_attempt_timeout_cancels_the_handler_and_fails_retryable(pg):
    """A handler running past the attempt timeout is cancelled; the attempt is retryable."""
    handlers = HandlerRegistry()
    cancelled: list[int] = []

    @handlers.register("test.slow")
    async def slow(item: QueueItem, ctx: AttemptContext) -> None:
        if ctx.attempt == 1:
            try:
                await trio.sleep_forever()
            finally:
                cancelled.append(ctx.attempt)

    tree = retry_tree(pg.dsn, handlers)
    new = NewItem(event_id="slow-1", event_type="test.slow", attempt_timeout=0.3, retry_delay=0.05)
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        assert await tree.registry.lookup("retry-capture").ask(ScheduleRetry(item=new))
        row = await item_in(db, "slow-1", RetryStatus.COMPLETED)
        assert cancelled == [1]
        history = await db.call(queue.history, row.id)
        assert history[0].error_code == "attempt_timeout"


async def test_checkpoint_lets_the_next_attempt_resume_after_the_last_step(pg):
    """A multi-step handler does not redo a step recorded by a failed earlier attempt."""
    handlers = HandlerRegistry()
    runs: list[str] = []

    @handlers.register("test.steps")
    async def steps(item: QueueItem, ctx: AttemptContext) -> None:
        for step in ("fetch", "transform", "store"):
            if ctx.checkpoint.done(step):
                continue
            runs.append(step)
            if step == "transform" and ctx.attempt == 1:
                raise ConnectionError("lost it mid-way")
            await ctx.checkpoint.mark(step)

    tree = retry_tree(pg.dsn, handlers)
    new = NewItem(event_id="steps-1", event_type="test.steps", retry_delay=0.05)
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        await tree.registry.lookup("retry-capture").ask(ScheduleRetry(item=new))
        row = await item_in(db, "steps-1", RetryStatus.COMPLETED)
    assert runs == ["fetch", "transform", "transform", "store"]
    assert row.checkpoint == {"steps": ["fetch", "transform", "store"]}


async def test_notify_wakes_workers_well_before_the_poll(pg):
    """With a poll interval of an hour, NOTIFY on enqueue still starts the work at once."""
    handlers = HandlerRegistry()
    done = trio.Event()

    @handlers.register("test.quick")
    async def quick(item: QueueItem, ctx: AttemptContext) -> None:
        done.set()

    tree = retry_tree(pg.dsn, handlers, poll_interval=3600.0)
    dispatcher = tree.retry.which_children()[-1]
    assert dispatcher.name == "retry-dispatcher"
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        listener = tree.retry._slot("retry-dispatcher").spec.start
        await wait_until(lambda: listener.listening, timeout=30)
        await db.call(queue.enqueue, NewItem(event_id="quick-1", event_type="test.quick"))
        with trio.fail_after(30):  # far below the hour-long poll interval
            await done.wait()
        assert listener.notifications >= 1


async def test_a_notification_wakes_as_many_workers_as_its_items_need(pg):
    """One enqueued item wakes one worker (not all four to race for it); 25 items in one
    statement (batch 10) wake three."""
    handlers = HandlerRegistry()
    seen: list[str] = []

    @handlers.register("test.quick")
    async def quick(item: QueueItem, ctx: AttemptContext) -> None:
        seen.append(item.event_id)

    tree = retry_tree(pg.dsn, handlers, poll_interval=3600.0, worker_count=4, batch_size=10)
    async with pg.trio_connection() as db, open_tree(tree.sup):
        listener = tree.retry._slot("retry-dispatcher").spec.start
        await wait_until(lambda: listener.listening, timeout=30)
        # the start-up and the first LISTEN wake every worker; let them find nothing
        await wait_until(lambda: listener.wakeups >= 2, timeout=30)
        before = listener.wakes_sent
        await db.call(queue.enqueue, NewItem(event_id="one-1", event_type="test.quick"))
        await wait_until(lambda: "one-1" in seen, timeout=30)
        assert listener.wakes_sent - before == 1
        before = listener.wakes_sent
        many = [NewItem(event_id=f"many-{n}", event_type="test.quick") for n in range(25)]
        await db.call(queue.enqueue_many, many)
        await wait_until(lambda: len(seen) == 26, timeout=30)
        assert listener.wakes_sent - before == 3


async def test_poll_picks_up_work_when_notifications_are_lost(pg, tmp_path):
    """With no LISTEN connection at all, the poll interval still gets items handled."""
    handlers = HandlerRegistry()
    done = trio.Event()

    @handlers.register("test.quick")
    async def quick(item: QueueItem, ctx: AttemptContext) -> None:
        done.set()

    dead = f"postgresql://postgres@/postgres?host={tmp_path}&port=1"
    tree = retry_tree(pg.dsn, handlers, poll_interval=0.3, listen_dsn=dead)
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        listener = tree.retry._slot("retry-dispatcher").spec.start
        await db.call(queue.enqueue, NewItem(event_id="quick-2", event_type="test.quick"))
        with trio.fail_after(30):
            await done.wait()
        assert not listener.listening
        assert listener.notifications == 0


async def test_killed_listener_connection_reconnects(pg):
    """Terminating the LISTEN backend makes the dispatcher reconnect and listen again."""
    tree = retry_tree(pg.dsn, HandlerRegistry(), poll_interval=3600.0)
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        listener = tree.retry._slot("retry-dispatcher").spec.start
        await wait_until(lambda: listener.listening, timeout=30)
        killed = await fetchval(
            db,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
        )
        assert killed == 1
        await wait_until(lambda: not listener.listening, timeout=30)
        await wait_until(lambda: listener.listening, timeout=30)


async def test_stopping_hands_unfinished_items_back_without_counting_them(pg):
    """A worker stopped mid-attempt past its shutdown timeout hands its items back."""
    handlers = HandlerRegistry()
    started = trio.Event()

    @handlers.register("test.stuck")
    async def stuck(item: QueueItem, ctx: AttemptContext) -> None:
        started.set()
        await trio.sleep_forever()

    tree = retry_tree(pg.dsn, handlers, worker_count=1, worker_shutdown_timeout=0.2)
    items = [NewItem(event_id=f"stuck-{n}", event_type="test.stuck", attempt_timeout=600)
             for n in range(3)]  # fmt: skip
    async with pg.trio_connection() as db:
        async with open_tree(tree.sup):
            await tree.gateway.connected.wait()
            await db.call(queue.enqueue_many, items)
            with trio.fail_after(30):
                await started.wait()
        rows = [await item(db, i.event_id) for i in items]
        assert [r.status for r in rows] == [RetryStatus.PENDING] * 3
        assert [r.retry_count for r in rows] == [0, 0, 0]
        assert all(r.locked_by is None for r in rows)
        history = await db.call(queue.history, rows[0].id)
        assert [h.outcome for h in history] == ["released"]


async def test_non_retryable_and_query_failures_are_not_queued(pg):
    """Permanent failures and failed reads are not queued (nothing could redo them), nor
    counted as scheduled; an item that can never be queued is counted as refused."""
    from daz_actors.ops.metrics import Metrics

    metrics = Metrics().registry
    tree = retry_tree(pg.dsn, HandlerRegistry(), metrics_registry=metrics)
    permanent = attrs.evolve(failure(), retryable=False)
    read = failure("sql.query")
    unserialisable = NewItem(event_id="bad", event_type="t.bad", event_data={"x": {1}})
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        capture = tree.registry.lookup("retry-capture")
        for event in (permanent, read):
            await tree.bus.publish(event.topic, event)
        queued = await capture.ask(ScheduleRetry(item=NewItem(event_id="x", event_type="t")))
        assert queued is True
        assert await capture.ask(ScheduleRetry(item=unserialisable)) is False
        assert await item(db, permanent.event_id) is None
        assert await item(db, read.event_id) is None
        assert await item(db, "bad") is None
    assert scheduled(metrics) == {("t", "queued"): 1, ("t.bad", "refused"): 1}


@pytest.mark.parametrize("count", [25])
async def test_many_items_are_each_completed_exactly_once(pg, count):
    """Several workers over many items: every item completed, each handled once."""
    handlers = HandlerRegistry()
    seen: list[str] = []

    @handlers.register("test.many")
    async def many(item: QueueItem, ctx: AttemptContext) -> None:
        seen.append(ctx.event_id)

    tree = retry_tree(pg.dsn, handlers, worker_count=3, batch_size=4)
    items = [NewItem(event_id=f"m-{n}", event_type="test.many") for n in range(count)]
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        await db.call(queue.enqueue_many, items)
        await wait_until(lambda: len(seen) >= count, timeout=30)
        for i in items:
            await item_in(db, i.event_id, RetryStatus.COMPLETED)
    assert sorted(seen) == sorted(i.event_id for i in items)


@pytest.fixture
def migrated_server(own_server):
    """The test's own PostgreSQL with the schema migrated."""
    import asyncio

    from daz_actors.app.runner import _apply_migrations

    asyncio.run(_apply_migrations(own_server.url))
    return own_server


async def test_failures_during_an_outage_are_spooled_and_drained_at_the_next_start(
    migrated_server, data_dir
):
    """With PostgreSQL down, failure events go to the spool; a tree started after the outage
    moves them into the queue in order and they are retried: nothing accepted is lost."""
    handlers = HandlerRegistry()
    handled: list[str] = []

    @handlers.register("test.flaky")
    async def flaky(item: QueueItem, ctx: AttemptContext) -> None:
        handled.append(ctx.event_id)

    from daz_actors.ops.metrics import Metrics

    events = [failure() for _ in range(5)]
    metrics = Metrics().registry
    tree = retry_tree(migrated_server.url, handlers, metrics_registry=metrics)
    async with open_tree(tree.sup):
        await tree.gateway.connected.wait()
        await trio.to_thread.run_sync(migrated_server.handle.stop)
        for event in events:
            await tree.bus.publish(event.topic, event)
        capture = tree.registry.lookup("retry-capture")
        # a round trip through the capture: every event before it has been handled
        assert await capture.ask(ScheduleRetry(item=NewItem(event_id="last", event_type="t")))
        spool_file = data_dir / "retry-spool"
        assert spool_file.stat().st_size > 6 * 100  # six records in the spool
    assert scheduled(metrics) == {("test.flaky", "spooled"): 5, ("t", "spooled"): 1}
    assert drained(metrics) == {}  # the database never came back for this process
    await trio.to_thread.run_sync(migrated_server.handle.start)

    metrics = Metrics().registry  # the next process's own registry
    tree = retry_tree(migrated_server.url, handlers, metrics_registry=metrics)  # "the next start"
    async with own_connection(migrated_server.url) as db, open_tree(tree.sup):
        for event in events:
            await item_in(db, event.event_id, RetryStatus.COMPLETED)
        ids = [(await item(db, e.event_id)).id for e in events]
        assert ids == sorted(ids)  # drained in the order they were spooled
        # a round trip through the capture: the drain that queued them has finished
        assert await tree.registry.lookup("retry-capture").ask(DrainSpool())
    assert sorted(handled) == sorted(e.event_id for e in events)
    assert drained(metrics) == {"test.flaky": 5, "t": 1}
    assert scheduled(metrics) == {}  # draining is not scheduling: counted once, when spooled


@contextlib.asynccontextmanager
async def own_connection(dsn: str) -> AsyncIterator[Any]:
    import asyncpg
    import trio_asyncio
    from database import TrioConnection

    async with trio_asyncio.open_loop():
        conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(dsn)
        try:
            yield TrioConnection(conn)
        finally:
            await trio_asyncio.aio_as_trio(conn.close)()


async def test_handler_errors_are_classified_by_the_configured_rules(pg):
    """A message pattern configured as permanent dead-letters at once; a retryable one retries."""
    handlers = HandlerRegistry()

    @handlers.register("test.rules")
    async def rules(item: QueueItem, ctx: AttemptContext) -> None:
        if item.event_id == "quota" or ctx.attempt == 1:
            raise ValueError(f"{item.event_id}: quota exceeded" if item.event_id == "quota"
                             else "please try again")  # fmt: skip

    tree = retry_tree(
        pg.dsn,
        handlers,
        permanent_patterns=("quota exceeded",),
        retryable_patterns=("try again",),
    )
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        capture = tree.registry.lookup("retry-capture")
        for event_id in ("quota", "later"):
            new = NewItem(event_id=event_id, event_type="test.rules", retry_delay=0.05)
            await capture.ask(ScheduleRetry(item=new))
        quota = await item_in(db, "quota", RetryStatus.DEAD_LETTER)
        later = await item_in(db, "later", RetryStatus.COMPLETED)
    assert quota.retry_count == 1
    assert later.retry_count == 1  # ValueError alone would be permanent; the pattern retried it


async def test_periodic_cleanup_removes_finished_items_past_the_retention(pg):
    """The dispatcher's cleanup deletes completed items older than the retention period."""
    tree = retry_tree(pg.dsn, HandlerRegistry(), cleanup_interval=0.2, retention_days=1.0)
    async with pg.trio_connection() as db:
        await db.call(queue.enqueue, NewItem(event_id="old", event_type="t"))
        await db.call(queue.enqueue, NewItem(event_id="new", event_type="t"))
        await fetchval(
            db,
            "UPDATE daz_retry_queue SET status = 'completed', completed_at = now() - $1::interval,"
            " updated_at = now() - $1::interval RETURNING 1",
            datetime.timedelta(days=2),
        )
        await fetchval(db, "UPDATE daz_retry_queue SET updated_at = now() WHERE event_id = 'new'")
        async with open_tree(tree.sup):
            await poll(lambda: gone(db, "old"), timeout=30)
        assert await item(db, "new") is not None


async def test_the_cleanup_runs_only_while_the_singleton_gate_lets_this_process(pg):
    """Where several processes share the database, the cleanup runs only in the one its
    gate lets run ``retry.cleanup`` (the holder of that singleton lease): here it skips
    runs while the gate says no, and cleans once it says yes."""
    allowed: list[str] = []
    asked: list[str] = []

    def gate(job: str) -> bool:
        asked.append(job)
        return job in allowed

    tree = retry_tree(
        pg.dsn, HandlerRegistry(), cleanup_interval=0.05, retention_days=1.0, singleton_gate=gate
    )
    async with pg.trio_connection() as db:
        await db.call(queue.enqueue, NewItem(event_id="old", event_type="t"))
        await fetchval(
            db,
            "UPDATE daz_retry_queue SET status = 'completed', completed_at = now() - $1::interval,"
            " updated_at = now() - $1::interval RETURNING 1",
            datetime.timedelta(days=2),
        )
        async with open_tree(tree.sup):

            async def skipped_a_few() -> bool:
                return len(asked) >= 5

            await poll(skipped_a_few, timeout=30)
            assert set(asked) == {"retry.cleanup"}
            assert await item(db, "old") is not None
            allowed.append("retry.cleanup")
            await poll(lambda: gone(db, "old"), timeout=30)


async def test_a_failed_gateway_write_is_reported_to_its_caller_and_not_queued(pg):
    """The gateway queues nothing behind its caller's back: a write that fails retryably
    raises to its caller and publishes an event for observation, with no intent, so the
    retry queue stays empty (issue 11: no SQL text is ever queued)."""
    from daz_actors import SqlClient, SqlError

    tree = retry_tree(pg.dsn, default_handlers())
    failing = "DO $$ BEGIN RAISE EXCEPTION 'busy' USING ERRCODE = '40001'; END $$"
    async with pg.trio_connection() as db, open_tree(tree.sup):
        seen = listen(tree.bus, "sql.exec.failed")  # subscribed after the capture
        await tree.gateway.connected.wait()
        client = SqlClient(tree.registry.lookup("sql-gateway"))
        with pytest.raises(SqlError) as caught:
            await client.execute(failing)
        assert caught.value.retryable
        with trio.fail_after(10):
            event = (await seen.get()).event
        assert event.intent is None
        # the capture got the event before our listener did, and answers in order: once it
        # has queued a later item, it has handled the failure event
        capture = tree.registry.lookup("retry-capture")
        assert await capture.ask(ScheduleRetry(item=NewItem(event_id="after", event_type="t")))
        rows = await fetchval(db, "SELECT count(*) FROM daz_retry_queue WHERE event_id <> 'after'")
    assert rows == 0


async def test_items_whose_lease_could_expire_in_the_batch_are_handed_back_first(pg):
    """A worker does not start an item whose lease could run out mid-attempt: it hands it
    back and acquires it afresh, so no lock expires and nothing runs twice. (Each item may
    take its whole lease, 30 s: once any time has passed since the batch was acquired, the
    next item could outlive its lease, whatever the machine's speed.)"""
    handlers = HandlerRegistry()
    runs: list[str] = []

    @handlers.register("test.slowish")
    async def slowish(item: QueueItem, ctx: AttemptContext) -> None:
        runs.append(ctx.event_id)

    tree = retry_tree(pg.dsn, handlers, worker_count=1, batch_size=3, lock_timeout=30.0)
    items = [NewItem(event_id=f"s-{n}", event_type="test.slowish", attempt_timeout=30.0)
             for n in range(3)]  # fmt: skip
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        await db.call(queue.enqueue_many, items)
        for new in items:
            await item_in(db, new.event_id, RetryStatus.COMPLETED)
        outcomes = await db.call(
            lambda conn: conn.fetch("SELECT outcome FROM daz_retry_history ORDER BY id")
        )
    assert sorted(runs) == ["s-0", "s-1", "s-2"]
    # one per batch ran; the other two, then the last one, were handed back unstarted
    assert sorted(r["outcome"] for r in outcomes) == ["completed"] * 3 + ["released"] * 3


async def test_the_correlation_id_follows_the_operation_through_every_log_record(pg, caplog):
    """One correlation id is on the failure's log record, the queueing, each failed attempt
    and the success, as a structured field."""
    import logging

    handlers = HandlerRegistry()

    @handlers.register("test.flaky")
    async def flaky(item: QueueItem, ctx: AttemptContext) -> None:
        if ctx.attempt < 2:
            raise ConnectionError("not yet")

    tree = retry_tree(pg.dsn, handlers)
    event = failure()
    caplog.set_level(logging.INFO, logger="daz_actors")
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        await tree.bus.publish(event.topic, event)
        await item_in(db, event.event_id, RetryStatus.COMPLETED)
    mine = [
        r.getMessage()
        for r in caplog.records
        if getattr(r, "correlation_id", None) == event.correlation_id
    ]
    assert any("queued" in m for m in mine), mine
    assert any("attempt 1 failed" in m for m in mine), mine
    assert any("succeeded on attempt 2" in m for m in mine), mine


async def test_retry_metrics_move_when_attempts_happen(pg):
    """The /metrics counters of retry attempts, successes and failures follow the workers."""
    from prometheus_client.parser import text_string_to_metric_families

    from daz_actors.ops.health import _RootView
    from daz_actors.ops.metrics import Metrics, Sources, snapshot

    handlers = HandlerRegistry()

    @handlers.register("test.flaky")
    async def flaky(item: QueueItem, ctx: AttemptContext) -> None:
        if ctx.attempt < 3:
            raise ConnectionError("not yet")

    tree = retry_tree(pg.dsn, handlers)
    event = failure()

    async def values() -> dict[str, float]:
        snap = await snapshot(Sources(tree=_RootView(tree.sup)))
        text = Metrics().render(snap).decode()
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.startswith("daz_retry_")
        }

    async with pg.trio_connection() as db, open_tree(tree.sup):
        before = await values()
        await tree.gateway.connected.wait()
        await tree.bus.publish(event.topic, event)
        await item_in(db, event.event_id, RetryStatus.COMPLETED)

        # the completion commits before the worker counts its success: wait for the count
        async def counted() -> dict[str, float] | None:
            now = await values()
            return now if now["daz_retry_succeeded_total"] >= 1 else None

        after = await poll(counted)
    assert before["daz_retry_attempts_total"] == 0
    assert after["daz_retry_attempts_total"] == 3
    assert after["daz_retry_failed_total"] == 2
    assert after["daz_retry_succeeded_total"] == 1
    assert after["daz_retry_dead_lettered_total"] == 0


async def test_attempt_durations_are_observed_by_event_type_and_outcome(pg):
    """Each handler attempt is observed in the duration histogram under its outcome, on the
    process's metrics registry, which every worker (and a second retry subtree) shares."""
    from prometheus_client.parser import text_string_to_metric_families

    from daz_actors.ops.health import _RootView
    from daz_actors.ops.metrics import Metrics, Sources, snapshot

    metrics = Metrics()
    handlers = HandlerRegistry()

    @handlers.register("test.slow")
    async def slow(item: QueueItem, ctx: AttemptContext) -> None:
        if ctx.attempt == 1:
            await trio.sleep_forever()  # cancelled by the attempt timeout
        if ctx.attempt == 2:
            raise ConnectionError("not yet")

    def observed(outcome: str, suffix: str = "count") -> float | None:
        return metrics.registry.get_sample_value(
            f"daz_retry_attempt_duration_seconds_{suffix}",
            {"event_type": "test.slow", "outcome": outcome},
        )

    tree = retry_tree(pg.dsn, handlers, metrics_registry=metrics.registry)
    retry_tree(pg.dsn, handlers, metrics_registry=metrics.registry)  # registered once only
    new = NewItem(event_id="slow-1", event_type="test.slow", attempt_timeout=0.3, retry_delay=0.05)
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        assert observed("timed_out") is None
        assert await tree.registry.lookup("retry-capture").ask(ScheduleRetry(item=new))
        await item_in(db, "slow-1", RetryStatus.COMPLETED)
        text = metrics.render(await snapshot(Sources(tree=_RootView(tree.sup)))).decode()
    assert (observed("timed_out"), observed("failed"), observed("succeeded")) == (1, 1, 1)
    timed_out = observed("timed_out", "sum")
    assert timed_out is not None
    assert timed_out >= 0.3
    rendered = {
        (s.name, s.labels.get("outcome"), s.labels.get("le"))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert ("daz_retry_attempt_duration_seconds_bucket", "timed_out", "+Inf") in rendered
    assert ("daz_retry_attempt_duration_seconds_count", "succeeded", None) in rendered


class AlwaysCrashes(Actor):
    async def handle(self, message: Any) -> Any:
        raise RuntimeError(f"cannot handle {message!r}")


async def test_a_poison_message_an_actor_dropped_is_kept_as_a_dead_letter(pg):
    """An actor with redeliver that crashes on a message every time drops it; the message
    is not gone: it lands in the retry queue's dead letters with its repr."""
    tree = retry_tree(pg.dsn, default_handlers())  # none for actor.poison: a dead letter
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        ref = await tree.sup.start_child(
            ChildSpec(name="crasher", start=actor_factory(AlwaysCrashes), redeliver=1)
        )
        await ref.send("the poison line")
        await poll(
            lambda: fetchval(
                db,
                "SELECT 1 FROM daz_retry_queue"
                " WHERE event_type = 'actor.poison' AND status = 'dead_letter'",
            ),
            timeout=30,
        )
        data = await fetchval(
            db, "SELECT event_data FROM daz_retry_queue WHERE event_type = 'actor.poison'"
        )
    kept = json.loads(data) if isinstance(data, str) else data
    assert kept == {
        "version": 1,
        "args": {"actor": "crasher", "message_type": "str", "message": "'the poison line'"},
    }


async def test_a_poison_dead_letter_says_it_cannot_be_requeued_and_stays_so(pg):
    """The dead letter of a poison message names the actor and says it cannot be requeued
    (not "unknown_event_type"); requeued anyway, it is dead-lettered again, saying so."""
    tree = retry_tree(pg.dsn, default_handlers())
    dead = (
        "SELECT id, last_error, last_error_code, retry_count FROM daz_retry_queue"
        " WHERE event_type = 'actor.poison' AND status = 'dead_letter'"
    )
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        ref = await tree.sup.start_child(
            ChildSpec(name="crasher", start=actor_factory(AlwaysCrashes), redeliver=1)
        )
        await ref.send("the poison line")
        await poll(lambda: fetchval(db, "SELECT count(*) FROM (" + dead + ") d"), timeout=30)
        row = await db.call(lambda conn: conn.fetchrow(dead))
        assert row["last_error_code"] == "not_requeueable"
        assert "poison message for crasher (str)" in row["last_error"]
        assert "cannot be requeued" in row["last_error"]
        assert await fetchval(db, "SELECT requeue_dead_letter($1)", row["id"])
        await poll(lambda: fetchval(db, "SELECT count(*) FROM (" + dead + ") d"), timeout=30)
        again = await db.call(lambda conn: conn.fetchrow(dead))
    assert again["last_error_code"] == "not_requeueable"


async def test_one_batch_mixing_timeouts_failures_and_successes(pg):
    """The attempts of one batch share a timer (issue 15): each gets its own attempt
    timeout, a timeout or a failure ends only its own attempt (the next item's handler runs
    whole, with a fresh deadline), a handler that swallows its cancellation still counts as
    timed out, and every outcome is recorded under the right item."""
    from daz_actors.ops.metrics import Metrics

    metrics = Metrics()
    handlers = HandlerRegistry()
    ran: list[tuple[str, int, str]] = []  # (event id, attempt, how it ended)

    @handlers.register("test.mixed")
    async def mixed(item: QueueItem, ctx: AttemptContext) -> None:
        kind = item.event_data["kind"]
        if ctx.attempt == 1 and kind == "slow":
            try:
                await trio.sleep_forever()
            finally:
                ran.append((item.event_id, 1, "cancelled"))
        if ctx.attempt == 1 and kind == "swallow":
            with trio.CancelScope() as inner:  # leaves the timer's cancellation pending
                inner.shield = True
                await trio.sleep(item.attempt_timeout * 2)
            ran.append((item.event_id, 1, "swallowed"))
            return
        if ctx.attempt == 1 and kind == "boom":
            ran.append((item.event_id, 1, "raised"))
            raise ConnectionError("not yet")
        if kind == "ok":  # longer than the slow ones' timeout: a stale deadline would cut it
            await trio.sleep(0.4)
        ran.append((item.event_id, ctx.attempt, "ok"))

    kinds = ["ok", "slow", "ok", "boom", "ok", "swallow", "ok"]
    items = [
        NewItem(
            event_id=f"mixed-{n}",
            event_type="test.mixed",
            event_data={"kind": kind},
            attempt_timeout=0.2 if kind in ("slow", "swallow") else 30,
            retry_delay=0.05,
        )
        for n, kind in enumerate(kinds)
    ]
    tree = retry_tree(
        pg.dsn, handlers, worker_count=1, batch_size=10, metrics_registry=metrics.registry
    )
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        await db.call(queue.enqueue_many, items)  # one statement: claimed as one batch
        rows = [await item_in(db, i.event_id, RetryStatus.COMPLETED) for i in items]
        histories = [await db.call(queue.history, row.id) for row in rows]
    first = [r for r in ran if r[1] == 1]
    assert first == [
        ("mixed-0", 1, "ok"),
        ("mixed-1", 1, "cancelled"),
        ("mixed-2", 1, "ok"),
        ("mixed-3", 1, "raised"),
        ("mixed-4", 1, "ok"),
        ("mixed-5", 1, "swallowed"),
        ("mixed-6", 1, "ok"),
    ]
    assert [r.retry_count for r in rows] == [0, 1, 0, 1, 0, 1, 0]
    assert [h[-1].outcome for h in histories] == ["completed"] * len(items)
    codes = [[h.error_code for h in history[:-1]] for history in histories]
    assert codes == [[], ["attempt_timeout"], [], ["ConnectionError"], [], ["attempt_timeout"], []]

    def observed(outcome: str) -> float | None:
        return metrics.registry.get_sample_value(
            "daz_retry_attempt_duration_seconds_count",
            {"event_type": "test.mixed", "outcome": outcome},
        )

    assert (observed("timed_out"), observed("failed"), observed("succeeded")) == (2, 1, 7)



async def test_an_item_its_handler_released_gets_no_outcome_from_the_worker(pg, caplog):
    """A handler that released its item itself (as a cluster node hands an item over to the
    channel's holder) raises `ItemReleased`: the worker writes nothing for that attempt (no
    completion refused, no failure, no attempt counted), counts it as handed back, and runs
    the rest of the batch; the item is taken again and completes."""
    from functools import partial

    from daz_actors.ops.metrics import Metrics, workers_in

    metrics = Metrics()
    handlers = HandlerRegistry()
    released: list[str] = []

    @handlers.register("test.release")
    async def release_once(item: QueueItem, ctx: AttemptContext) -> None:
        if item.event_data["kind"] == "release" and not released:
            await ctx.db.run(partial(queue.release_many, leases=[ctx.lease]), name="test.release")
            released.append(item.event_id)
            raise ItemReleased("handed to the test")

    items = [
        NewItem(event_id=f"rel-{n}", event_type="test.release", event_data={"kind": kind})
        for n, kind in enumerate(["ok", "release", "ok"])
    ]
    tree = retry_tree(
        pg.dsn, handlers, worker_count=1, batch_size=10, metrics_registry=metrics.registry
    )
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        await db.call(queue.enqueue_many, items)  # one statement: claimed as one batch
        rows = [await item_in(db, i.event_id, RetryStatus.COMPLETED) for i in items]
        history = await db.call(queue.history, rows[1].id)
    assert released == ["rel-1"]
    assert [r.retry_count for r in rows] == [0, 0, 0]
    assert [h.outcome for h in history] == ["released", "completed"]
    (worker,) = workers_in(tree.sup)
    assert (worker.stats.handed_back, worker.stats.completed, worker.stats.failed) == (1, 3, 0)
    refused = [r for r in caplog.records if "completions refused" in r.getMessage()]
    assert refused == []
    assert metrics.registry.get_sample_value(
        "daz_retry_attempt_duration_seconds_count",
        {"event_type": "test.release", "outcome": "released"},
    ) == 1
