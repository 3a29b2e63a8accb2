"""Warnings that repeat during an outage, summarised: one line per kind per interval.

`RepeatedWarnings.warning(kind, msg, *args)` logs the first warning of `kind` at WARNING;
the same kind again within `interval` seconds goes to DEBUG (every item's detail is still
there with ``-vv``) and is counted; the first one after the interval is logged at WARNING
again with ``(N more like this in the last S s)``. Kinds are short fixed strings chosen by
the caller (an operation and an error code, never an item id), so the table stays small.

An outage ends with no warning of its kind after it: `flush_due` logs the count of a kind
whose interval has passed since its last WARNING (``<kind>: N more like this in the last
S s``) and forgets the kind, so a burst's count is reported when the burst is over, not
with the first warning of the next outage (and attributed to that one). The owner calls
it from something periodic it already does (the retry capture on every spool drain the
dispatcher asks for, the SQL gateway on every call, the failure log on every event); it
returns at once while nothing is due.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["DEFAULT_INTERVAL", "MAX_KINDS", "RepeatedWarnings"]

DEFAULT_INTERVAL = 10.0
MAX_KINDS = 256  # kinds remembered; beyond it the one logged longest ago is forgotten


@attrs.define
class _Kind:
    logged_at: float
    suppressed: int = 0


class RepeatedWarnings:
    """Rate-limited warnings of one logger, per kind (see the module docstring)."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._kinds: dict[str, _Kind] = {}
        self._next_due = math.inf  # the earliest time a suppressed count is due

    def warning(self, kind: str, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log `msg % args` at WARNING, or at DEBUG when `kind` was logged less than
        `interval` seconds ago (counted, and reported with the next WARNING of it)."""
        now = self._clock()
        seen = self._kinds.get(kind)
        if seen is not None and now - seen.logged_at < self._interval:
            seen.suppressed += 1
            self._next_due = min(self._next_due, seen.logged_at + self._interval)
            self._log.debug(msg, *args, **kwargs)
            return
        if seen is not None and seen.suppressed:
            msg += " (%d more like this in the last %.0f s)"
            args = (*args, seen.suppressed, now - seen.logged_at)
        self._kinds.pop(kind, None)  # re-inserted last: the dict stays in time order
        self._kinds[kind] = _Kind(logged_at=now)
        while len(self._kinds) > MAX_KINDS:
            del self._kinds[next(iter(self._kinds))]
        self._log.warning(msg, *args, **kwargs)

    def flush_due(self) -> int:
        """Log the count of every kind whose suppressed warnings are older than `interval`
        with no WARNING of it since, and forget those kinds; how many were logged."""
        now = self._clock()
        if now < self._next_due:
            return 0
        flushed, next_due = 0, math.inf
        for kind, seen in list(self._kinds.items()):
            if not seen.suppressed:
                continue
            due = seen.logged_at + self._interval
            if now < due:
                next_due = min(next_due, due)
                continue
            del self._kinds[kind]
            self._log.warning(
                "%s: %d more like this in the last %.0f s",
                kind,
                seen.suppressed,
                now - seen.logged_at,
            )
            flushed += 1
        self._next_due = next_due
        return flushed

    def __len__(self) -> int:
        """Kinds remembered (at most MAX_KINDS)."""
        return len(self._kinds)
