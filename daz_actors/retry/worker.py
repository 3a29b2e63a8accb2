"""A retry worker: acquire a batch, run each item's handler, complete or fail it.

Woken by the dispatcher (`Wake`); drains the queue batch by batch, then waits again.
Completions are written once per batch, in the same call (one round trip, one commit) as
the claim of the next batch. On an orderly stop the worker
finishes its current attempt within its shutdown timeout; items it acquired but did not
finish are handed back (due at once, not counted as an attempt). Items stranded by a
killed process are reclaimed by any worker after the lock timeout.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from datetime import datetime
from functools import partial
from typing import Any

import attrs
import trio
from prometheus_client import CollectorRegistry, Histogram

from daz_actors.retry.handlers import (
    AttemptContext,
    Checkpoint,
    HandlerRegistry,
    ItemReleased,
    PermanentError,
    UnknownEventType,
)
from daz_actors.retry.outcomes import Outcome, RetryOutcome, topic_of
from daz_actors.runtime.actor import ActorContext
from daz_actors.runtime.bus import EventBus
from daz_actors.runtime.metric_once import metric_once
from daz_actors.runtime.registry import Registry
from daz_actors.storage import queue
from daz_actors.storage.error_classes import ErrorClassifier
from daz_actors.storage.queue_types import CompleteManyResult, Lease, QueueItem, RetryStatus
from daz_actors.storage.sql_messages import CALL_FAILED, SqlClient

__all__ = ["RetryWorker", "Wake", "WorkerStats", "attempt_histogram", "worker_id"]

log = logging.getLogger("daz_actors.retry")

HAND_BACK_TIMEOUT = 5.0
MAX_CACHED_CHILDREN = 1000  # (event type, outcome) pairs of the attempt histogram kept

# attempt timeouts are tens of seconds (docs/retry.md), so the buckets reach past them
ATTEMPT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def attempt_histogram(registry: CollectorRegistry) -> Histogram:
    """The attempt duration histogram on `registry`, registered there on first use only.

    Every worker of a process (and every retry subtree built on the same registry) shares
    it: a second ``Histogram(...)`` of the same name would be refused as a duplicate.
    """
    return metric_once(
        registry,
        "daz_retry_attempt_duration_seconds",
        lambda: Histogram(
            "daz_retry_attempt_duration_seconds",
            "Duration of retry handler attempts by event type and outcome"
            " (succeeded, failed, timed_out).",
            ["event_type", "outcome"],
            registry=registry,
            buckets=ATTEMPT_BUCKETS,
        ),
    )


def _unknown(item: QueueItem, exc: UnknownEventType) -> str:
    """Why an item has no handler, naming its intent's version when it has one."""
    data = item.event_data
    version = data.get("version") if isinstance(data, dict) else None
    if isinstance(version, int) and not isinstance(version, bool):
        return f"no handler for intent {item.event_type!r} version {version} in this process"
    return str(exc)


@attrs.frozen
class _Failure:
    """An attempt that did not succeed: what to write (`RetryWorker._fail`)."""

    item: QueueItem
    error: str
    code: str | None
    retryable: bool


class _Released:
    """An attempt whose handler released its item itself (`ItemReleased`)."""


RELEASED = _Released()


@attrs.frozen
class Wake:
    """Tell a worker there may be due items."""


def worker_id(index: int) -> str:
    """Unique per host, process and index, so processes and machines can share one queue."""
    return f"{socket.gethostname()}:{os.getpid()}:{index}"


@attrs.define
class WorkerStats:
    """Counters of one worker (all incarnations)."""

    attempts: int = 0
    completed: int = 0
    failed: int = 0  # failed attempts scheduled for another try
    dead_lettered: int = 0
    handed_back: int = 0


