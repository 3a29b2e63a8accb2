"""The dashboard's query strings and forms read into typed values, with errors that name
the field that was wrong."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime

from daz_actors.storage.queue_browse import MAX_PAGE, Action, ItemFilter
from daz_actors.storage.queue_types import QueueInputError, RetryStatus

__all__ = ["FILTER_FIELDS", "BadInput", "filter_query", "read_action", "read_filter", "read_int"]

# the query-string names of the filter's fields, in the order of the form
FILTER_FIELDS = ("status", "type", "plugin", "channel", "since", "until", "error")


class BadInput(ValueError):
    """A query string or form value the dashboard cannot use; the message names it."""


def _time(name: str, text: str) -> datetime:
    """``2026-12-05T08:00`` (a datetime-local input, read as UTC) or a full ISO 8601 time."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{name}: {text!r} is not a time like 2026-12-05T08:00 (UTC)") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def read_filter(params: Mapping[str, str]) -> ItemFilter:
    """The item filter of a query string or form; empty fields are no filter."""
    given = {k: params.get(k, "").strip() for k in FILTER_FIELDS}
    status = None
    if given["status"]:
        try:
            status = RetryStatus(given["status"])
        except ValueError:
            choices = ", ".join(s.value for s in RetryStatus)
            raise BadInput(f"status: {given['status']!r} is not one of {choices}") from None
    try:
        return ItemFilter(
            status=status,
            event_type=given["type"] or None,
            plugin=given["plugin"] or None,
            channel=given["channel"] or None,
            since=_time("since", given["since"]) if given["since"] else None,
            until=_time("until", given["until"]) if given["until"] else None,
            error=given["error"] or None,
        )
    except QueueInputError as exc:
        raise BadInput(str(exc)) from None


def filter_query(where: ItemFilter, **extra: object) -> str:
    """The query string of `where` (and `extra` parameters), for links and forms."""
    pairs: list[tuple[str, str]] = []
    for key, value in (
        ("status", where.status.value if where.status else None),
        ("type", where.event_type),
        ("plugin", where.plugin),
        ("channel", where.channel),
        ("since", where.since.isoformat() if where.since else None),
        ("until", where.until.isoformat() if where.until else None),
        ("error", where.error),
    ):
        if value:
            pairs.append((key, value))
    pairs += [(k, str(v)) for k, v in extra.items() if v is not None]
    return urllib.parse.urlencode(pairs)


def read_int(params: Mapping[str, str], name: str, *, default: int | None = None,
             low: int = 0, high: int = 2**62) -> int | None:  # fmt: skip
    """An integer parameter from `low` to `high`, or `default` when absent."""
    text = params.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadInput(f"{name}: {text!r} is not a whole number") from None
    if not low <= value <= high:
        raise BadInput(f"{name}: {value} is not from {low} to {high}")
    return value


def read_limit(params: Mapping[str, str]) -> int:
    value = read_int(params, "limit", default=50, low=1, high=MAX_PAGE)
    assert value is not None
    return value


def read_action(params: Mapping[str, str]) -> Action:
    text = params.get("action", "")
    try:
        return Action(text)
    except ValueError:
        choices = ", ".join(a.value for a in Action)
        raise BadInput(f"action: {text!r} is not one of {choices}") from None
