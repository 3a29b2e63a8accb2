"""Failure capture: turns retryable failure events that carry an intent into queue items.

Subscribes to failure topics (``*.failed``, ``*.error``, ``*.timeout``) with the BLOCK
policy, so no event is dropped, and answers explicit `ScheduleRetry` requests (also
accepted as events on the topic ``retry.schedule``). Capture is explicit: only an event
whose publisher attached an `Intent` (the caller chose, at the call site, to have the
operation retried and said what it means) is queued; every other failure was reported to
its caller and is left to the logs. Enqueueing is idempotent by the event's id: a failure
published twice is queued once. The item's retry settings (jitter included) come from the
retry policy of the event's operation type.

When PostgreSQL is unreachable, items go to the local spool (an fsynced file in the data
directory) and are drained into the queue, in order, before any newer item: on start (so
a process killed during an outage loses nothing it had spooled) and on every `DrainSpool`
tick the dispatcher sends.

With a metrics registry, each item `_enqueue` is given is counted once in
``daz_retry_scheduled_total{event_type,outcome}`` (outcome ``queued``, ``duplicate``,
``spooled`` or ``refused``), each item moved from the spool into the queue in
``daz_retry_spool_drained_total{event_type}``, and each damaged spool record found when an
incarnation opens the spool (its bytes moved to ``<spool>.quarantine``) in
``daz_retry_spool_quarantined_total``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

import attrs
import trio
from prometheus_client import CollectorRegistry, Counter

from daz_actors.retry.intents import intent_data
from daz_actors.retry.policies import RetryPolicy
from daz_actors.runtime.actor import Actor, ActorContext, Startable, run_actor
from daz_actors.runtime.bus import Overflow, Published
from daz_actors.runtime.events import FailureBatch, FailureEvent
from daz_actors.runtime.log_summary import RepeatedWarnings
from daz_actors.runtime.metric_once import metric_once
from daz_actors.storage import queue
from daz_actors.storage.errors import QueueInputError, SqlError
from daz_actors.storage.queue_types import NewItem
from daz_actors.storage.spool import Spool, SpoolFull
from daz_actors.storage.sql_messages import CALL_FAILED, SqlClient

__all__ = [
    "CAPTURE_NAME",
    "DrainSpool",
    "RetryCapture",
    "ScheduleRetry",
    "capture_with_spool",
    "item_for_failure",
    "scheduled_counter",
    "spool_drained_counter",
    "spool_quarantined_counter",
]

log = logging.getLogger("daz_actors.retry")
outage = RepeatedWarnings(log)  # one line per kind per interval while the database is away

SCHEDULE_TOPIC = "retry.schedule"
CAPTURE_NAME = "retry-capture"  # its registered name in the retry subtree

Outcome = Literal["queued", "duplicate", "spooled", "refused"]


def scheduled_counter(registry: CollectorRegistry) -> Counter:
    """The counter of items given to the capture, on `registry`, registered there once.

    Every capture incarnation (and every retry subtree built on the same registry) shares
    it: a second ``Counter(...)`` of the same name would be refused as a duplicate.
    """
    return metric_once(
        registry,
        "daz_retry_scheduled",
        lambda: Counter(
            "daz_retry_scheduled",
            "Items the failure capture was given, by event type and outcome: queued (new"
            " in the queue), duplicate (its event id was queued already), spooled (kept in"
            " the local spool while the database is unreachable), refused (neither).",
            ["event_type", "outcome"],
            registry=registry,
        ),
    )


def spool_drained_counter(registry: CollectorRegistry) -> Counter:
    """The counter of items moved from the spool into the queue, on `registry`, once."""
    return metric_once(
        registry,
        "daz_retry_spool_drained",
        lambda: Counter(
            "daz_retry_spool_drained",
            "Items moved from the local spool into the queue, by event type (an item the"
            " queue already had is counted too: enqueueing is idempotent by event id).",
            ["event_type"],
            registry=registry,
        ),
    )


def spool_quarantined_counter(registry: CollectorRegistry) -> Counter:
    """The counter of damaged spool records moved to the quarantine file, once."""
    return metric_once(
        registry,
        "daz_retry_spool_quarantined",
        lambda: Counter(
            "daz_retry_spool_quarantined",
            "Damaged or torn spool records found when the spool was opened: their bytes were"
            " moved to <spool>.quarantine and they were not queued (docs/retry.md).",
            registry=registry,
        ),
    )


@attrs.frozen
class DrainSpool:
    """Try to move spooled items into the queue now (sent by the dispatcher each poll)."""


@attrs.frozen(kw_only=True)
class ScheduleRetry:
    """Queue `item` directly (reply: True if new, False if its event id was queued already)."""

    item: NewItem


def item_for_failure(event: FailureEvent, policy: RetryPolicy) -> NewItem:
    """The queue item that carries out `event`'s intent again under `policy`."""
    if event.intent is None:
        raise ValueError(f"failure event {event.event_id} carries no intent to queue")
    return NewItem(
        event_id=event.event_id,
        event_type=event.intent.name,
        event_data=intent_data(event.intent),
        channel=event.channel,
        plugin=event.plugin or event.source,
        operation_type=event.operation,
        priority=policy.priority,
        tags=policy.tags,
        event_metadata={
            "topic": event.topic,
            "source": event.source,
            "error": event.error,
            "error_code": event.error_code,
            "occurred_at": datetime.fromtimestamp(event.occurred_at, UTC).isoformat(),
        },
        max_retries=policy.max_retries,
        retry_delay=policy.initial,
        backoff_multiplier=policy.multiplier,
        max_delay=policy.max_delay,
        jitter=policy.jitter,
        attempt_timeout=policy.attempt_timeout,
        correlation_id=event.correlation_id,
    )


