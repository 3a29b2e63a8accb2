"""A typed API over the durable retry queue (schema in ``schema/0001`` and ``0002``).

Every function is one asyncio coroutine taking an asyncpg connection or pool and making one
round trip (``complete_many`` one per worker id), so a trio caller crosses the bridge to
asyncio once per operation, through the SQL gateway (whose pool runs on an asyncio loop in
a thread of its own, `daz_actors.storage.asyncio_thread`)::

    new = await SqlClient(ref).run(partial(queue.enqueue, item=item))

Inputs are checked before anything is written; a bad one raises `QueueInputError` (a
`ValueError`) naming the field and the reason.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any, Protocol

from daz_actors.storage.queue_types import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    AlertType,
    CompleteManyResult,
    FailOutcome,
    HistoryEntry,
    Lease,
    NewItem,
    QueueAlert,
    QueueInputError,
    QueueItem,
    QueueStats,
    RetryStatus,
    item_from_row,
)

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "NOTIFY_CHANNEL",
    "Executor",
    "QueueInputError",
    "acquire",
    "alerts",
    "cleanup",
    "complete",
    "complete_and_acquire",
    "complete_many",
    "count_items",
    "enqueue",
    "enqueue_many",
    "fail",
    "get",
    "get_by_event_id",
    "history",
    "prune_batch",
    "release_many",
    "replay",
    "requeue_dead_letter",
    "save_checkpoint",
    "stats",
]

# channel of the NOTIFY sent once per enqueueing statement (payload: number of new items)
NOTIFY_CHANNEL = "daz_retry_enqueued"


class Executor(Protocol):
    """What the queue needs: an asyncpg ``Connection`` or ``Pool``."""

    async def fetch(self, query: str, *args: Any) -> Any: ...

    async def fetchrow(self, query: str, *args: Any) -> Any: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...


_COLUMNS = (
    "event_id, event_type, channel_name, plugin_name, operation_type, event_data, event_metadata, "
    "priority, max_retries, retry_delay_seconds, backoff_multiplier, max_delay_seconds, "
    "attempt_timeout_seconds, next_retry_at, correlation_id, tags, checkpoint, expires_at, "
    "jitter"
)

_ENQUEUE = f"""
INSERT INTO daz_retry_queue ({_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11, $12, $13,
        coalesce($14, now()), $15, $16, $17::jsonb, $18, $19)
ON CONFLICT (event_id) DO NOTHING
RETURNING id
"""

_ENQUEUE_MANY = f"""
INSERT INTO daz_retry_queue ({_COLUMNS})
SELECT t.event_id, t.event_type, t.channel_name, t.plugin_name, t.operation_type, t.event_data,
       t.event_metadata, t.priority, t.max_retries, t.retry_delay_seconds,
       t.backoff_multiplier, t.max_delay_seconds, t.attempt_timeout_seconds,
       coalesce(t.next_retry_at, now()), t.correlation_id,
       ARRAY(SELECT jsonb_array_elements_text(t.tags)), t.checkpoint, t.expires_at, t.jitter
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[],
            $7::jsonb[], $8::smallint[], $9::integer[], $10::float8[], $11::float8[],
            $12::float8[], $13::float8[], $14::timestamptz[], $15::text[], $16::jsonb[],
            $17::jsonb[], $18::timestamptz[], $19::text[])
     WITH ORDINALITY AS t(event_id, event_type, channel_name, plugin_name, operation_type,
                          event_data,
                          event_metadata, priority, max_retries, retry_delay_seconds,
                          backoff_multiplier, max_delay_seconds, attempt_timeout_seconds,
                          next_retry_at, correlation_id, tags, checkpoint, expires_at, jitter,
                          n)
ORDER BY t.n
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""

_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _encode(field: str, value: Any) -> str:
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise QueueInputError(f"{field}: not JSON-serialisable: {exc}") from None
    if "\\u0000" in text and _NUL_ESCAPE.search(text):  # cheap test first
        raise QueueInputError(f"{field}: strings must not contain NUL characters (PostgreSQL)")
    return text


