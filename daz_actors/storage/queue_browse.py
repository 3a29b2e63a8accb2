"""Browsing and operating the retry queue for the dashboard: counts, the per-minute series of
finished attempts, filtered keyset pages of items, and operator actions by filter.

Every action names who did it: a requeue or replay is a row of the item's history
(``requeued`` / ``replayed``, schema 0006 and 0013), and every action, purges included, is
a row of ``daz_retry_actions``. Single items and filters share one path: the ids are chosen
first (bounded by `MAX_BULK` and by the highest id the operator saw when confirming), then
acted on by the same SQL functions the CLI uses.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs

from daz_actors.storage import queue
from daz_actors.storage.queue import Executor
from daz_actors.storage.queue_types import QueueInputError, RetryStatus

__all__ = [
    "MAX_BULK",
    "MAX_PAGE",
    "Action",
    "ActionRecord",
    "ItemFilter",
    "ItemPage",
    "ItemSummary",
    "MinuteCount",
    "Overview",
    "act",
    "alert_counts",
    "count",
    "overview",
    "page",
    "recent_actions",
    "throughput",
]

MAX_BULK = 100_000  # the most items one action touches; repeat it for more
MAX_PAGE = 500  # the most items on one page
MAX_HOURS = 48  # the longest per-minute series


class Action(enum.Enum):
    """What an operator can do to items, and which statuses each applies to."""

    REQUEUE = "requeue"  # dead letters back to pending
    REPLAY = "replay"  # finished items (completed, or failed: expired) run again
    PURGE = "purge"  # finished items and dead letters deleted with their history

    @property
    def statuses(self) -> tuple[RetryStatus, ...]:
        return _ACTION_STATUSES[self]


_ACTION_STATUSES = {
    Action.REQUEUE: (RetryStatus.DEAD_LETTER,),
    Action.REPLAY: (RetryStatus.COMPLETED, RetryStatus.FAILED),
    Action.PURGE: (RetryStatus.COMPLETED, RetryStatus.FAILED, RetryStatus.DEAD_LETTER),
}


def _text(_: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value or "\x00" in value or len(value) > 500:
        raise QueueInputError(
            f"{attribute.name}: must be a non-empty string of at most 500 characters"
        )


def _when(_: object, attribute: attrs.Attribute[Any], value: datetime | None) -> None:
    if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
        raise QueueInputError(
            f"{attribute.name}: must be a datetime with a time zone, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class ItemFilter:
    """Which items: every given field must match (none given: all items)."""

    status: RetryStatus | None = None
    event_type: str | None = attrs.field(default=None, validator=_text)
    plugin: str | None = attrs.field(default=None, validator=_text)
    channel: str | None = attrs.field(default=None, validator=_text)
    # last changed (updated_at) at or after `since` and before `until`
    since: datetime | None = attrs.field(default=None, validator=_when)
    until: datetime | None = attrs.field(default=None, validator=_when)
    # text found in the last error, case-insensitive
    error: str | None = attrs.field(default=None, validator=_text)

    def __attrs_post_init__(self) -> None:
        if self.status is not None and not isinstance(self.status, RetryStatus):
            raise QueueInputError(f"status: must be a RetryStatus, got {self.status!r}")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise QueueInputError("since: must be before until")

    def describe(self) -> str:
        """The filter in words (``status=dead_letter type=chat``); ``all items`` if empty."""
        parts = []
        for field in attrs.fields(ItemFilter):
            value = getattr(self, field.name)
            if value is None:
                continue
            if isinstance(value, RetryStatus):
                value = value.value
            elif isinstance(value, datetime):
                value = value.isoformat()
            parts.append(f"{field.name}={value}")
        return " ".join(parts) or "all items"

    def where(
        self,
        args: list[Any],
        *,
        statuses: Sequence[RetryStatus] | None = None,
        max_id: int | None = None,
    ) -> str:
        """The WHERE clause; its arguments are appended to `args` (``$n`` follow them)."""
        clauses: list[str] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if self.status is not None:
            clauses.append(f"status = {arg(self.status.value)}")
        if statuses is not None:
            clauses.append(f"status = ANY ({arg([s.value for s in statuses])}::text[])")
        for column, value in (
            ("event_type", self.event_type),
            ("plugin_name", self.plugin),
            ("channel_name", self.channel),
        ):
            if value is not None:
                clauses.append(f"{column} = {arg(value)}")
        if self.since is not None:
            clauses.append(f"updated_at >= {arg(self.since)}")
        if self.until is not None:
            clauses.append(f"updated_at < {arg(self.until)}")
        if self.error is not None:
            escaped = self.error.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append(f"last_error ILIKE {arg('%' + escaped + '%')}")
        if max_id is not None:
            clauses.append(f"id <= {arg(max_id)}")
        return " AND ".join(clauses) or "TRUE"


@attrs.frozen(kw_only=True)
class ItemSummary:
    """One row of an items page."""

    id: int
    event_id: str
    event_type: str
    channel: str | None
    plugin: str | None
    status: RetryStatus
    retry_count: int
    max_retries: int
    last_error: str | None  # its first 200 characters
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class ItemPage:
    """Items newest first; `next_before` is the cursor of the next page (None: last page)."""

    items: tuple[ItemSummary, ...]
    next_before: int | None


@attrs.frozen(kw_only=True)
class Overview:
    """Item counts by status, event type, plugin and channel (None: no plugin / channel)."""

    by_status: tuple[tuple[str, int], ...]
    by_event_type: tuple[tuple[str, int], ...]
    by_plugin: tuple[tuple[str | None, int], ...]
    by_channel: tuple[tuple[str | None, int], ...]
    total: int


@attrs.frozen(kw_only=True)
class MinuteCount:
    """Attempts that finished in one minute."""

    minute: datetime
    completed: int
    failed: int  # failed or dead-lettered


@attrs.frozen(kw_only=True)
class ActionRecord:
    """A row of ``daz_retry_actions``."""

    id: int
    at: datetime
    action: Action
    done_by: str
    item_count: int
    item_ids: tuple[int, ...]
    filter: str | None


async def overview(conn: Executor) -> Overview:
    """Counts of every item by status, event type, plugin and channel (one scan)."""
    rows = await conn.fetch(
        """
        SELECT GROUPING(status) AS g_status, GROUPING(event_type) AS g_type,
               GROUPING(plugin_name) AS g_plugin, GROUPING(channel_name) AS g_channel,
               status, event_type, plugin_name, channel_name, count(*) AS n
        FROM daz_retry_queue
        GROUP BY GROUPING SETS ((status), (event_type), (plugin_name), (channel_name), ())
        """
    )
    by_status: dict[str, int] = {s.value: 0 for s in RetryStatus}
    by_type: list[tuple[str, int]] = []
    by_plugin: list[tuple[str | None, int]] = []
    by_channel: list[tuple[str | None, int]] = []
    total = 0
    for row in rows:
        n = int(row["n"])
        if not row["g_status"]:
            by_status[row["status"]] = n
        elif not row["g_type"]:
            by_type.append((row["event_type"], n))
        elif not row["g_plugin"]:
            by_plugin.append((row["plugin_name"], n))
        elif not row["g_channel"]:
            by_channel.append((row["channel_name"], n))
        else:
            total = n

    def ordered(pairs: list[tuple[Any, int]]) -> tuple[tuple[Any, int], ...]:
        return tuple(sorted(pairs, key=lambda p: (-p[1], p[0] is None, p[0] or "")))

    return Overview(
        by_status=tuple(by_status.items()),
        by_event_type=ordered(by_type),
        by_plugin=ordered(by_plugin),
        by_channel=ordered(by_channel),
        total=total,
    )


async def alert_counts(conn: Executor) -> dict[str, int]:
    """How many alerts of each type (``daz_retry_queue_alerts``)."""
    rows = await conn.fetch(
        "SELECT alert_type, count(*) AS n FROM daz_retry_queue_alerts GROUP BY alert_type"
    )
    return {row["alert_type"]: int(row["n"]) for row in rows}


async def throughput(conn: Executor, *, hours: float = 3) -> list[MinuteCount]:
    """Attempts finished per minute over the last `hours`, oldest first, every minute there."""
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 < hours <= MAX_HOURS:
        raise QueueInputError(f"hours: must be a number above 0 and at most {MAX_HOURS}")
    rows = await conn.fetch(
        """
        WITH minutes AS (
            SELECT generate_series(
                date_trunc('minute', now() - make_interval(secs => $1 * 3600)),
                date_trunc('minute', now()), interval '1 minute') AS minute
        ), finished AS (
            SELECT date_trunc('minute', finished_at) AS minute,
                   count(*) FILTER (WHERE outcome = 'completed') AS completed,
                   count(*) FILTER (WHERE outcome IN ('failed', 'dead_letter')) AS failed
            FROM daz_retry_history
            WHERE finished_at >= date_trunc('minute', now() - make_interval(secs => $1 * 3600))
            GROUP BY 1
        )
        SELECT m.minute, coalesce(f.completed, 0) AS completed, coalesce(f.failed, 0) AS failed
        FROM minutes m LEFT JOIN finished f USING (minute)
        ORDER BY m.minute
        """,
        float(hours),
    )
    return [
        MinuteCount(minute=row["minute"], completed=row["completed"], failed=row["failed"])
        for row in rows
    ]


def _limit(name: str, value: int, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise QueueInputError(f"{name}: must be an integer from 1 to {most}, got {value!r}")
    return value


def _cursor(name: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise QueueInputError(f"{name}: must be a non-negative integer, got {value!r}")
    return value


async def page(
    conn: Executor, where: ItemFilter, *, before: int | None = None, limit: int = 50
) -> ItemPage:
    """Up to `limit` items matching `where`, newest (highest id) first, below id `before`.

    Keyset pagination: each page costs the same however deep it is (``ORDER BY id DESC``
    on the primary key, or on ``(status, id)`` with a status filter).
    """
    _limit("limit", limit, MAX_PAGE)
    _cursor("before", before)
    args: list[Any] = []
    clause = where.where(args)
    if before is not None:
        args.append(before)
        clause += f" AND id < ${len(args)}"
    args.append(limit + 1)
    rows = await conn.fetch(
        f"""
        SELECT id, event_id, event_type, channel_name, plugin_name, status, retry_count,
               max_retries, left(last_error, 200) AS last_error, created_at, updated_at
        FROM daz_retry_queue WHERE {clause}
        ORDER BY id DESC LIMIT ${len(args)}
        """,
        *args,
    )
    items = tuple(
        ItemSummary(
            id=row["id"],
            event_id=row["event_id"],
            event_type=row["event_type"],
            channel=row["channel_name"],
            plugin=row["plugin_name"],
            status=RetryStatus(row["status"]),
            retry_count=row["retry_count"],
            max_retries=row["max_retries"],
            last_error=row["last_error"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )
        for row in rows[:limit]
    )
    return ItemPage(items=items, next_before=items[-1].id if len(rows) > limit else None)


async def count(
    conn: Executor, where: ItemFilter, *, action: Action | None = None, max_id: int | None = None
) -> int:
    """How many items match `where` (those `action` applies to, up to id `max_id`)."""
    _cursor("max_id", max_id)
    args: list[Any] = []
    clause = where.where(args, statuses=action.statuses if action else None, max_id=max_id)
    return int(await conn.fetchval(f"SELECT count(*) FROM daz_retry_queue WHERE {clause}", *args))


async def act(
    conn: Executor,
    action: Action,
    *,
    by: str,
    where: ItemFilter | None = None,
    ids: Sequence[int] | None = None,
    max_id: int | None = None,
) -> list[int]:
    """Do `action` to the items of `ids`, or to those matching `where` (up to id `max_id`,
    at most `MAX_BULK`), that it applies to; record it as done `by` someone. Returns the ids
    acted on, ascending."""
    if not isinstance(by, str) or not by or "\x00" in by:
        raise QueueInputError(f"by: must name who acts, got {by!r}")
    if (where is None) == (ids is None):
        raise QueueInputError("give either a filter or item ids")
    _cursor("max_id", max_id)
    args: list[Any] = []
    if ids is not None:
        if any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
            raise QueueInputError(f"ids: must be integers, got {list(ids)!r}")
        args.append(list(ids))
        clause = f"id = ANY ($1::bigint[]) AND {ItemFilter().where(args, statuses=action.statuses)}"
    else:
        assert where is not None
        clause = where.where(args, statuses=action.statuses, max_id=max_id)
    args.append(MAX_BULK)
    rows = await conn.fetch(
        f"SELECT id FROM daz_retry_queue WHERE {clause} ORDER BY id LIMIT ${len(args)}", *args
    )
    chosen = [row["id"] for row in rows]
    if not chosen:
        return []
    if action is Action.REQUEUE:
        done = await queue.requeue(conn, chosen, by=by)
    elif action is Action.REPLAY:
        done = await queue.replay(conn, by=by, ids=chosen)
    else:
        gone = await conn.fetch(
            "DELETE FROM daz_retry_queue WHERE id = ANY ($1::bigint[]) AND status = ANY ($2)"
            " RETURNING id",
            chosen,
            [s.value for s in action.statuses],
        )
        done = sorted(row["id"] for row in gone)
    if done:
        await conn.fetchval(
            "INSERT INTO daz_retry_actions (action, done_by, item_count, item_ids, filter)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id",
            action.value,
            by,
            len(done),
            done,
            None if where is None else where.describe(),
        )
    return done


async def recent_actions(conn: Executor, *, limit: int = 20) -> list[ActionRecord]:
    """The latest operator actions, newest first."""
    _limit("limit", limit, MAX_PAGE)
    rows = await conn.fetch(
        "SELECT id, at, action, done_by, item_count, item_ids[1:20] AS item_ids, filter"
        " FROM daz_retry_actions ORDER BY id DESC LIMIT $1",
        limit,
    )
    return [
        ActionRecord(
            id=row["id"],
            at=row["at"],
            action=Action(row["action"]),
            done_by=row["done_by"],
            item_count=row["item_count"],
            item_ids=tuple(row["item_ids"]),
            filter=row["filter"],
        )
        for row in rows
    ]
