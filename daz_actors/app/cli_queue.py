"""``daz-actors queue``: inspect and operate the durable retry queue.

Attach to the main group with ``main.add_command(queue_group)``. Every command takes
``--config``, ``--database-url`` and ``--data-dir`` like ``migrate`` (the database ``run``
would use: `daz_actors.app.cli_database`), and ``--json`` for machine-readable output
(datetimes in ISO 8601). Tables go to stdout, notes and errors to stderr. Exit status: 0
done, 1 refused or not found (a database without the schema: run ``migrate``; these
commands never change the schema), 2 bad usage (every number and duration is bounded).
"""

from __future__ import annotations

import enum
import getpass
import json
import re
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import click

# asyncpg, the queue API and the migrations are imported by the commands that use them:
# `daz-actors --help` stays quick
from daz_actors.app.cli_database import (
    DatabaseChoice,
    current_choice,
    database_options,
    open_cli_database,
)
from daz_actors.storage.embedded_pg import redact_dsn
from daz_actors.storage.queue_types import (
    HistoryEntry,
    QueueAlert,
    QueueInputError,
    QueueItem,
    QueueStats,
    RetryStatus,
)

__all__ = ["DURATION", "Duration", "format_duration", "queue_group"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# statuses whose items have not finished: purging them needs --force
_LIVE = frozenset({RetryStatus.PENDING, RetryStatus.PROCESSING})

# default for `queue cleanup --retention-days`
DEFAULT_RETENTION_DAYS = 7.0

# `queue cleanup --batch-size`: the periodic cleanup's default and ceiling
DEFAULT_CLEANUP_BATCH = 5000
MAX_CLEANUP_BATCH = 1_000_000

# the longest retention or age a command takes (100 years): PostgreSQL's intervals and
# timestamps overflow long before Python's floats do
MAX_DAYS = 36_500

# the most items a listing shows
MAX_LIMIT = 100_000

# longest text of a free-form column (errors) in a table
_TEXT_WIDTH = 60


# --- durations ---------------------------------------------------------------------------

_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[wdhms])+")


if TYPE_CHECKING:  # click 8.5 made ParamType generic; older ones cannot be subscripted
    _DurationBase = click.ParamType[timedelta, Any]
    _DaysBase = click.ParamType[float, Any]
else:
    _DurationBase = _DaysBase = click.ParamType


