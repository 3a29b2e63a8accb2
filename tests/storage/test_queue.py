"""Every queue function against real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import trio

from daz_actors.storage import queue
from daz_actors.storage.queue_types import AlertType, Lease, NewItem, RetryStatus


def item(event_id: str, **kwargs: Any) -> NewItem:
    """A queue item with defaults for everything but the event id."""
    kwargs.setdefault("event_type", "chat.send")
    return NewItem(event_id=event_id, **kwargs)


def ago(**kwargs: float) -> datetime:
    """A moment in the past."""
    return datetime.now(UTC) - timedelta(**kwargs)


async def make_due(conn: Any, item_id: int) -> None:
    """Move an item's next attempt to now, as if its backoff delay had passed."""
    await conn.execute("UPDATE daz_retry_queue SET next_retry_at = now() WHERE id = $1", item_id)


async def acquire_one(conn: Any, worker: str = "w1", **kwargs: Any) -> Any:
    """Acquire exactly one item."""
    items = await queue.acquire(conn, worker, batch_size=1, **kwargs)
    assert len(items) == 1
    return items[0]


def test_enqueue_is_idempotent_by_event_id(pg: Any) -> None:
    """Enqueueing the same event id twice keeps one item, the first, and reports it as not new."""

    async def body(conn: Any) -> None:
        assert await queue.enqueue(conn, item("e1", event_data={"n": 1})) is True
        assert await queue.enqueue(conn, item("e1", event_data={"n": 2})) is False
        stored = await queue.get_by_event_id(conn, "e1")
        assert stored is not None
        assert stored.event_data == {"n": 1}
        assert stored.status is RetryStatus.PENDING
        assert await conn.fetchval("SELECT count(*) FROM daz_retry_queue") == 1

    pg.run(body)


def test_enqueue_stores_every_field(pg: Any) -> None:
    """What goes in comes back out of `get`, field by field."""
    not_before = ago(minutes=1)
    expires = datetime.now(UTC) + timedelta(hours=1)
    new = item(
        "full",
        event_type="cytube.send",
        event_data={"msg": "hi", "n": [1, 2.5, None]},
        channel="room",
        plugin="greeter",
        operation_type="cytube_command",
        event_metadata={"source": "test"},
        priority=7,
        max_retries=5,
        retry_delay=5.0,
        backoff_multiplier=1.5,
        max_delay=300.0,
        attempt_timeout=20.0,
        correlation_id="corr-1",
        tags=("a", "b"),
        not_before=not_before,
        expires_at=expires,
        checkpoint={"step": 0},
    )

    async def body(conn: Any) -> None:
        assert await queue.enqueue(conn, new)
        stored = await queue.get_by_event_id(conn, "full")
        assert stored is not None
        assert (stored.event_type, stored.channel, stored.plugin) == (
            "cytube.send",
            "room",
            "greeter",
        )
        assert stored.operation_type == "cytube_command"
        assert stored.event_data == {"msg": "hi", "n": [1, 2.5, None]}
        assert stored.event_metadata == {"source": "test"}
        assert (stored.priority, stored.max_retries, stored.retry_count) == (7, 5, 0)
        assert (stored.retry_delay, stored.backoff_multiplier, stored.max_delay) == (5, 1.5, 300)
        assert stored.attempt_timeout == 20.0
        assert stored.correlation_id == "corr-1"
        assert stored.tags == ("a", "b")
        assert stored.next_retry_at == not_before
        assert stored.expires_at == expires
        assert stored.checkpoint == {"step": 0}
        assert stored.locked_by is None
        assert stored.lock_token is None
        assert await queue.get(conn, stored.id) == stored
        assert await queue.get(conn, stored.id + 1000) is None

    pg.run(body)