def _utf8_size(*texts: str | None) -> int:
    return sum(len(t.encode()) for t in texts if t is not None)


def _encode_item(item: NewItem, max_payload_bytes: int) -> tuple[Any, ...]:
    if not isinstance(item, NewItem):
        raise QueueInputError(f"expected a NewItem, got {type(item).__name__}")
    data = _encode("event_data", item.event_data)
    metadata = _encode("event_metadata", item.event_metadata)
    checkpoint = None if item.checkpoint is None else _encode("checkpoint", item.checkpoint)
    chars = len(data) + len(metadata) + (len(checkpoint) if checkpoint is not None else 0)
    # a character is at most 4 bytes in UTF-8: count bytes only when it could matter
    size = chars if chars * 4 <= max_payload_bytes else _utf8_size(data, metadata, checkpoint)
    if size > max_payload_bytes:
        raise QueueInputError(
            f"event_data: payload of item {item.event_id!r} is {size} bytes as JSON "
            f"(with metadata and checkpoint); the limit is {max_payload_bytes}"
        )
    if (
        item.expires_at is not None
        and item.not_before is not None
        and item.expires_at <= item.not_before
    ):
        raise QueueInputError(
            f"expires_at: {item.expires_at.isoformat()} is not after not_before "
            f"{item.not_before.isoformat()}; the item could never run"
        )
    return (
        item.event_id,
        item.event_type,
        item.channel,
        item.plugin,
        item.operation_type,
        data,
        metadata,
        item.priority,
        item.max_retries,
        float(item.retry_delay),
        float(item.backoff_multiplier),
        float(item.max_delay),
        float(item.attempt_timeout),
        item.not_before,
        item.correlation_id,
        list(item.tags),
        checkpoint,
        item.expires_at,
        item.jitter.value,
    )


def _check_limit(max_payload_bytes: int) -> None:
    if isinstance(max_payload_bytes, bool) or not isinstance(max_payload_bytes, int):
        raise QueueInputError(f"max_payload_bytes: must be an integer, got {max_payload_bytes!r}")
    if max_payload_bytes <= 0:
        raise QueueInputError(f"max_payload_bytes: must be positive, got {max_payload_bytes}")