class Duration(_DurationBase):
    """A length of time such as ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` or ``1d12h``."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        text = str(value).strip().lower().replace(" ", "")
        if not _DURATION.fullmatch(text):
            self.fail(
                f"{value!r} is not a duration: use a number followed by s, m, h, d or w "
                "(e.g. 90s, 30m, 12h, 7d, 1d12h)",
                param,
                ctx,
            )
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text))
        if seconds > MAX_DAYS * 86400:
            self.fail(f"{value!r} is too long: at most {MAX_DAYS}d (100 years)", param, ctx)
        return timedelta(seconds=seconds)


DURATION = Duration()


class Days(_DaysBase):
    """A number of days from 0 to `MAX_DAYS`, decimals allowed (no nan, no infinity)."""

    name = "days"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            days = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of days", param, ctx)
        if not 0 <= days <= MAX_DAYS:  # also false for nan
            self.fail(f"{value!r} is not a number of days from 0 to {MAX_DAYS}", param, ctx)
        return days


DAYS = Days()


def format_duration(value: timedelta) -> str:
    """``timedelta(days=1, hours=12)`` as ``1d12h``; ``0s`` for zero."""
    seconds = value.total_seconds()
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        whole = int(seconds // size)
        if whole:
            parts.append(f"{whole}{unit}")
            seconds -= whole * size
    if seconds or not parts:
        parts.append(f"{seconds:g}s")
    return "".join(parts)


# --- output ------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if attrs.has(type(value)):
        return {k: _jsonable(v) for k, v in attrs.asdict(value, recurse=False).items()}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return value


def _print_json(value: Any) -> None:
    click.echo(json.dumps(_jsonable(value), indent=2, ensure_ascii=False))


def _ts(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _text(value: str | None, width: int | None = _TEXT_WIDTH) -> str:
    if value is None:
        return "-"
    flat = " ".join(value.split())
    if width is not None and len(flat) > width:
        return flat[: width - 3] + "..."
    return flat


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], right: Iterable[int] = ()
) -> str:
    """Aligned columns, two spaces apart; the columns numbered in ``right`` align right."""
    cells = [list(headers), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    right_cols = frozenset(right)
    lines = []
    for row in cells:
        out = [
            cell.rjust(widths[i]) if i in right_cols else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(out).rstrip())
    return "\n".join(lines)


def _note(message: str) -> None:
    click.echo(message, err=True)


# --- database ----------------------------------------------------------------------------


def _common_options(fn: F) -> F:
    """``--config``, ``--database-url``, ``--data-dir`` (as for ``migrate``) and ``--json``."""
    fn = click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table."
    )(fn)
    return database_options(fn)


class _NotMigrated(Exception):
    """The database lacks migrations this program needs."""


async def _check_schema(conn: Any, db: str, choice: DatabaseChoice) -> None:
    from daz_actors.storage import migrations

    report = await migrations.status(conn)
    if not report.pending:
        return
    have = (
        "has no retry queue (no migration applied)"
        if not report.applied
        else f"is at schema version {report.current_version}, and "
        f"{len(report.pending)} migration{'s are' if len(report.pending) != 1 else ' is'} "
        "not applied"
    )
    raise _NotMigrated(f"database {db} {have}: run `{choice.command('migrate')}` first")


def _with_connection(fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``await fn(conn)`` on asyncio with a connection to the chosen database, once it
    has every migration (see `daz_actors.app.cli_database` for the choice)."""
    import asyncio

    import asyncpg

    choice = current_choice()

    with open_cli_database(choice) as db:

        async def connected() -> T:
            conn = await asyncpg.connect(db.url)
            try:
                await _check_schema(conn, db.redacted, choice)
                return await fn(conn)
            finally:
                await conn.close()

        def fail(message: str) -> click.ClickException:
            return click.ClickException(_scrub(message, db.url))

        try:
            return asyncio.run(connected())
        except _NotMigrated as exc:
            raise fail(str(exc)) from None
        except QueueInputError as exc:
            raise click.ClickException(str(exc)) from None
        except (ValueError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise fail(f"database {db.redacted}: {exc}") from None


def _scrub(message: str, url: str) -> str:
    """``message`` without the password of ``url``, should a driver error quote it."""
    redacted = redact_dsn(url)
    message = message.replace(url, redacted)
    try:
        password = urllib.parse.urlsplit(url).password if "://" in url else None
    except ValueError:
        password = None
    if password:
        message = message.replace(password, "***")
        message = message.replace(urllib.parse.quote(password, safe=""), "***")
    return message


# --- commands ----------------------------------------------------------------------------

_STATUS = click.Choice([s.value for s in RetryStatus], case_sensitive=False)
_ITEM_ID = click.IntRange(min=1, max=2**63 - 1)


@click.group("queue")
def queue_group() -> None:
    """Inspect and operate the durable retry queue (see docs/queue-operations.md)."""


@queue_group.command("stats")
@_common_options
def stats_command(as_json: bool) -> None:
    """Item counts by status, event type and plugin."""
    from daz_actors.storage import queue

    rows: list[QueueStats] = _with_connection(queue.stats)
    by_status = {s.value: 0 for s in RetryStatus}
    for row in rows:
        by_status[row.status.value] += row.item_count
    total = sum(by_status.values())
    if as_json:
        _print_json({"total": total, "by_status": by_status, "groups": rows})
        return
    if not rows:
        click.echo("the queue is empty")
        return
    click.echo(
        _table(
            [
                "STATUS",
                "EVENT TYPE",
                "PLUGIN",
                "ITEMS",
                "RETRIES MAX/AVG",
                "OLDEST",
                "EARLIEST DUE",
            ],
            (
                [
                    r.status.value,
                    r.event_type,
                    r.plugin or "-",
                    r.item_count,
                    f"{r.max_retry_count}/{r.avg_retry_count:.1f}",
                    _ts(r.oldest_created_at),
                    _ts(r.earliest_next_retry_at),
                ]
                for r in rows
            ),
            right=(3, 4),
        )
    )
    counts = ", ".join(f"{status} {n}" for status, n in by_status.items() if n)
    click.echo(f"\ntotal {total}: {counts}")


def _item_table(items: Sequence[QueueItem]) -> str:
    return _table(
        [
            "ID",
            "STATUS",
            "EVENT TYPE",
            "PLUGIN",
            "CHANNEL",
            "PRIO",
            "RETRIES",
            "NEXT RETRY",
            "UPDATED",
            "LAST ERROR",
        ],
        (
            [
                i.id,
                i.status.value,
                i.event_type,
                i.plugin or "-",
                i.channel or "-",
                i.priority,
                f"{i.retry_count}/{i.max_retries}",
                _ts(i.next_retry_at) if i.status is RetryStatus.PENDING else "-",
                _ts(i.updated_at),
                _text(i.last_error),
            ]
            for i in items
        ),
        right=(0, 5, 6),
    )


def _dead_letter_table(items: Sequence[QueueItem]) -> str:
    return _table(
        ["ID", "EVENT TYPE", "PLUGIN", "RETRIES", "DEAD SINCE", "ERROR CODE", "LAST ERROR"],
        (
            [
                i.id,
                i.event_type,
                i.plugin or "-",
                f"{i.retry_count}/{i.max_retries}",
                _ts(i.updated_at),
                i.last_error_code or "-",
                _text(i.last_error),
            ]
            for i in items
        ),
        right=(0, 3),
    )


def _list(
    *,
    status: RetryStatus | None,
    event_type: str | None,
    limit: int,
) -> list[QueueItem]:
    from daz_actors.storage import queue

    async def fetch(conn: Any) -> list[QueueItem]:
        # one more than asked: tells whether the listing was cut
        return await queue.list_items(conn, status=status, event_type=event_type, limit=limit + 1)

    items = _with_connection(fetch)
    if len(items) > limit:
        _note(f"(more items match: only the first {limit} are shown; raise --limit to see more)")
    return items[:limit]


_LIMIT = click.option(
    "--limit",
    type=click.IntRange(min=1, max=MAX_LIMIT),
    default=50,
    show_default=True,
    help="Show at most this many items (oldest first).",
)
_TYPE = click.option("--type", "event_type", help="Only items of this event type.")


@queue_group.command("list")
@click.option("--status", type=_STATUS, help="Only items of this status.")
@_TYPE
@_LIMIT
@_common_options
def list_command(
    status: str | None,
    event_type: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List queue items, oldest first."""
    items = _list(
        status=None if status is None else RetryStatus(status.lower()),
        event_type=event_type,
        limit=limit,
    )
    if as_json:
        _print_json(items)
    elif not items:
        click.echo("no items")
    else:
        click.echo(_item_table(items))


@queue_group.command("dead-letters")
@_TYPE
@_LIMIT
@_common_options
def dead_letters_command(
    event_type: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List dead letters (items that gave up), oldest first."""
    items = _list(status=RetryStatus.DEAD_LETTER, event_type=event_type, limit=limit)
    if as_json:
        _print_json(items)
    elif not items:
        click.echo("no dead letters")
    else:
        click.echo(_dead_letter_table(items))


def _json_block(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def _show_item(item: QueueItem, history: Sequence[HistoryEntry]) -> str:
    fields: list[tuple[str, str]] = [
        ("event_id", item.event_id),
        ("event_type", item.event_type),
        ("status", item.status.value),
        ("channel", item.channel or "-"),
        ("plugin", item.plugin or "-"),
        ("operation_type", item.operation_type),
        ("priority", str(item.priority)),
        ("retry_count", str(item.retry_count)),
        ("max_retries", str(item.max_retries)),
        ("retry_delay", f"{item.retry_delay:g}s"),
        ("backoff_multiplier", f"{item.backoff_multiplier:g}"),
        ("max_delay", f"{item.max_delay:g}s"),
        ("attempt_timeout", f"{item.attempt_timeout:g}s"),
        ("next_retry_at", _ts(item.next_retry_at)),
        ("locked_by", item.locked_by or "-"),
        ("locked_at", _ts(item.locked_at)),
        ("lock_token", str(item.lock_token) if item.lock_token else "-"),
        ("last_error_code", item.last_error_code or "-"),
        ("last_error", item.last_error if item.last_error is not None else "-"),
        ("correlation_id", item.correlation_id or "-"),
        ("tags", ", ".join(item.tags) or "-"),
        ("created_at", _ts(item.created_at)),
        ("updated_at", _ts(item.updated_at)),
        ("completed_at", _ts(item.completed_at)),
        ("expires_at", _ts(item.expires_at)),
        ("event_data", _json_block(item.event_data)),
        ("event_metadata", _json_block(item.event_metadata)),
        ("checkpoint", "-" if item.checkpoint is None else _json_block(item.checkpoint)),
    ]
    lines = [f"item {item.id}"]
    for name, value in fields:
        lines.append(f"  {name:<20}{value}".rstrip().replace("\n", "\n" + " " * 22))
    lines.append("")
    if not history:
        lines.append("history: no attempts yet")
    else:
        lines.append(f"history ({len(history)} attempt{'s' if len(history) != 1 else ''}):")
        lines.append(
            _table(
                ["ATTEMPT", "WORKER", "STARTED", "FINISHED", "OUTCOME", "ERROR CODE", "ERROR"],
                (
                    [
                        h.attempt,
                        h.worker_id,
                        _ts(h.started_at),
                        _ts(h.finished_at),
                        h.outcome or "running",
                        h.error_code or "-",
                        _text(h.error, width=None),
                    ]
                    for h in history
                ),
                right=(0,),
            )
        )
    return "\n".join(lines)


@queue_group.command("show")
@click.argument("item_id", type=_ITEM_ID)
@_common_options
def show_command(item_id: int, as_json: bool) -> None:
    """Every field of item ITEM_ID and its attempt history."""
    from daz_actors.storage import queue

    async def fetch(conn: Any) -> tuple[QueueItem | None, list[HistoryEntry]]:
        item = await queue.get(conn, item_id)
        return item, ([] if item is None else await queue.history(conn, item_id))

    item, history = _with_connection(fetch)
    if item is None:
        raise click.ClickException(f"no queue item {item_id}")
    if as_json:
        _print_json({"item": item, "history": history})
    else:
        click.echo(_show_item(item, history))


@attrs.frozen
class _RequeueResult:
    requeued: list[int]
    # ids that do not exist
    not_found: list[int]
    # id -> status of items that exist but are not dead letters
    not_dead: dict[int, str]


@queue_group.command("requeue")
@click.argument("item_ids", nargs=-1, type=_ITEM_ID)
@click.option("--all-dead", is_flag=True, help="Requeue every dead letter (with the filters).")
@click.option("--type", "event_type", help="With --all-dead: only dead letters of this type.")
@click.option(
    "--older-than",
    type=DURATION,
    help="With --all-dead: only items dead for longer than this (e.g. 1h, 7d).",
)
@_common_options
def requeue_command(
    item_ids: tuple[int, ...],
    all_dead: bool,
    event_type: str | None,
    older_than: timedelta | None,
    as_json: bool,
) -> None:
    """Put dead letters back in the queue: ITEM_ID... or --all-dead [--type T] [--older-than D].

    A requeued item is pending, due at once, with its retry count reset; the requeue is
    recorded in its history with who asked.
    """
    from daz_actors.storage import queue

    if all_dead and item_ids:
        raise click.UsageError("give item ids or --all-dead, not both")
    if not all_dead and not item_ids:
        raise click.UsageError("give the ids of the dead letters to requeue, or --all-dead")
    if not all_dead and (event_type is not None or older_than is not None):
        raise click.UsageError("--type and --older-than only go with --all-dead")

    by = f"cli:{getpass.getuser()}"  # recorded in each requeued item's history

    async def by_filter(conn: Any) -> _RequeueResult:
        ids = await queue.requeue_dead_letters(
            conn, event_type=event_type, older_than=older_than, by=by
        )
        return _RequeueResult(requeued=ids, not_found=[], not_dead={})

    async def by_id(conn: Any) -> _RequeueResult:
        wanted = list(dict.fromkeys(item_ids))
        done = set(await queue.requeue(conn, wanted, by=by))
        requeued = [i for i in wanted if i in done]
        result = _RequeueResult(requeued=requeued, not_found=[], not_dead={})
        for item_id in wanted:
            if item_id in done:
                continue
            item = await queue.get(conn, item_id)
            if item is None:
                result.not_found.append(item_id)
            else:
                result.not_dead[item_id] = item.status.value
        return result

    result = _with_connection(by_filter if all_dead else by_id)
    if as_json:
        _print_json(result)
    elif result.requeued:
        click.echo(
            f"requeued {len(result.requeued)} item{'s' if len(result.requeued) != 1 else ''}: "
            + ", ".join(map(str, result.requeued))
        )
    elif all_dead:
        click.echo("no dead letters matched: nothing requeued")
    for item_id in result.not_found:
        _note(f"Error: no queue item {item_id}")
    for item_id, status in result.not_dead.items():
        _note(f"Error: item {item_id} is {status}, not a dead letter")
    if result.not_found or result.not_dead:
        raise click.exceptions.Exit(1)


@queue_group.command("replay")
@click.argument("item_ids", nargs=-1, type=_ITEM_ID)
@click.option("--type", "event_type", help="Only finished items of this event type.")
@click.option("--plugin", help="Only finished items of this plugin.")
@click.option("--since", type=DURATION, help="Only items finished within this (e.g. 6h).")
@click.option("--until", type=DURATION, help="Only items finished longer ago than this.")
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; change nothing.")
@_common_options
def replay_command(
    item_ids: tuple[int, ...],
    event_type: str | None,
    plugin: str | None,
    since: timedelta | None,
    until: timedelta | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Run finished items again: ITEM_ID... or filters (--type, --plugin, --since, --until).

    Finished means completed, or failed because it expired (dead letters: `queue requeue`).
    A replayed item is pending, due at once, from scratch (retry count reset, checkpoint
    cleared); the replay is recorded in its history with who asked. Handlers must be
    idempotent: a replay does the operation again.
    """
    from daz_actors.storage import queue

    filters = (event_type, plugin, since, until)
    if not item_ids and all(f is None for f in filters):
        raise click.UsageError(
            "give item ids or at least one of --type, --plugin, --since, --until"
        )
    by = f"cli:{getpass.getuser()}"

    async def run(conn: Any) -> list[int]:
        return await queue.replay(
            conn, by=by, ids=list(item_ids) or None, event_type=event_type, plugin=plugin,
            since=since, until=until, dry_run=dry_run,
        )  # fmt: skip

    ids = _with_connection(run)
    if as_json:
        _print_json({"dry_run": dry_run, "replayed": ids})
        return
    if not ids:
        click.echo("no finished items matched: nothing replayed")
    else:
        verb = "would replay" if dry_run else "replayed"
        click.echo(
            f"{verb} {len(ids)} item{'s' if len(ids) != 1 else ''}: {', '.join(map(str, ids))}"
        )
    missing = sorted(set(item_ids) - set(ids))
    for item_id in missing:
        _note(f"Error: item {item_id} does not exist or is not finished (completed or failed)")
    if missing:
        raise click.exceptions.Exit(1)


@queue_group.command("purge")
@click.option("--status", type=_STATUS, required=True, help="Delete items of this status.")
@click.option(
    "--older-than",
    type=DURATION,
    required=True,
    help="Only items last changed longer ago than this (e.g. 7d, 12h; 0s: all).",
)
@click.option("--type", "event_type", help="Only items of this event type.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Allow purging pending or processing items.")
@_common_options
def purge_command(
    status: str,
    older_than: timedelta,
    event_type: str | None,
    yes: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Delete items of one status (and their history) for good.

    Asks for confirmation unless --yes. Pending and processing items are work that has not
    finished: purging them is refused without --force.
    """
    from daz_actors.storage import queue

    chosen = RetryStatus(status.lower())
    if chosen in _LIVE and not force:
        raise click.ClickException(
            f"refusing to purge {chosen.value} items: they have not finished "
            "(add --force to drop them anyway)"
        )

    def what(count: int | None) -> str:
        items = "items" if count != 1 else "item"
        of_type = f" of type {event_type}" if event_type else ""
        return (
            f"{chosen.value} {items}{of_type} last changed more than "
            f"{format_duration(older_than)} ago"
        )

    async def run(conn: Any) -> int | None:
        found = await queue.count_items(
            conn, status=chosen, event_type=event_type, older_than=older_than
        )
        if found == 0:
            return 0
        if not yes and not click.confirm(
            f"Delete {found} {what(found)}, with their history?", default=False, err=True
        ):
            return None
        return await queue.purge(conn, status=chosen, event_type=event_type, older_than=older_than)

    deleted = _with_connection(run)
    if deleted is None:
        raise click.ClickException("not confirmed: nothing deleted")
    if as_json:
        _print_json(
            {
                "deleted": deleted,
                "status": chosen,
                "event_type": event_type,
                "older_than_seconds": older_than,
            }
        )
    elif deleted == 0:
        click.echo(f"nothing to purge: no {what(None)}")
    else:
        click.echo(f"deleted {deleted} {what(deleted)}")


@queue_group.command("cleanup")
@click.option(
    "--retention-days",
    type=DAYS,
    default=DEFAULT_RETENTION_DAYS,
    show_default=True,
    help="Delete completed and expired (failed) items last changed longer ago than this.",
)
@click.option(
    "--dead-letter-retention-days",
    type=DAYS,
    default=None,
    help="Also delete dead letters older than this [default: keep them].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1, max=MAX_CLEANUP_BATCH),
    default=DEFAULT_CLEANUP_BATCH,
    show_default=True,
    help="Items deleted per statement: each batch is a short transaction of its own, so a "
    "large backlog never holds its locks long.",
)
@_common_options
def cleanup_command(
    retention_days: float,
    dead_letter_retention_days: float | None,
    batch_size: int,
    as_json: bool,
) -> None:
    """Delete finished items past the retention period, in batches (what the periodic
    cleanup does)."""
    from daz_actors.retry.cleanup import prune_queue

    batches: list[int] = []  # each committed batch's count, as it commits

    async def run(conn: Any) -> int:
        return await prune_queue(
            conn,
            retention_days=retention_days,
            dead_letter_retention_days=dead_letter_retention_days,
            batch_size=batch_size,
            on_batch=batches.append,
        )

    try:
        deleted = _with_connection(run)
    except click.ClickException as exc:
        if sum(batches):  # what committed before the failure is gone: say so
            raise click.ClickException(
                f"{exc.message} (the cleanup had deleted {sum(batches)} item(s) in "
                f"{len(batches)} batch(es) before it stopped; run it again to go on)"
            ) from None
        raise
    if as_json:
        _print_json(
            {
                "deleted": deleted,
                "batches": len(batches),
                "batch_size": batch_size,
                "retention_days": retention_days,
                "dead_letter_retention_days": dead_letter_retention_days,
            }
        )
        return
    dead = (
        " (dead letters kept)"
        if dead_letter_retention_days is None
        else f", dead letters older than {dead_letter_retention_days:g} days"
    )
    in_batches = f" in {len(batches)} batches of at most {batch_size}" if len(batches) > 1 else ""
    click.echo(
        f"deleted {deleted} item{'s' if deleted != 1 else ''}{in_batches}: completed and "
        f"expired items older than {retention_days:g} days{dead}"
    )


@queue_group.command("alerts")
@_common_options
def alerts_command(as_json: bool) -> None:
    """What needs attention: dead letters, stuck, nearly exhausted and overdue items."""
    from daz_actors.storage import queue

    rows: list[QueueAlert] = _with_connection(queue.alerts)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("no alerts")
        return
    click.echo(
        _table(
            [
                "SEVERITY",
                "ALERT",
                "ID",
                "EVENT TYPE",
                "PLUGIN",
                "STATUS",
                "RETRIES",
                "SINCE",
                "LAST ERROR",
            ],
            (
                [
                    a.severity,
                    a.alert_type.value,
                    a.item_id,
                    a.event_type,
                    a.plugin or "-",
                    a.status.value,
                    f"{a.retry_count}/{a.max_retries}",
                    _ts(a.since),
                    _text(a.last_error),
                ]
                for a in rows
            ),
            right=(2, 6),
        )
    )