def test_enqueue_many_is_one_statement_and_idempotent(pg: Any) -> None:
    """A batch reports per item whether it was new, including repeats inside the batch."""

    async def body(conn: Any) -> None:
        assert await queue.enqueue(conn, item("old"))
        flags = await queue.enqueue_many(
            conn,
            [
                item("a", tags=("x",)),
                item("old"),
                item("b", priority=9),
                item("a", event_data={"second": True}),
            ],
        )
        assert flags == (True, False, True, False)
        assert await queue.enqueue_many(conn, []) == ()
        rows = await conn.fetch(
            "SELECT event_id, tags, event_data FROM daz_retry_queue ORDER BY id"
        )
        assert [r["event_id"] for r in rows] == ["old", "a", "b"]
        assert rows[1]["tags"] == ["x"]
        assert rows[1]["event_data"] == "{}"

    pg.run(body)


def test_acquire_orders_by_priority_then_due_time(pg: Any) -> None:
    """Priority 10 comes first, and within a priority the item due earliest."""

    async def body(conn: Any) -> None:
        await queue.enqueue_many(
            conn,
            [
                item("p5", priority=5, not_before=ago(hours=2)),
                item("p10-late", priority=10, not_before=ago(hours=1)),
                item("p1", priority=1, not_before=ago(hours=5)),
                item("p10-early", priority=10, not_before=ago(hours=3)),
                item("p5-later", priority=5, not_before=ago(minutes=1)),
            ],
        )
        first = await queue.acquire(conn, "w1", batch_size=2)
        assert [i.event_id for i in first] == ["p10-early", "p10-late"]
        rest = await queue.acquire(conn, "w2", batch_size=10)
        assert [i.event_id for i in rest] == ["p5", "p5-later", "p1"]
        assert {i.locked_by for i in first} == {"w1"}
        assert all(i.status is RetryStatus.PROCESSING for i in first + rest)
        tokens = {i.lock_token for i in first + rest}
        assert len(tokens) == 5
        assert None not in tokens

    pg.run(body)


def test_acquire_honours_next_retry_at(pg: Any) -> None:
    """An item is not handed out before its next_retry_at, and is once that time has come."""

    async def body(conn: Any) -> None:
        await queue.enqueue(conn, item("later", not_before=datetime.now(UTC) + timedelta(hours=1)))
        assert await queue.acquire(conn, "w1") == []
        stored = await queue.get_by_event_id(conn, "later")
        assert stored is not None
        assert stored.status is RetryStatus.PENDING
        await make_due(conn, stored.id)
        got = await queue.acquire(conn, "w1")
        assert [i.event_id for i in got] == ["later"]

    pg.run(body)


def test_calculate_next_retry_schedule_and_cap(pg: Any) -> None:
    """Delay 60, multiplier 2 give 60, 120, 240, 480 s, capped at max delay, never overflowing."""

    async def body(conn: Any) -> None:
        delays = [
            await conn.fetchval("SELECT calculate_next_retry($1, 60, 2, 3600)", n) for n in range(8)
        ]
        assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600]
        assert await conn.fetchval("SELECT calculate_next_retry(3, 60, 2, 300)") == 300
        assert await conn.fetchval("SELECT calculate_next_retry(100000, 60, 10, 900)") == 900
        assert await conn.fetchval("SELECT calculate_next_retry(5, 60, 1, 3600)") == 60
        assert await conn.fetchval("SELECT calculate_next_retry(5, 0, 2, 3600)") == 0

    pg.run(body)


def test_fail_schedules_backoff_per_item(pg: Any) -> None:
    """Each retryable failure pushes next_retry_at out by the item's next backoff delay, capped."""

    async def body(conn: Any) -> None:
        await queue.enqueue(
            conn, item("b", max_retries=10, retry_delay=60, backoff_multiplier=2, max_delay=300)
        )
        delays = []
        for attempt in range(5):
            leased = await acquire_one(conn)
            outcome = await queue.fail(conn, leased.lease, error=f"try {attempt}", error_code="E1")
            assert outcome.accepted
            assert outcome.item is not None
            assert outcome.item.status is RetryStatus.PENDING
            assert outcome.item.retry_count == attempt + 1
            delays.append((outcome.item.next_retry_at - outcome.item.updated_at).total_seconds())
            assert await queue.acquire(conn, "w1") == []  # not due yet
            await make_due(conn, leased.id)
        assert delays == [60, 120, 240, 300, 300]

    pg.run(body)