class RetryWorker:
    """A `Startable`: one incarnation drains the queue whenever it is woken."""

    def __init__(
        self,
        *,
        index: int,
        handlers: HandlerRegistry,
        classifier: ErrorClassifier,
        gateway: str,
        batch_size: int,
        lock_timeout: float,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        self.worker_id = worker_id(index)
        self.handlers = handlers
        self.classifier = classifier
        self.gateway = gateway
        self.batch_size = batch_size
        self.lock_timeout = lock_timeout
        self.stats = WorkerStats()
        # observes each handler attempt's duration; None (no metrics registry) observes nothing
        self._durations = attempt_histogram(metrics) if metrics is not None else None
        self._children: dict[tuple[str, str], Any] = {}  # its labelled children, by labels
        self._started = 0.0  # when the current attempt's handler started (trio time)
        self._registry = Registry()  # the incarnation's registry, set when it starts
        self._bus: EventBus | None = None  # where outcomes are published (the incarnation's)

    async def __call__(
        self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._registry = ctx.registry
        self._bus = ctx.bus
        db = SqlClient(ctx.registry.lookup(self.gateway))
        task_status.started()
        while not ctx.stop_requested.is_set():
            await ctx.mailbox.get()  # a Wake; idle here, so a stop cancels at once
            with ctx.busy():
                await self._drain(ctx, db)

    async def _drain(self, ctx: ActorContext, db: SqlClient) -> None:
        """Claim and run batches until none is due. In the steady state one call (one round
        trip, one commit) writes the completions of a batch and claims the next."""
        done: list[QueueItem] = []  # succeeded, completion not written yet
        while True:
            if ctx.stop_requested.is_set():
                if done:
                    with trio.CancelScope(shield=True), trio.move_on_after(HAND_BACK_TIMEOUT):
                        await self._settle(db, done, [])
                return
            try:
                result, items = await db.run(
                    partial(
                        queue.complete_and_acquire,
                        worker_id=self.worker_id,
                        leases=[i.lease for i in done],
                        batch_size=self.batch_size,
                        lock_timeout=self.lock_timeout,
                    ),
                    name="retry.complete_and_acquire",
                )
            except CALL_FAILED as exc:  # `done` stays leased: reclaimed after the lock timeout
                log.warning("%s: cannot complete or acquire items: %s", self.worker_id, exc)
                return
            await self._completed(done, result)
            if not items:
                return
            done = await self._run_batch(ctx, db, items)

    async def _run_batch(
        self, ctx: ActorContext, db: SqlClient, items: list[QueueItem]
    ) -> list[QueueItem]:
        """Run the batch's attempts; the items that succeeded, for the caller to complete
        with its next claim. Interrupted (a stop, an error, a lease about to expire), it
        writes the completions and hands the unfinished items back itself, and returns []."""
        done: list[QueueItem] = []
        unfinished = list(items)
        acquired_at = trio.current_time()
        whole = False
        try:
            expiring = False
            while unfinished and not expiring and not ctx.stop_requested.is_set():
                # One timer (cancel scope) for a run of attempts: a scope per attempt cost
                # about 6 us of a no-op job's 90 (issue 15). Each attempt sets the timer's
                # deadline and clears it once its handler is over; an attempt that did not
                # succeed ends the run, and its failure is written outside the timer.
                failed: _Failure | None = None
                with trio.CancelScope() as timer:
                    while unfinished and not ctx.stop_requested.is_set():
                        item = unfinished[0]
                        late = trio.current_time() - acquired_at + item.attempt_timeout
                        if item is not items[0] and late > self.lock_timeout:
                            # its lease could expire mid-attempt and another worker run it
                            # too: hand the rest back (released at once), acquire afresh
                            expiring = True
                            break
                        ended = await self._attempt(db, item, timer)
                        unfinished.pop(0)
                        if isinstance(ended, _Released):  # its handler released it
                            continue
                        if ended is not None:
                            failed = ended
                            break
                        done.append(item)
                if timer.cancelled_caught:  # the handler of unfinished[0] ran out of time
                    failed = self._timed_out(unfinished.pop(0))
                if failed is not None:
                    await self._fail(db, failed)
            whole = not unfinished
        finally:
            if not whole:
                with trio.CancelScope(shield=True), trio.move_on_after(HAND_BACK_TIMEOUT):
                    await self._settle(db, done, [i.lease for i in unfinished])
        return done if whole else []

    async def _completed(self, done: list[QueueItem], result: CompleteManyResult) -> None:
        """Count and publish the completions written (`result`) of the items `done`."""
        self.stats.completed += len(result.completed)
        for item in done:
            if item.id in result.completed:
                await self._publish(item, Outcome.SUCCESS)
        if result.refused:
            log.warning(
                "%s: %d completions refused (leases expired and reclaimed)",
                self.worker_id,
                len(result.refused),
            )

    async def _settle(self, db: SqlClient, done: list[QueueItem], unfinished: list[Lease]) -> None:
        try:
            if done:
                result = await db.run(
                    partial(queue.complete_many, leases=[i.lease for i in done]),
                    name="retry.complete",
                )
                await self._completed(done, result)
            if unfinished:
                released = await db.run(
                    partial(queue.release_many, leases=unfinished), name="retry.release"
                )
                self.stats.handed_back += len(released)
                log.info("%s: handed back %d unfinished items", self.worker_id, len(released))
        except CALL_FAILED as exc:  # the items stay leased: reclaimed after the lock timeout
            log.warning("%s: cannot record outcomes: %s", self.worker_id, exc)

    async def _attempt(
        self, db: SqlClient, item: QueueItem, timer: trio.CancelScope
    ) -> _Failure | _Released | None:
        """Run one attempt under `timer` (its deadline set for the attempt); None if it
        succeeded (its completion is written with the batch), `RELEASED` if its handler
        released the item itself (`ItemReleased`), else its failure, to write.

        A handler that runs past the deadline is cancelled: `trio.Cancelled` leaves this
        method and `timer` catches it (the caller then records the timeout)."""
        self.stats.attempts += 1
        try:
            handler = self.handlers.get(item.event_type)
        except UnknownEventType as exc:
            return _Failure(item, _unknown(item, exc), "unknown_event_type", False)
        lease = item.lease

        async def save(checkpoint: dict[str, Any]) -> bool:
            saved: bool = await db.run(
                partial(queue.save_checkpoint, lease=lease, checkpoint=checkpoint),
                name="retry.checkpoint",
            )
            return saved

        context = AttemptContext(
            event_id=item.event_id,
            correlation_id=item.correlation_id,
            attempt=item.retry_count + 1,
            lease=lease,
            checkpoint=Checkpoint(item.checkpoint, save),
            registry=self._registry,
            db=db,
            attempt_timeout=item.attempt_timeout,
        )
        failure: _Failure | None = None
        released = False
        self._started = started = trio.current_time()
        timer.deadline = started + item.attempt_timeout
        try:
            await handler(item, context)
        except ItemReleased as exc:
            released = True
            reason = str(exc)
        except Exception as exc:  # one classification (a PermanentError says so)
            verdict = self.classifier.classify(exc)
            error = str(exc) if isinstance(exc, PermanentError) else f"{type(exc).__name__}: {exc}"
            failure = _Failure(item, error, verdict.code, verdict.retryable)
        timer.deadline = math.inf  # (a Cancelled, from the timer or a stop, passed above)
        if timer.cancel_called:  # the handler swallowed the timer's cancellation
            return self._timed_out(item)
        if released:
            self._observe(item, "released")
            self.stats.handed_back += 1
            log.info(
                "%s: item %d (%s) released by its handler on attempt %d: %s, correlation %s",
                self.worker_id, item.id, item.event_type, item.retry_count + 1,
                reason or "no reason given", item.correlation_id, extra=self._fields(item),
            )  # fmt: skip
            return RELEASED
        self._observe(item, "succeeded" if failure is None else "failed")
        if failure is None and log.isEnabledFor(logging.INFO):
            log.info(
                "%s: item %d (%s) succeeded on attempt %d, correlation %s",
                self.worker_id, item.id, item.event_type, item.retry_count + 1,
                item.correlation_id, extra=self._fields(item),
            )  # fmt: skip
        return failure

    def _timed_out(self, item: QueueItem) -> _Failure:
        """The failure of an attempt whose handler ran past its attempt timeout."""
        self._observe(item, "timed_out")
        error = f"attempt timed out after {item.attempt_timeout:g} s"
        return _Failure(item, error, "attempt_timeout", True)

    def _observe(self, item: QueueItem, outcome: str) -> None:
        """Record the attempt's duration (an attempt cancelled by a stop has no outcome)."""
        if self._durations is None:
            return
        key = (item.event_type, outcome)
        child = self._children.get(key)
        if child is None:  # `labels()` takes a lock and builds a key: once per pair
            if len(self._children) >= MAX_CACHED_CHILDREN:
                self._children.clear()
            child = self._children[key] = self._durations.labels(*key)
        child.observe(trio.current_time() - self._started)

    async def _publish(
        self,
        item: QueueItem,
        outcome: Outcome,
        *,
        error: str | None = None,
        error_code: str | None = None,
        next_retry_at: datetime | None = None,
    ) -> None:
        """Tell the bus how the attempt ended (``retry.success`` / ``.failed`` /
        ``.dead_letter``)."""
        if self._bus is None:
            return
        event = RetryOutcome(
            outcome=outcome,
            item_id=item.id,
            event_id=item.event_id,
            event_type=item.event_type,
            plugin=item.plugin,
            channel=item.channel,
            correlation_id=item.correlation_id,
            attempt=item.retry_count + 1,
            error=error,
            error_code=error_code,
            next_retry_at=next_retry_at,
        )
        await self._bus.publish(topic_of(outcome), event)

    def _fields(self, item: QueueItem, **more: Any) -> dict[str, Any]:
        """Structured log fields of an attempt (see docs/logging.md)."""
        return {
            "actor": self.worker_id,
            "correlation_id": item.correlation_id,
            "event_id": item.event_id,
            "channel": item.channel,
            **more,
        }

    async def _fail(self, db: SqlClient, failure: _Failure) -> None:
        item, error, code = failure.item, failure.error, failure.code
        try:
            outcome = await db.run(
                partial(
                    queue.fail,
                    lease=item.lease,
                    error=error,
                    error_code=code,
                    retryable=failure.retryable,
                    # the one place a retry's delay is computed: the item's policy, jitter too
                    next_delay=item.backoff().delay(item.retry_count),
                ),
                name="retry.fail",
            )
        except CALL_FAILED as exc:
            log.warning("%s: cannot record failure of item %d: %s", self.worker_id, item.id, exc)
            return
        if not outcome.accepted or outcome.item is None:
            log.warning("%s: failure of item %d refused (lease expired)", self.worker_id, item.id)
            return
        dead = outcome.item.status is RetryStatus.DEAD_LETTER
        await self._publish(
            item,
            Outcome.DEAD_LETTER if dead else Outcome.FAILED,
            error=error,
            error_code=code,
            next_retry_at=None if dead else outcome.item.next_retry_at,
        )
        if dead:
            self.stats.dead_lettered += 1
            log.error(
                "%s: item %d (%s) dead-lettered after attempt %d: %s [%s], correlation %s",
                self.worker_id, item.id, item.event_type, item.retry_count + 1, error, code,
                item.correlation_id, extra=self._fields(item, error=error),
            )  # fmt: skip
        else:
            self.stats.failed += 1
            log.warning(
                "%s: item %d (%s) attempt %d failed: %s [%s]; next at %s, correlation %s",
                self.worker_id, item.id, item.event_type, item.retry_count + 1, error, code,
                outcome.item.next_retry_at.isoformat(), item.correlation_id,
                extra=self._fields(item, error=error),
            )  # fmt: skip
