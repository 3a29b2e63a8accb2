"""Values of the durable retry queue: what goes in, what comes out (see `._queue`)."""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from daz_actors.runtime.backoff import BackoffPolicy, Jitter
from daz_actors.storage.errors import QueueInputError

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "AlertType",
    "CompleteManyResult",
    "FailOutcome",
    "HistoryEntry",
    "Lease",
    "NewItem",
    "QueueAlert",
    "QueueInputError",
    "QueueItem",
    "QueueStats",
    "RetryStatus",
]

# default limit for event_data + event_metadata + checkpoint, encoded as JSON
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024


class RetryStatus(enum.Enum):
    """Status of a queue item (the ``status`` column)."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"  # expired before it could be handed out
    DEAD_LETTER = "dead_letter"


class AlertType(enum.Enum):
    """Kinds of row in ``daz_retry_queue_alerts``."""

    DEAD_LETTER = "dead_letter"
    STUCK_PROCESSING = "stuck_processing"
    NEAR_MAX_RETRIES = "near_max_retries"
    OLD_PENDING = "old_pending"


def _fail(field: str, reason: str) -> QueueInputError:
    return QueueInputError(f"{field}: {reason}")


def _nonempty_text(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise _fail(attribute.name, f"must be a non-empty string, got {value!r}")
    if "\x00" in value:
        raise _fail(attribute.name, "must not contain NUL characters")


def _optional_text(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise _fail(attribute.name, f"must be a string or None, got {type(value).__name__}")
    if "\x00" in value:
        raise _fail(attribute.name, "must not contain NUL characters")


def _priority(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10:
        raise _fail(attribute.name, f"must be an integer from 1 to 10, got {value!r}")


def _count(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise _fail(attribute.name, f"must be a non-negative integer, got {value!r}")


def _seconds(*, positive: bool = False, minimum: float = 0.0) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(attribute.name, f"must be a finite number, got {value!r}")
        if not math.isfinite(value):
            raise _fail(attribute.name, f"must be a finite number, got {value!r}")
        if positive and value <= 0:
            raise _fail(attribute.name, f"must be positive, got {value!r}")
        if value < minimum:
            raise _fail(attribute.name, f"must be at least {minimum:g}, got {value!r}")

    return check


def _aware(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise _fail(attribute.name, f"must be a timezone-aware datetime, got {value!r}")


def _tags(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    for tag in value:  # type: ignore[attr-defined]
        if not isinstance(tag, str) or "\x00" in tag:
            raise _fail(attribute.name, f"must be strings without NUL characters, got {tag!r}")


def _tuple_of_str(value: Any) -> tuple[Any, ...]:
    if isinstance(value, str):
        raise _fail("tags", f"must be a sequence of strings, not the string {value!r}")
    return tuple(value)


def _jitter(value: object) -> Jitter:
    try:
        return Jitter(value)
    except ValueError:
        choices = ", ".join(repr(j.value) for j in Jitter)
        raise QueueInputError(f"jitter: expected one of {choices}, got {value!r}") from None


@attrs.frozen(kw_only=True)
class NewItem:
    """An item to enqueue. Invalid values raise `QueueInputError` at construction.

    ``event_data``, ``event_metadata`` and ``checkpoint`` must be JSON-serialisable; that and
    their size are checked when the item is enqueued.
    """

    # idempotency key: enqueueing the same event id twice makes one item
    event_id: str = attrs.field(validator=_nonempty_text)
    # selects the handler
    event_type: str = attrs.field(validator=_nonempty_text)
    # what the handler needs to redo the operation (JSON)
    event_data: Any = attrs.field(factory=dict)
    # CyTube channel the event belongs to, if any
    channel: str | None = attrs.field(default=None, validator=_optional_text)
    # plugin that owns the event, if any
    plugin: str | None = attrs.field(default=None, validator=_optional_text)
    # retry policy name (docs/retry.md), e.g. "cytube_command"
    operation_type: str = attrs.field(default="default", validator=_nonempty_text)
    # free-form context for logs and operators (JSON object or value)
    event_metadata: Any = attrs.field(factory=dict)
    # 1..10; 10 is handed out first
    priority: int = attrs.field(default=5, validator=_priority)
    # retries after the first attempt before the item goes to dead letter
    max_retries: int = attrs.field(default=3, validator=_count)
    # delay before the first retry, seconds
    retry_delay: float = attrs.field(default=60.0, validator=_seconds())
    # growth of the delay per retry (>= 1)
    backoff_multiplier: float = attrs.field(default=2.0, validator=_seconds(minimum=1.0))
    # cap on the delay, seconds
    max_delay: float = attrs.field(default=3600.0, validator=_seconds())
    # spread of each delay (the retry policy's); the worker applies it when it fails an attempt
    jitter: Jitter = attrs.field(default=Jitter.NONE, converter=_jitter)
    # how long one attempt may run, seconds
    attempt_timeout: float = attrs.field(default=30.0, validator=_seconds(positive=True))
    # follows the operation through attempts, logs and history
    correlation_id: str | None = attrs.field(default=None, validator=_optional_text)
    # labels for operators
    tags: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str, validator=_tags)
    # not handed out before this time (None: at once)
    not_before: datetime | None = attrs.field(default=None, validator=_aware)
    # never handed out after this time; marked failed (code "expired") instead
    expires_at: datetime | None = attrs.field(default=None, validator=_aware)
    # resume point for a multi-step handler (JSON), None for none
    checkpoint: Any = None


@attrs.frozen(kw_only=True)
class Lease:
    """A worker's claim on one item: what `complete` and `fail` need."""

    # the item
    item_id: int
    # the worker that acquired it
    worker_id: str
    # the token of this acquisition; stale after the lock expired and someone else took it
    lock_token: uuid.UUID