def test_dead_letter_after_max_retries_with_history_per_attempt(pg: Any) -> None:
    """With max_retries 2 the third failure dead-letters the item; each attempt has history."""

    async def body(conn: Any) -> None:
        await queue.enqueue(conn, item("d", max_retries=2, correlation_id="c-9"))
        tokens = []
        for attempt in range(3):
            leased = await acquire_one(conn, worker=f"w{attempt}")
            tokens.append(leased.lock_token)
            outcome = await queue.fail(conn, leased.lease, error=f"boom {attempt}", error_code="X")
            await make_due(conn, leased.id)
        assert outcome.dead_lettered
        assert outcome.item is not None
        assert outcome.item.retry_count == 3
        assert outcome.item.last_error == "boom 2"
        assert await queue.acquire(conn, "w9") == []
        rows = await queue.history(conn, outcome.item.id)
        assert [(r.attempt, r.worker_id, r.outcome, r.error) for r in rows] == [
            (1, "w0", "failed", "boom 0"),
            (2, "w1", "failed", "boom 1"),
            (3, "w2", "dead_letter", "boom 2"),
        ]
        assert [r.lock_token for r in rows] == tokens
        assert all(r.correlation_id == "c-9" and r.finished_at is not None for r in rows)
        assert all(r.error_code == "X" for r in rows)

    pg.run(body)


def test_permanent_failure_goes_straight_to_dead_letter(pg: Any) -> None:
    """A non-retryable failure dead-letters the item at once, retries left or not."""

    async def body(conn: Any) -> None:
        await queue.enqueue(conn, item("p", max_retries=5))
        leased = await acquire_one(conn)
        outcome = await queue.fail(
            conn, leased.lease, error="syntax error", error_code="42601", retryable=False
        )
        assert outcome.dead_lettered
        assert outcome.item is not None
        assert outcome.item.retry_count == 1
        assert outcome.item.last_error_code == "42601"
        assert outcome.item.lock_token is None

    pg.run(body)


def test_complete_records_history_after_a_failure(pg: Any) -> None:
    """A failed attempt and then a completed one leave two history rows with their outcomes."""

    async def body(conn: Any) -> None:
        await queue.enqueue(conn, item("h"))
        first = await acquire_one(conn, worker="a")
        history = await queue.history(conn, first.id)
        assert [(r.attempt, r.outcome, r.finished_at) for r in history] == [(1, None, None)]
        await queue.fail(conn, first.lease, error="flaky")
        await make_due(conn, first.id)
        second = await acquire_one(conn, worker="b")
        assert second.lock_token != first.lock_token
        assert await queue.complete(conn, second.lease) is True
        done = await queue.get(conn, first.id)
        assert done is not None
        assert done.status is RetryStatus.COMPLETED
        assert done.completed_at is not None
        assert done.locked_by is None
        history = await queue.history(conn, first.id)
        assert [(r.attempt, r.worker_id, r.outcome) for r in history] == [
            (1, "a", "failed"),
            (2, "b", "completed"),
        ]

    pg.run(body)