async def enqueue(
    conn: Executor,
    item: NewItem,
    *,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> bool:
    """Add ``item``; return True if it is new, False if its event id was already queued.

    Raises `QueueInputError` (writing nothing) for a payload that is not JSON-serialisable
    or larger than ``max_payload_bytes``.
    """
    _check_limit(max_payload_bytes)
    args = _encode_item(item, max_payload_bytes)
    row_id = await conn.fetchval(_ENQUEUE, *args)
    return row_id is not None


async def enqueue_many(
    conn: Executor,
    items: Sequence[NewItem],
    *,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> tuple[bool, ...]:
    """Add ``items`` in one statement; return, per item, whether it was new.

    An event id repeated within the batch is new at most once (its first occurrence). Every
    item is checked before anything is written: one bad item writes none.
    """
    _check_limit(max_payload_bytes)
    if isinstance(items, NewItem):
        raise QueueInputError("items: expected a sequence of NewItem, got a single NewItem")
    encoded = [_encode_item(item, max_payload_bytes) for item in items]
    if not encoded:
        return ()
    columns = [list(column) for column in zip(*encoded, strict=True)]
    columns[15] = [_encode("tags", tags) for tags in columns[15]]
    rows = await conn.fetch(_ENQUEUE_MANY, *columns)
    new_ids = {row["event_id"] for row in rows}
    result = []
    for item in items:
        is_new = item.event_id in new_ids
        new_ids.discard(item.event_id)
        result.append(is_new)
    return tuple(result)


def _lock_timeout(value: float | timedelta) -> float:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise QueueInputError(f"lock_timeout: must be seconds or a timedelta, got {value!r}")
    if not seconds > 0 or not math.isfinite(seconds):
        raise QueueInputError(f"lock_timeout: must be positive and finite, got {value!r}")
    return seconds


def _worker(worker_id: object) -> str:
    if not isinstance(worker_id, str) or not worker_id or "\x00" in worker_id:
        raise QueueInputError(f"worker_id: must be a non-empty string, got {worker_id!r}")
    return worker_id


async def acquire(
    conn: Executor,
    worker_id: str,
    *,
    batch_size: int = 10,
    lock_timeout: float | timedelta = 300.0,
) -> list[QueueItem]:
    """Claim up to ``batch_size`` due items for ``worker_id`` (priority 10 first, then due time).

    Items held longer than ``lock_timeout`` (seconds or a timedelta) by a worker are
    reclaimed first; expired items are marked failed and never returned. Each returned item
    carries a fresh lease (`QueueItem.lease`).
    """
    worker = _worker(worker_id)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise QueueInputError(f"batch_size: must be a positive integer, got {batch_size!r}")
    rows = await conn.fetch(
        "SELECT * FROM acquire_retry_items($1, $2, $3)",
        worker,
        batch_size,
        _lock_timeout(lock_timeout),
    )
    return [item_from_row(row, json.loads) for row in rows]


async def complete(conn: Executor, lease: Lease) -> bool:
    """Mark the leased item completed; False (nothing changed) if the lease is stale."""
    return bool(
        await conn.fetchval(
            "SELECT complete_retry_item($1, $2, $3)",
            lease.item_id,
            lease.worker_id,
            lease.lock_token,
        )
    )


async def complete_many(conn: Executor, leases: Iterable[Lease]) -> CompleteManyResult:
    """Complete many leased items, one round trip per worker id (usually one).

    ``refused`` lists items none of whose given leases was current (nothing changed there).
    """
    by_worker: dict[str, list[Lease]] = {}
    for lease in leases:
        by_worker.setdefault(lease.worker_id, []).append(lease)
    completed: set[int] = set()
    refused: set[int] = set()
    for worker_id, group in by_worker.items():
        rows = await conn.fetch(
            "SELECT complete_retry_items($1::bigint[], $2, $3::uuid[]) AS id",
            [lease.item_id for lease in group],
            worker_id,
            [lease.lock_token for lease in group],
        )
        done = {row["id"] for row in rows}
        completed |= done
        refused |= {lease.item_id for lease in group} - done
    # an item whose current lease completed is not refused, even if a stale one came along
    return CompleteManyResult(
        completed=frozenset(completed), refused=frozenset(refused - completed)
    )


async def complete_and_acquire(
    conn: Executor,
    worker_id: str,
    leases: Sequence[Lease],
    *,
    batch_size: int = 10,
    lock_timeout: float | timedelta = 300.0,
) -> tuple[CompleteManyResult, list[QueueItem]]:
    """Complete ``leases`` (all ``worker_id``'s) and claim the next batch, in one statement.

    One round trip and one commit: a worker's steady state (the completions of batch k
    with the claim of batch k+1). The same as `complete_many` then `acquire`.
    """
    worker = _worker(worker_id)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise QueueInputError(f"batch_size: must be a positive integer, got {batch_size!r}")
    if any(lease.worker_id != worker for lease in leases):
        raise QueueInputError(f"leases: all must belong to {worker!r}")
    rows = await conn.fetch(
        "SELECT completed_ids, item FROM daz_complete_and_acquire($1, $2, $3, $4, $5)",
        worker,
        [lease.item_id for lease in leases],
        [lease.lock_token for lease in leases],
        batch_size,
        _lock_timeout(lock_timeout),
    )
    done = frozenset(rows[0]["completed_ids"]) if rows else frozenset()
    result = CompleteManyResult(
        completed=done, refused=frozenset(lease.item_id for lease in leases) - done
    )
    loads = json.loads
    return result, [item_from_row(r, loads) for row in rows if (r := row["item"]) is not None]


async def fail(
    conn: Executor,
    lease: Lease,
    *,
    error: str,
    error_code: str | None = None,
    retryable: bool = True,
    next_delay: float | None = None,
) -> FailOutcome:
    """Record a failed attempt of the leased item.

    Retryable with retries left: back to pending, due `next_delay` seconds from now (the
    worker computes it from the item's policy, `QueueItem.backoff`; None: the SQL function's
    jitter-free ``calculate_next_retry``, for callers with no policy at hand). Permanent
    (``retryable=False``) or out of retries: dead letter. A stale lease changes nothing and
    gives ``accepted=False``.
    """
    if not isinstance(error, str):
        raise QueueInputError(f"error: must be a string, got {type(error).__name__}")
    if next_delay is not None and not (isinstance(next_delay, int | float) and next_delay >= 0):
        raise QueueInputError(f"next_delay: must be seconds >= 0, got {next_delay!r}")
    row = await conn.fetchrow(
        "SELECT * FROM fail_retry_item($1, $2, $3, $4, $5, $6, $7)",
        lease.item_id,
        lease.worker_id,
        lease.lock_token,
        error.replace("\x00", "\\0"),
        error_code,
        retryable,
        None if next_delay is None else float(next_delay),
    )
    if row is None:
        return FailOutcome(accepted=False, item=None)
    return FailOutcome(accepted=True, item=item_from_row(row, json.loads))


async def release_many(conn: Executor, leases: Iterable[Lease]) -> set[int]:
    """Hand leased items back, due at once, without counting an attempt; the ids released.

    For a worker that stops in order. Stale leases (items reclaimed by another worker)
    change nothing and are left out of the result.
    """
    leases = list(leases)
    if not leases:
        return set()
    workers = {lease.worker_id for lease in leases}
    if len(workers) != 1:
        raise QueueInputError(f"leases: all must belong to one worker, got {sorted(workers)}")
    rows = await conn.fetch(
        "SELECT release_retry_items($1::bigint[], $2, $3::uuid[]) AS id",
        [lease.item_id for lease in leases],
        workers.pop(),
        [lease.lock_token for lease in leases],
    )
    return {row["id"] for row in rows}


async def save_checkpoint(
    conn: Executor,
    lease: Lease,
    checkpoint: Any,
    *,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> bool:
    """Store a multi-step handler's resume point; False (nothing changed) for a stale lease."""
    _check_limit(max_payload_bytes)
    text = _encode("checkpoint", checkpoint)
    if len(text.encode()) > max_payload_bytes:
        raise QueueInputError(f"checkpoint: larger than {max_payload_bytes} bytes as JSON")
    row_id = await conn.fetchval(
        """
        UPDATE daz_retry_queue SET checkpoint = $4::jsonb, updated_at = now()
        WHERE id = $1 AND status = 'processing' AND locked_by = $2 AND lock_token = $3
        RETURNING id
        """,
        lease.item_id,
        lease.worker_id,
        lease.lock_token,
        text,
    )
    return row_id is not None


async def requeue_dead_letter(conn: Executor, item_id: int) -> bool:
    """Put a dead letter back as pending, due now, retry count reset; False if it is not one."""
    return bool(await conn.fetchval("SELECT requeue_dead_letter($1)", item_id))


async def requeue(conn: Executor, ids: Sequence[int], *, by: str) -> list[int]:
    """Requeue the dead letters among `ids` (pending, due now, retry count reset), each
    recorded in the item's history as done `by` someone; the ids requeued, ascending."""
    if not isinstance(by, str) or not by or "\x00" in by:
        raise QueueInputError(f"by: must name who requeues, got {by!r}")
    if any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
        raise QueueInputError(f"ids: must be integers, got {list(ids)!r}")
    rows = await conn.fetch("SELECT requeue_retry_items($1::bigint[], $2) AS id", list(ids), by)
    return [row["id"] for row in rows]


async def get(conn: Executor, item_id: int) -> QueueItem | None:
    """The item with this id, or None."""
    row = await conn.fetchrow("SELECT * FROM daz_retry_queue WHERE id = $1", item_id)
    return None if row is None else item_from_row(row, json.loads)


async def get_by_event_id(conn: Executor, event_id: str) -> QueueItem | None:
    """The item with this event id, or None."""
    row = await conn.fetchrow("SELECT * FROM daz_retry_queue WHERE event_id = $1", event_id)
    return None if row is None else item_from_row(row, json.loads)


async def history(conn: Executor, item_id: int) -> list[HistoryEntry]:
    """The item's attempts, oldest first; an attempt still running last (outcome None).

    A running attempt has no history row yet (it is written once, when the attempt ends):
    it is read from the queue row (worker, token, claim time), with ``id`` 0.
    """
    rows = await conn.fetch(
        """
        SELECT * FROM (
            SELECT id, item_id, event_id, attempt, worker_id, lock_token, correlation_id,
                   started_at, finished_at, outcome, error, error_code
            FROM daz_retry_history WHERE item_id = $1
            UNION ALL
            SELECT 0, q.id, q.event_id, q.retry_count + 1, q.locked_by, q.lock_token,
                   q.correlation_id, q.locked_at, NULL, NULL, NULL, NULL
            FROM daz_retry_queue q
            WHERE q.id = $1 AND q.status = 'processing'
              AND NOT EXISTS (SELECT 1 FROM daz_retry_history h
                              WHERE h.lock_token = q.lock_token)
        ) a
        ORDER BY started_at, id
        """,
        item_id,
    )
    return [
        HistoryEntry(
            id=row["id"],
            item_id=row["item_id"],
            event_id=row["event_id"],
            attempt=row["attempt"],
            worker_id=row["worker_id"],
            lock_token=row["lock_token"],
            correlation_id=row["correlation_id"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            outcome=row["outcome"],
            error=row["error"],
            error_code=row["error_code"],
        )
        for row in rows
    ]


async def stats(conn: Executor) -> list[QueueStats]:
    """Counts by status, event type and plugin (``daz_retry_queue_stats``)."""
    rows = await conn.fetch(
        "SELECT * FROM daz_retry_queue_stats ORDER BY status, event_type, plugin NULLS FIRST",
    )
    return [
        QueueStats(
            status=RetryStatus(row["status"]),
            event_type=row["event_type"],
            plugin=row["plugin"],
            item_count=row["item_count"],
            oldest_created_at=row["oldest_created_at"],
            earliest_next_retry_at=row["earliest_next_retry_at"],
            max_retry_count=row["max_retry_count"],
            avg_retry_count=row["avg_retry_count"],
        )
        for row in rows
    ]


async def alerts(conn: Executor, *, newest: int | None = None) -> list[QueueAlert]:
    """What needs an operator's attention (``daz_retry_queue_alerts``), by type then item;
    with `newest`, only that many, the newest items first."""
    if newest is None:
        rows = await conn.fetch("SELECT * FROM daz_retry_queue_alerts ORDER BY alert_type, item_id")
    else:
        if isinstance(newest, bool) or not isinstance(newest, int) or newest < 1:
            raise QueueInputError(f"newest: must be a positive integer, got {newest!r}")
        rows = await conn.fetch(
            "SELECT * FROM daz_retry_queue_alerts ORDER BY item_id DESC, alert_type LIMIT $1",
            newest,
        )
    return [
        QueueAlert(
            alert_type=AlertType(row["alert_type"]),
            severity=row["severity"],
            item_id=row["item_id"],
            event_id=row["event_id"],
            event_type=row["event_type"],
            plugin=row["plugin"],
            status=RetryStatus(row["status"]),
            retry_count=row["retry_count"],
            max_retries=row["max_retries"],
            last_error=row["last_error"],
            last_error_code=row["last_error_code"],
            since=row["since"],
        )
        for row in rows
    ]


async def cleanup(
    conn: Executor,
    *,
    retention_days: float,
    dead_letter_retention_days: float | None = None,
) -> int:
    """Delete completed and expired items older than ``retention_days``; return how many.

    Dead letters are kept unless ``dead_letter_retention_days`` is given. One statement:
    the periodic cleanup uses `prune_batch` instead.
    """
    _check_retention(retention_days, dead_letter_retention_days)
    deleted = await conn.fetchval(
        "SELECT cleanup_retry_queue($1, $2)",
        float(retention_days),
        None if dead_letter_retention_days is None else float(dead_letter_retention_days),
    )
    return int(deleted)


async def prune_batch(
    conn: Executor,
    *,
    retention_days: float,
    dead_letter_retention_days: float | None = None,
    batch_size: int,
) -> int:
    """`cleanup`'s rule, at most `batch_size` items in one statement (schema 0010); how
    many went. Their history rows go with them (the delete trigger of schema 0014). Call it
    again until it returns fewer than `batch_size`: each call is a short transaction of its
    own."""
    _check_retention(retention_days, dead_letter_retention_days)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise QueueInputError(f"batch_size: must be a positive integer, got {batch_size!r}")
    deleted = await conn.fetchval(
        "SELECT daz_prune_retry_queue($1, $2, $3)",
        float(retention_days),
        None if dead_letter_retention_days is None else float(dead_letter_retention_days),
        batch_size,
    )
    return int(deleted)


def _check_retention(retention_days: float, dead_letter_retention_days: float | None) -> None:
    for name, value in (
        ("retention_days", retention_days),
        ("dead_letter_retention_days", dead_letter_retention_days),
    ):
        if value is None and name == "dead_letter_retention_days":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise QueueInputError(f"{name}: must be a non-negative number, got {value!r}")


def _filters(
    *,
    status: RetryStatus | None = None,
    statuses: Sequence[RetryStatus] | None = None,
    ids: Sequence[int] | None = None,
    event_type: str | None = None,
    plugin: str | None = None,
    older_than: timedelta | None = None,
    newer_than: timedelta | None = None,
) -> tuple[str, list[Any]]:
    """A WHERE clause (``TRUE`` for no filter) and its arguments, ``$1`` onwards.

    `older_than` / `newer_than`: last changed longer ago / within that long ago.
    """
    clauses: list[str] = []
    args: list[Any] = []
    for given in ([status] if status is not None else []) + list(statuses or ()):
        if not isinstance(given, RetryStatus):
            raise QueueInputError(f"status: must be a RetryStatus, got {given!r}")
    wanted = [s.value for s in ([status] if status is not None else []) + list(statuses or ())]
    if wanted:
        args.append(wanted)
        clauses.append(f"status = ANY (${len(args)}::text[])")
    if ids is not None:
        if any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
            raise QueueInputError(f"ids: must be integers, got {list(ids)!r}")
        args.append(list(ids))
        clauses.append(f"id = ANY (${len(args)}::bigint[])")
    for name, column, value in (("event_type", "event_type", event_type),
                                ("plugin", "plugin_name", plugin)):  # fmt: skip
        if value is not None:
            if not isinstance(value, str) or not value or "\x00" in value:
                raise QueueInputError(f"{name}: must be a non-empty string, got {value!r}")
            args.append(value)
            clauses.append(f"{column} = ${len(args)}")
    for name, ago, op in (("older_than", older_than, "<"), ("newer_than", newer_than, ">=")):
        if ago is not None:
            if not isinstance(ago, timedelta) or ago < timedelta(0):
                raise QueueInputError(f"{name}: must be a non-negative timedelta, got {ago!r}")
            args.append(ago)
            clauses.append(f"updated_at {op} now() - ${len(args)}::interval")
    return (" AND ".join(clauses) or "TRUE"), args


async def list_items(
    conn: Executor,
    *,
    status: RetryStatus | None = None,
    event_type: str | None = None,
    limit: int = 50,
) -> list[QueueItem]:
    """Up to ``limit`` items, oldest (lowest id) first, optionally of one status and type."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise QueueInputError(f"limit: must be a positive integer, got {limit!r}")
    where, args = _filters(status=status, event_type=event_type)
    rows = await conn.fetch(
        f"SELECT * FROM daz_retry_queue WHERE {where} ORDER BY id LIMIT ${len(args) + 1}",
        *args,
        limit,
    )
    return [item_from_row(row, json.loads) for row in rows]


async def count_items(
    conn: Executor,
    *,
    status: RetryStatus | None = None,
    event_type: str | None = None,
    older_than: timedelta | None = None,
) -> int:
    """How many items match; ``older_than`` compares with the last change (``updated_at``)."""
    where, args = _filters(status=status, event_type=event_type, older_than=older_than)
    return int(await conn.fetchval(f"SELECT count(*) FROM daz_retry_queue WHERE {where}", *args))


async def requeue_dead_letters(
    conn: Executor,
    *,
    event_type: str | None = None,
    older_than: timedelta | None = None,
    by: str | None = None,
) -> list[int]:
    """Requeue every dead letter (of ``event_type``, dead for longer than ``older_than``).

    Like `requeue_dead_letter` for each, in one statement: pending, due now, retry count
    reset, one notification. With `by`, each requeue is also a history row naming who
    asked (as `requeue` does). Returns the ids requeued, ascending.
    """
    where, args = _filters(
        status=RetryStatus.DEAD_LETTER, event_type=event_type, older_than=older_than
    )
    if by is not None:
        if not isinstance(by, str) or not by or "\x00" in by:
            raise QueueInputError(f"by: must name who requeues, got {by!r}")
        args.append(by)
        rows = await conn.fetch(
            "SELECT requeue_retry_items(array(SELECT id FROM daz_retry_queue"
            f" WHERE {where} ORDER BY id), ${len(args)}) AS id",
            *args,
        )
        return [row["id"] for row in rows]
    row = await conn.fetchrow(
        f"""
        WITH requeued AS (
            UPDATE daz_retry_queue
            SET status = 'pending', retry_count = 0, next_retry_at = now(), updated_at = now()
            WHERE {where}
            RETURNING id
        ), counted AS (
            SELECT coalesce(array_agg(id ORDER BY id), '{{}}'::bigint[]) AS ids,
                   count(*) AS n
            FROM requeued
        )
        SELECT ids,
               CASE WHEN n > 0 THEN pg_notify('{NOTIFY_CHANNEL}', n::text)::text END AS notified
        FROM counted
        """,
        *args,
    )
    return list(row["ids"])


async def purge(
    conn: Executor,
    *,
    status: RetryStatus,
    older_than: timedelta,
    event_type: str | None = None,
) -> int:
    """Delete items of ``status`` last changed longer than ``older_than`` ago; return how many.

    Their history goes with them. Any status is accepted: deleting a pending or processing
    item drops work that has not finished (a worker holding one is refused at completion),
    so callers should ask before doing that.
    """
    if status is None:
        raise QueueInputError("status: required for purge")
    if older_than is None:
        raise QueueInputError("older_than: required for purge")
    where, args = _filters(status=status, event_type=event_type, older_than=older_than)
    deleted = await conn.fetchval(
        f"WITH gone AS (DELETE FROM daz_retry_queue WHERE {where} RETURNING 1) "
        "SELECT count(*) FROM gone",
        *args,
    )
    return int(deleted)


async def replay(
    conn: Executor,
    *,
    by: str,
    ids: Sequence[int] | None = None,
    event_type: str | None = None,
    plugin: str | None = None,
    since: timedelta | None = None,
    until: timedelta | None = None,
    dry_run: bool = False,
) -> list[int]:
    """Run finished items again from scratch (pending, due now, retry count reset, checkpoint
    cleared), each replay recorded in the item's history as done `by` someone.

    Finished means completed, or failed (expired). The items are those of `ids`, or every
    finished item of `event_type` / `plugin` last changed between `since` and `until` ago.
    With `dry_run` nothing changes: the ids that would be replayed are returned. Returns the
    ids replayed (or to be), ascending.
    """
    if not isinstance(by, str) or not by or "\x00" in by:
        raise QueueInputError(f"by: must name who replays, got {by!r}")
    where, args = _filters(
        statuses=(RetryStatus.COMPLETED, RetryStatus.FAILED), ids=ids, event_type=event_type,
        plugin=plugin, older_than=until, newer_than=since,
    )  # fmt: skip
    rows = await conn.fetch(f"SELECT id FROM daz_retry_queue WHERE {where} ORDER BY id", *args)
    chosen = [row["id"] for row in rows]
    if dry_run or not chosen:
        return chosen
    replayed = await conn.fetch("SELECT replay_retry_items($1::bigint[], $2) AS id", chosen, by)
    return [row["id"] for row in replayed]