class RetryCapture(Actor):
    """One incarnation: subscribe, then queue what arrives."""

    def __init__(
        self,
        *,
        gateway: str,
        patterns: Sequence[str],
        ignore_event_types: Sequence[str],
        policies: Mapping[str, RetryPolicy],
        spool: Spool,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        self.spool = spool
        self.gateway = gateway
        self.patterns = tuple(patterns)
        self.ignore = frozenset(ignore_event_types)
        self.policies = policies
        self.queued = 0
        self.duplicates = 0
        self.skipped = 0
        self.spooled = 0
        self.refused = 0  # items that could not be queued nor spooled (logged as errors)
        # None (no metrics registry): nothing is counted beyond this incarnation's attributes
        self._scheduled = scheduled_counter(metrics) if metrics is not None else None
        self._drained = spool_drained_counter(metrics) if metrics is not None else None

    async def on_start(self) -> None:
        self.db = SqlClient(self.ctx.registry.lookup(self.gateway))
        bus = self.ctx.bus
        for sub in bus.subscriptions():
            if sub.ref is self.ctx.ref:
                bus.unsubscribe(sub)
        for pattern in (*self.patterns, SCHEDULE_TOPIC):
            bus.subscribe(pattern, self.ctx.ref, overflow=Overflow.BLOCK)
        await self._drain()

    async def _drain(self) -> bool:
        """Move spooled items into the queue; True when the spool is empty."""
        if not self.spool.pending_count:
            return True

        async def send(items: list[NewItem]) -> None:
            await self.db.run(partial(queue.enqueue_many, items=items), name="retry.drain")
            if self._drained is not None:
                for item in items:
                    self._drained.labels(item.event_type).inc()

        try:
            drained = await self.spool.drain(send)
        except CALL_FAILED as exc:
            outage.warning(
                "spool.wait",
                "spool: %d items wait for the database (%s)",
                self.spool.pending_count,
                exc,
            )
            return False
        log.info("spool: moved %d items into the queue", drained)
        return not self.spool.pending_count

    async def handle(self, message: Any) -> Any:
        if isinstance(message, DrainSpool):
            return await self._drain()
        if isinstance(message, ScheduleRetry):
            return await self._enqueue(message.item)
        if isinstance(message, Published):
            event = message.event
            if isinstance(event, ScheduleRetry):
                return await self._enqueue(event.item)
            if isinstance(event, FailureEvent):
                item = self._item(event)
                return False if item is None else await self._enqueue(item)
            if isinstance(event, FailureBatch):
                items = [item for e in event.events if (item := self._item(e)) is not None]
                return await self._enqueue_many(items)
            self.skipped += 1
            return False
        raise TypeError(f"retry capture does not handle {type(message).__name__}")

    def _item(self, event: FailureEvent) -> NewItem | None:
        """The queue item of `event`, or None (counted as skipped): only what a caller chose
        to have retried (an intent) is queued."""
        if event.intent is None or not event.retryable or event.event_type in self.ignore:
            self.skipped += 1
            return None
        policy = self.policies.get(event.operation) or self.policies["default"]
        return item_for_failure(event, policy)

    async def _enqueue_many(self, items: list[NewItem]) -> int:
        """Queue `items` in one call (the new ones counted), or spool them with one fsync
        while the database is unreachable; anything else goes item by item (`_enqueue`),
        so that one bad or oversized item keeps the others. The number queued or spooled."""
        if not items:
            return 0
        if await self._drain():
            try:
                flags: tuple[bool, ...] = await self.db.run(
                    partial(queue.enqueue_many, items=items), name="retry.enqueue"
                )
            except QueueInputError:  # one bad item refuses the statement: one at a time
                return sum([await self._enqueue(item) for item in items])
            except CALL_FAILED as exc:
                if isinstance(exc, SqlError) and not exc.retryable:
                    return sum([await self._enqueue(item) for item in items])
                outage.warning(
                    "spooling", "database unreachable (%s): spooling %d items", exc, len(items)
                )
            else:
                for item, is_new in zip(items, flags, strict=True):
                    self._count(item, "queued" if is_new else "duplicate")
                self.queued += sum(flags)
                self.duplicates += len(flags) - sum(flags)
                log.info(
                    "queued %d of %d items (%s) for retry",
                    sum(flags), len(items), items[0].event_type,
                )  # fmt: skip
                return sum(flags)
        try:
            await self.spool.append_many_async(items)
        except SpoolFull:  # not all of them fit: as many as fit, the rest refused and logged
            return sum([await self._enqueue(item) for item in items])
        self.spooled += len(items)
        for item in items:
            self._count(item, "spooled")
        return len(items)

    def _count(self, item: NewItem, outcome: Outcome) -> None:
        """Count `item` once under `outcome` in the metric (the attributes are counted apart)."""
        if self._scheduled is not None:
            self._scheduled.labels(item.event_type, outcome).inc()

    async def _enqueue(self, item: NewItem) -> bool:
        """Queue `item` (True if new), or spool it while the database is unreachable.

        Spooled items are reported as new. Items already spooled go first, so order holds.
        """
        if await self._drain():
            try:
                is_new: bool = await self.db.run(
                    partial(queue.enqueue, item=item), name="retry.enqueue"
                )
            except QueueInputError as exc:  # can never be queued: say so, keep going
                self.refused += 1
                self._count(item, "refused")
                log.error("cannot queue %s (%s): %s", item.event_id, item.event_type, exc)
                return False
            except CALL_FAILED as exc:
                if isinstance(exc, SqlError) and not exc.retryable:
                    self.refused += 1
                    self._count(item, "refused")
                    log.error("cannot queue %s: %s", item.event_id, exc)
                    return False
                # enqueue is idempotent: spooling after a call that may have worked is safe
                outage.warning(
                    "spooling", "database unreachable (%s): spooling %s", exc, item.event_id
                )
            else:
                if is_new:
                    self.queued += 1
                    self._count(item, "queued")
                    log.info(
                        "queued %s (%s) for retry, correlation %s",
                        item.event_id, item.event_type, item.correlation_id,
                        extra={"correlation_id": item.correlation_id, "event_id": item.event_id,
                               "channel": item.channel},
                    )  # fmt: skip
                else:
                    self.duplicates += 1
                    self._count(item, "duplicate")
                return is_new
        try:
            await self.spool.append_async(item)
        except SpoolFull as exc:
            self.refused += 1
            self._count(item, "refused")
            log.error(
                "LOST: %s (%s, correlation %s) could not be queued or spooled: %s",
                item.event_id, item.event_type, item.correlation_id, exc,
            )  # fmt: skip
            return False
        self.spooled += 1
        self._count(item, "spooled")
        return True


def capture_with_spool(*, spool_path: Path, spool_max_bytes: int, **capture: Any) -> Startable:
    """A Startable running `RetryCapture` with the spool open for the incarnation."""

    async def start(
        ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await trio.to_thread.run_sync(
            partial(spool_path.parent.mkdir, parents=True, exist_ok=True, mode=0o700)
        )
        spool = await Spool.open_async(spool_path, spool_max_bytes)
        if (metrics := capture.get("metrics")) is not None:
            spool_quarantined_counter(metrics).inc(spool.skipped_records)
        try:
            await run_actor(RetryCapture(spool=spool, **capture), ctx, task_status)
        finally:
            spool.close()

    return start