def test_expired_lock_is_reclaimed_and_the_old_worker_fenced(pg: Any) -> None:
    """After the lock timeout another worker gets the item anew; the old one is refused."""

    async def body(conn: Any) -> None:
        await queue.enqueue(conn, item("s"))
        old = await acquire_one(conn, worker="dead")
        # still locked: a second worker gets nothing within the timeout
        assert await queue.acquire(conn, "alive", lock_timeout=60) == []
        await conn.execute(
            "UPDATE daz_retry_queue SET locked_at = now() - interval '61 seconds' WHERE id = $1",
            old.id,
        )
        new = await acquire_one(conn, worker="alive", lock_timeout=60)
        assert new.id == old.id
        assert new.lock_token != old.lock_token
        assert new.retry_count == 1
        assert new.last_error_code == "lock_expired"
        assert await queue.complete(conn, old.lease) is False
        assert (await queue.fail(conn, old.lease, error="late")).accepted is False
        assert await queue.complete(conn, new.lease) is True
        rows = await queue.history(conn, old.id)
        assert [(r.worker_id, r.outcome) for r in rows] == [
            ("dead", "lock_expired"),
            ("alive", "completed"),
        ]

    pg.run(body)


def test_reclaim_with_no_retries_left_dead_letters(pg: Any) -> None:
    """An item whose worker keeps dying runs out of retries instead of looping forever."""

    async def body(conn: Any) -> None:
        await queue.enqueue(conn, item("poison", max_retries=0))
        leased = await acquire_one(conn, worker="dies")
        await conn.execute(
            "UPDATE daz_retry_queue SET locked_at = now() - interval '1 hour' WHERE id = $1",
            leased.id,
        )
        assert await queue.acquire(conn, "next", lock_timeout=1) == []
        stored = await queue.get(conn, leased.id)
        assert stored is not None
        assert stored.status is RetryStatus.DEAD_LETTER
        assert stored.last_error_code == "lock_expired"

    pg.run(body)


def test_stale_tokens_change_nothing(pg: Any) -> None:
    """Completing or failing with a token that is not current is refused, changing nothing."""

    async def body(conn: Any) -> None:
        await queue.enqueue_many(conn, [item("t1"), item("t2")])
        one, two = await queue.acquire(conn, "w", batch_size=2)
        before = await queue.get(conn, one.id)
        forged = Lease(item_id=one.id, worker_id="w", lock_token=uuid.uuid4())
        wrong_worker = Lease(item_id=one.id, worker_id="other", lock_token=one.lease.lock_token)
        assert await queue.complete(conn, forged) is False
        assert await queue.complete(conn, wrong_worker) is False
        assert (await queue.fail(conn, forged, error="x")).accepted is False
        assert await queue.save_checkpoint(conn, forged, {"step": 1}) is False
        assert await queue.get(conn, one.id) == before
        result = await queue.complete_many(conn, [forged, two.lease])
        assert result.completed == frozenset({two.id})
        assert result.refused == frozenset({one.id})
        assert await queue.get(conn, one.id) == before

    pg.run(body)


def test_complete_many_completes_a_batch(pg: Any) -> None:
    """A batch of leases completes in one call and every attempt's history row is closed."""

    async def body(conn: Any) -> None:
        await queue.enqueue_many(conn, [item(f"m{i}") for i in range(6)])
        leased = await queue.acquire(conn, "w", batch_size=6)
        result = await queue.complete_many(conn, [i.lease for i in leased])
        assert result.completed == {i.id for i in leased}
        assert result.refused == frozenset()
        outcomes = await conn.fetch("SELECT outcome FROM daz_retry_history")
        assert [r["outcome"] for r in outcomes] == ["completed"] * 6
        again = await queue.complete_many(conn, [i.lease for i in leased])
        assert again.refused == {i.id for i in leased}

    pg.run(body)


def test_checkpoint_is_saved_for_the_next_attempt(pg: Any) -> None:
    """A handler's checkpoint survives a failure and comes back with the next acquisition."""

    async def body(conn: Any) -> None:
        await queue.enqueue(conn, item("cp"))
        first = await acquire_one(conn)
        assert await queue.save_checkpoint(conn, first.lease, {"done": ["step1"]}) is True
        await queue.fail(conn, first.lease, error="step2 failed")
        await make_due(conn, first.id)
        second = await acquire_one(conn)
        assert second.checkpoint == {"done": ["step1"]}

    pg.run(body)


