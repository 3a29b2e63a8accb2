"""A hypothesis state machine drives the real queue and checks it against a model.

Rules: enqueue, acquire (several workers), complete, complete_many, fail (retryable or not),
lock expiry (a worker's lock ages past the timeout), requeue of a dead letter, and the use of
stale leases. After every step: no item lost, every item in the status the model expects,
none completed twice, and every status change the database made is a legal transition
(recorded by a test-only trigger).

Hypothesis rules cannot be async, so the machine runs one asyncio loop of its own and drives
one asyncpg connection on it with ``run_until_complete``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from daz_actors.storage import queue
from daz_actors.storage.queue_types import Lease, NewItem, RetryStatus

T = TypeVar("T")

WORKERS = ("w0", "w1", "w2")
EVENT_IDS = [f"e{n}" for n in range(12)]
MAX_RETRIES = 2
LOCK_TIMEOUT = 300.0

LEGAL = {
    (None, "pending"),
    ("pending", "processing"),
    ("processing", "completed"),
    ("processing", "pending"),
    ("processing", "dead_letter"),
    ("dead_letter", "pending"),
    ("pending", "failed"),
}

TRANSITION_LOG = """
CREATE TABLE test_status_log (id bigserial, item_id bigint, old_status text, new_status text);
CREATE FUNCTION test_log_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO test_status_log (item_id, old_status, new_status)
        VALUES (NEW.id, NULL, NEW.status);
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO test_status_log (item_id, old_status, new_status)
        VALUES (NEW.id, OLD.status, NEW.status);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER test_log_status AFTER INSERT OR UPDATE ON daz_retry_queue
    FOR EACH ROW EXECUTE FUNCTION test_log_status();