@attrs.frozen(kw_only=True)
class QueueItem:
    """A row of ``daz_retry_queue``."""

    id: int
    event_id: str
    event_type: str
    channel: str | None
    plugin: str | None
    operation_type: str
    event_data: Any
    event_metadata: Any
    status: RetryStatus
    priority: int
    retry_count: int
    max_retries: int
    retry_delay: float
    backoff_multiplier: float
    max_delay: float
    jitter: Jitter
    attempt_timeout: float
    next_retry_at: datetime
    locked_by: str | None
    locked_at: datetime | None
    lock_token: uuid.UUID | None
    last_error: str | None
    last_error_code: str | None
    correlation_id: str | None
    tags: tuple[str, ...]
    checkpoint: Any
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    expires_at: datetime | None

    def backoff(self) -> BackoffPolicy:
        """The item's retry schedule: delay ``min(max_delay, retry_delay * multiplier**n)``
        before retry n + 1, spread by its jitter. The worker computes each delay with it."""
        return BackoffPolicy(
            initial=self.retry_delay,
            multiplier=self.backoff_multiplier,
            max_delay=max(self.max_delay, self.retry_delay),
            jitter=self.jitter,
        )

    @property
    def lease(self) -> Lease:
        """The lease of a processing item (as `acquire` returns them)."""
        if self.locked_by is None or self.lock_token is None:
            raise ValueError(f"item {self.id} is {self.status.value}, not held by a worker")
        return Lease(item_id=self.id, worker_id=self.locked_by, lock_token=self.lock_token)


@attrs.frozen(kw_only=True)
class FailOutcome:
    """What `fail` did."""

    # False: the lease was stale and nothing changed
    accepted: bool
    # the item after the failure was recorded (None when not accepted)
    item: QueueItem | None

    @property
    def dead_lettered(self) -> bool:
        """Whether the item went to dead letter."""
        return self.item is not None and self.item.status is RetryStatus.DEAD_LETTER


@attrs.frozen(kw_only=True)
class CompleteManyResult:
    """What `complete_many` did."""

    # item ids marked completed
    completed: frozenset[int]
    # item ids whose lease was stale (unchanged)
    refused: frozenset[int]


@attrs.frozen(kw_only=True)
class HistoryEntry:
    """A row of ``daz_retry_history``: one attempt."""

    id: int
    item_id: int
    event_id: str
    # 1 for the first attempt
    attempt: int
    worker_id: str
    lock_token: uuid.UUID
    correlation_id: str | None
    started_at: datetime
    finished_at: datetime | None
    # None while running; else "completed", "failed", "dead_letter" or "lock_expired"
    outcome: str | None
    error: str | None
    error_code: str | None


@attrs.frozen(kw_only=True)
class QueueStats:
    """A row of ``daz_retry_queue_stats``: counts per status, event type and plugin."""

    status: RetryStatus
    event_type: str
    plugin: str | None
    item_count: int
    oldest_created_at: datetime
    earliest_next_retry_at: datetime
    max_retry_count: int
    avg_retry_count: float


@attrs.frozen(kw_only=True)
class QueueAlert:
    """A row of ``daz_retry_queue_alerts``."""

    alert_type: AlertType
    # "error" or "warning"
    severity: str
    item_id: int
    event_id: str
    event_type: str
    plugin: str | None
    status: RetryStatus
    retry_count: int
    max_retries: int
    last_error: str | None
    last_error_code: str | None
    # when the condition began (dead since, locked since, due since)
    since: datetime


def item_from_row(row: Mapping[str, Any], decode: Any) -> QueueItem:
    """Build a `QueueItem` from a ``daz_retry_queue`` row; ``decode`` parses jsonb text."""
    checkpoint = row["checkpoint"]
    return QueueItem(
        id=row["id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        channel=row["channel_name"],
        plugin=row["plugin_name"],
        operation_type=row["operation_type"],
        event_data=decode(row["event_data"]),
        event_metadata=decode(row["event_metadata"]),
        status=RetryStatus(row["status"]),
        priority=row["priority"],
        retry_count=row["retry_count"],
        max_retries=row["max_retries"],
        retry_delay=row["retry_delay_seconds"],
        backoff_multiplier=row["backoff_multiplier"],
        max_delay=row["max_delay_seconds"],
        jitter=Jitter(row.get("jitter") or Jitter.NONE.value),
        attempt_timeout=row["attempt_timeout_seconds"],
        next_retry_at=row["next_retry_at"],
        locked_by=row["locked_by"],
        locked_at=row["locked_at"],
        lock_token=row["lock_token"],
        last_error=row["last_error"],
        last_error_code=row["last_error_code"],
        correlation_id=row["correlation_id"],
        tags=tuple(row["tags"]),
        checkpoint=None if checkpoint is None else decode(checkpoint),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        completed_at=row["completed_at"],
        expires_at=row["expires_at"],
    )