def test_requeue_dead_letter(pg: Any) -> None:
    """A dead letter goes back to pending with its retry count reset; other items are refused."""

    async def body(conn: Any) -> None:
        await queue.enqueue_many(conn, [item("dl", max_retries=0), item("live")])
        dead = await acquire_one(conn)
        await queue.fail(conn, dead.lease, error="bad", retryable=False)
        live = await queue.get_by_event_id(conn, "live")
        assert live is not None
        assert await queue.requeue_dead_letter(conn, live.id) is False
        assert await queue.requeue_dead_letter(conn, dead.id) is True
        assert await queue.requeue_dead_letter(conn, dead.id) is False
        back = await queue.get(conn, dead.id)
        assert back is not None
        assert (back.status, back.retry_count) == (RetryStatus.PENDING, 0)
        got = await queue.acquire(conn, "w", batch_size=5)
        assert {i.event_id for i in got} == {"dl", "live"}

    pg.run(body)


def test_expired_items_are_never_handed_out(pg: Any) -> None:
    """An item past its expiry is marked failed ('expired'); one not yet expired is acquired."""

    async def body(conn: Any) -> None:
        await queue.enqueue_many(
            conn,
            [
                item("stale", not_before=ago(hours=2), expires_at=ago(hours=1)),
                item("fresh", expires_at=datetime.now(UTC) + timedelta(hours=1)),
            ],
        )
        got = await queue.acquire(conn, "w", batch_size=10)
        assert [i.event_id for i in got] == ["fresh"]
        stale = await queue.get_by_event_id(conn, "stale")
        assert stale is not None
        assert (stale.status, stale.last_error_code) == (RetryStatus.FAILED, "expired")

    pg.run(body)


def test_cleanup_deletes_old_finished_items_only(pg: Any) -> None:
    """Cleanup removes old completed and expired items, and old dead letters only when asked."""

    async def body(conn: Any) -> None:
        await queue.enqueue_many(
            conn, [item("old-done"), item("new-done"), item("old-dead"), item("waiting")]
        )
        leased = {i.event_id: i for i in await queue.acquire(conn, "w", batch_size=3)}
        await queue.complete(conn, leased["old-done"].lease)
        await queue.complete(conn, leased["new-done"].lease)
        await queue.fail(conn, leased["old-dead"].lease, error="x", retryable=False)
        await conn.execute(
            "UPDATE daz_retry_queue SET updated_at = now() - interval '10 days' "
            "WHERE event_id IN ('old-done', 'old-dead', 'waiting')"
        )
        assert await queue.cleanup(conn, retention_days=7) == 1
        remaining = await conn.fetch("SELECT event_id FROM daz_retry_queue ORDER BY event_id")
        assert [r["event_id"] for r in remaining] == ["new-done", "old-dead", "waiting"]
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM daz_retry_history WHERE event_id = 'old-done'"
            )
            == 0
        )
        assert await queue.cleanup(conn, retention_days=7, dead_letter_retention_days=30) == 0
        assert await queue.cleanup(conn, retention_days=7, dead_letter_retention_days=7) == 1
        assert await queue.cleanup(conn, retention_days=0) == 1  # new-done
        remaining = await conn.fetch("SELECT event_id FROM daz_retry_queue")
        assert [r["event_id"] for r in remaining] == ["waiting"]

    pg.run(body)


def test_stats_view_counts_by_status_event_type_and_plugin(pg: Any) -> None:
    """The stats view groups items by status, event type and plugin."""

    async def body(conn: Any) -> None:
        await queue.enqueue_many(
            conn,
            [
                item("a", event_type="chat.log", plugin="logger", priority=10),
                item("b", event_type="chat.log", plugin="logger"),
                item("c", event_type="chat.send"),
            ],
        )
        first = await acquire_one(conn)
        await queue.complete(conn, first.lease)
        rows = await queue.stats(conn)
        assert [(r.status, r.event_type, r.plugin, r.item_count) for r in rows] == [
            (RetryStatus.COMPLETED, "chat.log", "logger", 1),
            (RetryStatus.PENDING, "chat.log", "logger", 1),
            (RetryStatus.PENDING, "chat.send", None, 1),
        ]

    pg.run(body)