"""


@attrs.define
class ModelItem:
    """What the model believes about one item."""

    item_id: int
    priority: int
    status: RetryStatus = RetryStatus.PENDING
    retry_count: int = 0
    lease: Lease | None = None
    # its lock was aged past the timeout: the next acquire rescues it
    lock_expired: bool = False
    completions: int = 0


class QueueMachine(RuleBasedStateMachine):
    """The retry queue against a model."""

    loop: asyncio.AbstractEventLoop
    conn: Any

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[str, ModelItem] = {}
        self.stale: list[Lease] = []

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    @initialize()
    def empty_queue(self) -> None:
        self.run(
            self.conn.execute(
                "TRUNCATE daz_retry_queue, daz_retry_history, test_status_log RESTART IDENTITY"
            )
        )

    def _by_status(self, status: RetryStatus) -> list[str]:
        return sorted(e for e, m in self.items.items() if m.status is status)

    @rule(
        event_ids=st.lists(st.sampled_from(EVENT_IDS), min_size=1, max_size=4),
        priority=st.integers(1, 10),
    )
    def enqueue(self, event_ids: list[str], priority: int) -> None:
        batch = [
            NewItem(
                event_id=e,
                event_type="t",
                priority=priority,
                max_retries=MAX_RETRIES,
                retry_delay=0,
            )
            for e in event_ids
        ]
        flags = self.run(queue.enqueue_many(self.conn, batch))
        expected = []
        for e in event_ids:
            expected.append(e not in self.items)
            if e not in self.items:
                stored = self.run(queue.get_by_event_id(self.conn, e))
                assert stored is not None
                self.items[e] = ModelItem(item_id=stored.id, priority=priority)
        assert list(flags) == expected

    @rule(worker=st.sampled_from(WORKERS), batch_size=st.integers(1, 5))
    def acquire(self, worker: str, batch_size: int) -> None:
        for m in self.items.values():
            if m.status is RetryStatus.PROCESSING and m.lock_expired:
                assert m.lease is not None
                self.stale.append(m.lease)
                m.lease = None
                m.lock_expired = False
                m.retry_count += 1
                dead = m.retry_count > MAX_RETRIES
                m.status = RetryStatus.DEAD_LETTER if dead else RetryStatus.PENDING
        got = self.run(
            queue.acquire(self.conn, worker, batch_size=batch_size, lock_timeout=LOCK_TIMEOUT)
        )
        pending = self._by_status(RetryStatus.PENDING)
        assert len(got) == min(batch_size, len(pending))
        left = set(pending) - {i.event_id for i in got}
        for acquired in got:
            m = self.items[acquired.event_id]
            assert m.status is RetryStatus.PENDING
            assert acquired.retry_count == m.retry_count
            assert all(acquired.priority >= self.items[e].priority for e in left)
            m.status = RetryStatus.PROCESSING
            m.lease = acquired.lease

    @precondition(lambda self: bool(self._by_status(RetryStatus.PROCESSING)))
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        m = self.items[data.draw(st.sampled_from(self._by_status(RetryStatus.PROCESSING)))]
        assert m.lease is not None
        assert self.run(queue.complete(self.conn, m.lease)) is True
        m.status = RetryStatus.COMPLETED
        m.completions += 1
        self.stale.append(m.lease)
        m.lease = None
        m.lock_expired = False

    @precondition(lambda self: bool(self._by_status(RetryStatus.PROCESSING)) or bool(self.stale))
    @rule(data=st.data())
    def complete_many(self, data: st.DataObject) -> None:
        held = [self.items[e] for e in self._by_status(RetryStatus.PROCESSING)]
        current = data.draw(st.lists(st.sampled_from(held), unique_by=id)) if held else []
        stale = data.draw(st.lists(st.sampled_from(self.stale), max_size=2)) if self.stale else []
        leases = [m.lease for m in current if m.lease is not None] + stale
        result = self.run(queue.complete_many(self.conn, leases))
        assert result.completed == {m.item_id for m in current}
        assert result.refused == {lease.item_id for lease in stale} - result.completed
        for m in current:
            m.status = RetryStatus.COMPLETED
            m.completions += 1
            assert m.lease is not None
            self.stale.append(m.lease)
            m.lease = None
            m.lock_expired = False

    @precondition(lambda self: bool(self._by_status(RetryStatus.PROCESSING)))
    @rule(data=st.data(), retryable=st.booleans())
    def fail(self, data: st.DataObject, retryable: bool) -> None:
        m = self.items[data.draw(st.sampled_from(self._by_status(RetryStatus.PROCESSING)))]
        assert m.lease is not None
        outcome = self.run(queue.fail(self.conn, m.lease, error="boom", retryable=retryable))
        assert outcome.accepted
        m.retry_count += 1
        dead = not retryable or m.retry_count > MAX_RETRIES
        m.status = RetryStatus.DEAD_LETTER if dead else RetryStatus.PENDING
        assert outcome.item is not None
        assert outcome.item.status is m.status
        self.stale.append(m.lease)
        m.lease = None
        m.lock_expired = False

    @precondition(lambda self: bool(self._by_status(RetryStatus.PROCESSING)))
    @rule(data=st.data())
    def expire_lock(self, data: st.DataObject) -> None:
        m = self.items[data.draw(st.sampled_from(self._by_status(RetryStatus.PROCESSING)))]
        self.run(
            self.conn.execute(
                "UPDATE daz_retry_queue SET locked_at = now() - interval '1 hour' WHERE id = $1",
                m.item_id,
            )
        )
        m.lock_expired = True

    @precondition(lambda self: bool(self.stale))
    @rule(data=st.data(), complete=st.booleans())
    def use_stale_lease(self, data: st.DataObject, complete: bool) -> None:
        lease = data.draw(st.sampled_from(self.stale))
        if complete:
            assert self.run(queue.complete(self.conn, lease)) is False
        else:
            assert self.run(queue.fail(self.conn, lease, error="late")).accepted is False

    @precondition(lambda self: bool(self.items))
    @rule(data=st.data())
    def requeue(self, data: st.DataObject) -> None:
        m = self.items[data.draw(st.sampled_from(sorted(self.items)))]
        was_dead = m.status is RetryStatus.DEAD_LETTER
        assert self.run(queue.requeue_dead_letter(self.conn, m.item_id)) is was_dead
        if was_dead:
            m.status = RetryStatus.PENDING
            m.retry_count = 0

    @invariant()
    def database_matches_model(self) -> None:
        rows = self.run(self.conn.fetch("SELECT event_id, status FROM daz_retry_queue"))
        assert {r["event_id"]: r["status"] for r in rows} == {
            e: m.status.value for e, m in self.items.items()
        }
        assert all(m.completions <= 1 for m in self.items.values())

    @invariant()
    def every_transition_is_legal(self) -> None:
        rows = self.run(
            self.conn.fetch("SELECT DISTINCT old_status, new_status FROM test_status_log")
        )
        assert {(r["old_status"], r["new_status"]) for r in rows} <= LEGAL

    @invariant()
    def completed_once(self) -> None:
        count = self.run(
            self.conn.fetchval(
                "SELECT count(*) FROM (SELECT item_id FROM daz_retry_history "
                "WHERE outcome = 'completed' GROUP BY item_id HAVING count(*) > 1) twice"
            )
        )
        assert count == 0


def test_queue_state_machine(pg: Any) -> None:
    """Random operations by several workers, with lock expiry, keep the queue true to a model."""
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(pg.dsn))
    try:
        loop.run_until_complete(conn.execute(TRANSITION_LOG))
        QueueMachine.loop = loop
        QueueMachine.conn = conn
        run_state_machine_as_test(
            QueueMachine,
            settings=settings(
                max_examples=25,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        loop.run_until_complete(conn.close())
        loop.close()
