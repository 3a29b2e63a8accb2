"""The failure capture takes a `FailureBatch` (the rows of a batch write that failed
together) as one message: queued in one call, or spooled in one append."""

from __future__ import annotations

from daz_actors import ActorCrashed, ChildSpec, EventBus, FailureEvent, Registry, Supervisor
from daz_actors.retry.capture import DrainSpool, capture_with_spool
from daz_actors.retry.policies import RetryPolicy
from daz_actors.runtime.events import FailureBatch, Intent
from daz_actors.runtime.mailbox import Mailbox
from daz_actors.runtime.ref import ActorRef
from daz_actors.storage.spool import Spool
from daz_actors.storage.sql_gateway import SqlGateway, SqlGatewayParams
from daz_actors.storage.sql_messages import SqlClient
from daz_actors.testing import fast_policy, open_tree, poll


def failure(n: int, *, intent: bool = True) -> FailureEvent:
    return FailureEvent(
        topic="chat.log.failed",
        source="test",
        operation="sql_operation",
        event_type="chat.log",
        error="timed out",
        retryable=True,
        intent=Intent(name="chat.log", version=2, args={"n": n}) if intent else None,
        event_id=f"log-{n}",
    )


def capture_tree(spool_path, registry: Registry, bus: EventBus, *before: ChildSpec) -> Supervisor:
    capture = capture_with_spool(
        spool_path=spool_path,
        spool_max_bytes=1 << 20,
        gateway="sql-gateway",
        patterns=("*.failed",),
        ignore_event_types=(),
        policies={"default": RetryPolicy()},
    )
    return Supervisor(
        "root",
        [*before, ChildSpec(name="retry-capture", start=capture, redeliver=3)],
        policy=fast_policy(),
        registry=registry,
        bus=bus,
    )


async def test_a_batch_is_queued_once_per_event_id_and_events_without_intent_skipped(pg, tmp_path):
    """A batch of three failures (one without an intent) queues two items; the same batch
    published again queues nothing more."""
    registry, bus = Registry(), EventBus()
    gateway = ChildSpec(name="sql-gateway", start=SqlGateway(SqlGatewayParams(), pg.dsn))
    root = capture_tree(tmp_path / "spool", registry, bus, gateway)
    batch = FailureBatch(
        topic="chat.log.failed", events=(failure(1), failure(2, intent=False), failure(3))
    )
    async with open_tree(root):
        db = SqlClient(registry.lookup("sql-gateway"))
        await bus.publish("chat.log.failed", batch)
        await bus.publish("chat.log.failed", batch)

        async def queued() -> list[str]:
            rows = await db.query("SELECT event_id FROM daz_retry_queue ORDER BY id")
            ids = [r["event_id"] for r in rows]
            return ids if len(ids) >= 2 else []

        assert await poll(queued, timeout=30) == ["log-1", "log-3"]
        # answered after both batches (one mailbox, in order)
        assert await registry.lookup("retry-capture").ask(DrainSpool(), timeout=30) is True
        assert await db.query_value("SELECT count(*) FROM daz_retry_queue") == 2


async def test_a_batch_is_spooled_in_order_when_the_gateway_is_down(tmp_path):
    """With the gateway down, the batch's items go to the spool, in order, and the capture
    does not crash."""
    registry, bus = Registry(), EventBus()
    gateway_box = Mailbox("sql-gateway", 10)
    registry.register("sql-gateway", ActorRef(gateway_box))
    gateway_box.mark_down(lambda: ActorCrashed("actor 'sql-gateway' crashed: Killed"))
    spool_path = tmp_path / "spool"
    root = capture_tree(spool_path, registry, bus)
    batch = FailureBatch(topic="chat.log.failed", events=tuple(failure(n) for n in range(50)))
    async with open_tree(root):
        await bus.publish("chat.log.failed", batch)
        # answered after the batch (one mailbox, in order); the drain itself fails
        assert await registry.lookup("retry-capture").ask(DrainSpool(), timeout=30) is False
        info = root.which_children()[0]
    assert info.restarts == 0
    spool = Spool(spool_path, 1 << 20)
    try:
        assert [item.event_id for item in spool.pending()] == [f"log-{n}" for n in range(50)]
    finally:
        spool.close()