def test_alerts_view_lists_each_kind_of_trouble(pg: Any) -> None:
    """Dead letters, stuck items, items near max retries and old pending items raise alerts."""

    async def body(conn: Any) -> None:
        await queue.enqueue_many(
            conn,
            [
                item("dead", priority=10),
                item("stuck", priority=9, attempt_timeout=30),
                item("near", priority=8, max_retries=2),
                item("fine", priority=1),
                item("old", priority=1, not_before=ago(hours=1)),
            ],
        )
        dead, stuck, near = await queue.acquire(conn, "w", batch_size=3)
        await queue.fail(conn, dead.lease, error="bad", retryable=False)
        await queue.fail(conn, near.lease, error="flaky")
        await conn.execute(
            "UPDATE daz_retry_queue SET locked_at = now() - interval '121 seconds' WHERE id = $1",
            stuck.id,
        )
        found = {(a.alert_type, a.event_id) for a in await queue.alerts(conn)}
        assert found == {
            (AlertType.DEAD_LETTER, "dead"),
            (AlertType.STUCK_PROCESSING, "stuck"),
            (AlertType.NEAR_MAX_RETRIES, "near"),
            (AlertType.OLD_PENDING, "old"),
        }
        rows = {a.alert_type: a for a in await queue.alerts(conn)}
        assert rows[AlertType.DEAD_LETTER].severity == "error"
        assert rows[AlertType.DEAD_LETTER].last_error == "bad"

    pg.run(body)


def test_acquire_rejects_bad_arguments_in_sql_too(pg: Any) -> None:
    """The SQL function itself refuses a non-positive batch size or lock timeout."""

    async def body(conn: Any) -> None:
        with pytest.raises(asyncpg.InvalidParameterValueError, match="batch_size"):
            await conn.fetch("SELECT * FROM acquire_retry_items('w', 0, 60)")
        with pytest.raises(asyncpg.InvalidParameterValueError, match="lock_timeout"):
            await conn.fetch("SELECT * FROM acquire_retry_items('w', 1, 0)")

    pg.run(body)


async def test_enqueue_notifies_once_per_statement_from_trio(pg: Any) -> None:
    """A LISTENing connection gets one notification per enqueueing statement, none for repeats."""
    send, receive = trio.open_memory_channel[str](100)

    def on_notify(conn: Any, pid: int, channel: str, payload: str) -> None:
        send.send_nowait(payload)

    async with pg.trio_connection() as listener, pg.trio_connection() as writer:
        await listener.call(lambda c: c.add_listener(queue.NOTIFY_CHANNEL, on_notify))
        with trio.fail_after(10):
            await writer.call(queue.enqueue_many, [item("n1"), item("n2"), item("n3")])
            assert await receive.receive() == "3"
            assert await writer.call(queue.enqueue, item("n1")) is False
            assert await writer.call(queue.enqueue, item("n4")) is True
            # notifications arrive in order: had the duplicate notified, it would come first
            assert await receive.receive() == "1"
        await listener.call(lambda c: c.remove_listener(queue.NOTIFY_CHANNEL, on_notify))
    assert receive.statistics().current_buffer_used == 0


