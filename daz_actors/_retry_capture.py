"""Failure capture: turns retryable failure events into durable queue items.

Subscribes to failure topics (``*.failed``, ``*.error``, ``*.timeout``) with the BLOCK
policy, so no event is dropped, and answers explicit `ScheduleRetry` requests (also
accepted as events on the topic ``retry.schedule``). Enqueueing is idempotent by the
event's id: a failure published twice is queued once. The item's retry settings come
from the retry policy of the event's operation type.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import attrs

from . import _queue as queue
from ._actor import Actor
from ._bus import Overflow, Published
from ._config import RetryPolicy
from ._events import FailureEvent
from ._queue_types import NewItem
from ._sql_messages import SqlClient

__all__ = ["RetryCapture", "ScheduleRetry", "item_for_failure"]

log = logging.getLogger("daz_actors.retry")

SCHEDULE_TOPIC = "retry.schedule"


@attrs.frozen(kw_only=True)
class ScheduleRetry:
    """Queue `item` directly (reply: True if new, False if its event id was queued already)."""

    item: NewItem


def item_for_failure(event: FailureEvent, policy: RetryPolicy) -> NewItem:
    """The queue item that retries `event` under `policy`."""
    return NewItem(
        event_id=event.event_id,
        event_type=event.event_type,
        event_data=dict(event.retry_data),
        channel=event.channel,
        operation_type=event.operation,
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
    ) -> None:
        self.gateway = gateway
        self.patterns = tuple(patterns)
        self.ignore = frozenset(ignore_event_types)
        self.policies = policies
        self.queued = 0
        self.duplicates = 0
        self.skipped = 0

    async def on_start(self) -> None:
        self.db = SqlClient(self.ctx.registry.lookup(self.gateway))
        bus = self.ctx.bus
        for sub in bus.subscriptions():
            if sub.ref is self.ctx.ref:
                bus.unsubscribe(sub)
        for pattern in (*self.patterns, SCHEDULE_TOPIC):
            bus.subscribe(pattern, self.ctx.ref, overflow=Overflow.BLOCK)

    async def handle(self, message: Any) -> Any:
        if isinstance(message, ScheduleRetry):
            return await self._enqueue(message.item)
        if isinstance(message, Published):
            event = message.event
            if isinstance(event, ScheduleRetry):
                return await self._enqueue(event.item)
            if isinstance(event, FailureEvent):
                if not event.retryable or event.event_type in self.ignore:
                    self.skipped += 1
                    return False
                policy = self.policies.get(event.operation) or self.policies["default"]
                return await self._enqueue(item_for_failure(event, policy))
            self.skipped += 1
            return False
        raise TypeError(f"retry capture does not handle {type(message).__name__}")

    async def _enqueue(self, item: NewItem) -> bool:
        # A database outage raises SqlError here: the actor crashes and the supervisor
        # restarts it; the event stays in the failure log. (The local spool, issue 4 item 7,
        # is what keeps it durable across a database outage.)
        is_new: bool = await self.db.run(partial(queue.enqueue, item=item), name="retry.enqueue")
        if is_new:
            self.queued += 1
            log.info(
                "queued %s (%s) for retry, correlation %s",
                item.event_id, item.event_type, item.correlation_id,
            )  # fmt: skip
        else:
            self.duplicates += 1
        return is_new
