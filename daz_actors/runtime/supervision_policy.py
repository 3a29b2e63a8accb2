"""The decision rules of supervision, with no I/O: what a supervisor does when a child exits.

Kept apart from the trio code so that they can be tested directly, step by step.
"""

from __future__ import annotations

import collections
import enum

import attrs

from daz_actors.runtime.backoff import BackoffPolicy

__all__ = [
    "ExitKind",
    "Restart",
    "RestartIntensity",
    "Strategy",
    "SupervisorPolicy",
    "affected_children",
    "needs_restart",
]


class Strategy(enum.Enum):
    """Which children restart when one of them exits and must be restarted."""

    ONE_FOR_ONE = "one_for_one"  # only that child
    ONE_FOR_ALL = "one_for_all"  # every child
    REST_FOR_ONE = "rest_for_one"  # that child and every child started after it


class Restart(enum.Enum):
    """When a child is restarted after it exits."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after a crash (an exception)
    TEMPORARY = "temporary"  # never; it is removed when it exits


class ExitKind(enum.Enum):
    """How an incarnation ended."""

    NORMAL = "normal"  # returned
    CRASH = "crash"  # raised an exception (before or after it was ready)


def needs_restart(restart: Restart, kind: ExitKind) -> bool:
    """Whether a child of restart type `restart` that exited with `kind` is restarted."""
    if restart is Restart.PERMANENT:
        return True
    if restart is Restart.TRANSIENT:
        return kind is ExitKind.CRASH
    return False


def affected_children(strategy: Strategy, index: int, count: int) -> range:
    """Indexes (in start order) of the children restarted when child `index` must be."""
    if not 0 <= index < count:
        raise IndexError(f"child index {index} out of range for {count} children")
    if strategy is Strategy.ONE_FOR_ONE:
        return range(index, index + 1)
    if strategy is Strategy.ONE_FOR_ALL:
        return range(count)
    return range(index, count)


def _positive_int(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{attr.name} must be an integer >= 0, got {value!r}")


def _positive_float(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{attr.name} must be a number > 0, got {value!r}")


def _non_negative_float(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{attr.name} must be a number >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class SupervisorPolicy:
    """How a supervisor restarts its children."""

    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = attrs.field(default=5, validator=_positive_int)  # per window
    within_seconds: float = attrs.field(default=60.0, validator=_positive_float)  # window
    backoff: BackoffPolicy = BackoffPolicy()  # wait before each restart
    reset_after: float = attrs.field(default=30.0, validator=_non_negative_float)
    # a child that ran this long without crashing starts its backoff over


class RestartIntensity:
    """Counts restarts in a sliding window: more than `max_restarts` within it means give up."""

    def __init__(self, max_restarts: int, within_seconds: float) -> None:
        self.max_restarts = max_restarts
        self.within_seconds = within_seconds
        self._times: collections.deque[float] = collections.deque()

    def record(self, now: float) -> bool:
        """Record a restart at `now`; False if that makes too many within the window."""
        self._times.append(now)
        horizon = now - self.within_seconds
        while self._times and self._times[0] <= horizon:
            self._times.popleft()
        return len(self._times) <= self.max_restarts

    def recent(self, now: float) -> int:
        """Restarts recorded within the window ending at `now`."""
        horizon = now - self.within_seconds
        return sum(1 for t in self._times if t > horizon)