def test_complete_and_acquire_writes_one_history_row_per_attempt(pg: Any) -> None:
    """Completions of one batch and the claim of the next in one call: the completed
    attempts get one history row each (written at the end, started at the claim); the new
    claims get none until they end; a stale lease is refused and changes nothing."""

    async def body(conn: Any) -> None:
        for n in range(4):
            await queue.enqueue(conn, item(f"ca-{n}"))
        first = await queue.acquire(conn, "w", batch_size=2)
        stale = Lease(item_id=first[1].id, worker_id="w", lock_token=uuid.uuid4())
        result, second = await queue.complete_and_acquire(
            conn, "w", [first[0].lease, stale], batch_size=2
        )
        assert result.completed == {first[0].id}
        assert result.refused == {first[1].id}
        assert [i.event_id for i in second] == ["ca-2", "ca-3"]
        rows = await conn.fetch(
            "SELECT item_id, worker_id, lock_token, started_at, outcome FROM daz_retry_history"
        )
        assert [(r["item_id"], r["outcome"]) for r in rows] == [(first[0].id, "completed")]
        assert rows[0]["lock_token"] == first[0].lock_token
        assert rows[0]["started_at"] == first[0].locked_at
        # the running attempts are shown from the queue row
        running = await queue.history(conn, second[0].id)
        assert [(r.attempt, r.worker_id, r.outcome) for r in running] == [(1, "w", None)]
        result, third = await queue.complete_and_acquire(
            conn, "w", [stale, *(i.lease for i in second)], batch_size=2
        )
        assert result.completed == {second[0].id, second[1].id}
        assert third == []
        count = await conn.fetchval("SELECT count(*) FROM daz_retry_history")
        assert count == 3
        held = await queue.get(conn, first[1].id)
        assert held is not None
        assert held.status is RetryStatus.PROCESSING
        assert len(await queue.history(conn, first[1].id)) == 1  # its attempt still runs

    pg.run(body)


def test_an_attempt_claimed_before_0008_is_closed_not_doubled(pg: Any) -> None:
    """An open history row left by the claim of an earlier version is closed by the outcome
    (one row per attempt), not joined by a second one."""

    async def body(conn: Any) -> None:
        await queue.enqueue(conn, item("old-open"))
        held = await acquire_one(conn, worker="w")
        await conn.execute(
            "INSERT INTO daz_retry_history (item_id, event_id, attempt, worker_id, lock_token,"
            " started_at) VALUES ($1, $2, 1, 'w', $3, $4)",
            held.id, held.event_id, held.lock_token, held.locked_at,
        )  # fmt: skip
        assert await queue.complete(conn, held.lease) is True
        history = await queue.history(conn, held.id)
        assert [(r.attempt, r.outcome) for r in history] == [(1, "completed")]

    pg.run(body)


def test_an_items_history_goes_with_it_on_delete_and_truncate(pg: Any) -> None:
    """Deleting items deletes their history rows (and only theirs), in one statement or
    many; truncating the queue empties the history."""

    async def body(conn: Any) -> None:
        await queue.enqueue_many(conn, [item("gone-1"), item("gone-2"), item("kept")])
        leased = {i.event_id: i for i in await queue.acquire(conn, "w", batch_size=3)}
        await queue.complete_many(conn, [leased["gone-1"].lease, leased["kept"].lease])
        await queue.fail(conn, leased["gone-2"].lease, error="x", retryable=True)
        await conn.execute("DELETE FROM daz_retry_queue WHERE event_id IN ('gone-1', 'gone-2')")
        rows = await conn.fetch("SELECT event_id, outcome FROM daz_retry_history")
        assert [(r["event_id"], r["outcome"]) for r in rows] == [("kept", "completed")]
        await conn.execute("TRUNCATE daz_retry_queue")
        assert await conn.fetchval("SELECT count(*) FROM daz_retry_history") == 0
        # both together, as before (when the key refused the queue alone)
        await queue.enqueue(conn, item("again"))
        await queue.complete(conn, (await acquire_one(conn)).lease)
        await conn.execute("TRUNCATE daz_retry_queue, daz_retry_history RESTART IDENTITY")
        assert await conn.fetchval("SELECT count(*) FROM daz_retry_history") == 0

    pg.run(body)
