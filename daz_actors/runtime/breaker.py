"""A circuit breaker: pure state, fed with outcomes and the time, no I/O.

CLOSED: calls pass; outcomes go into a sliding window of the last `window` calls. When the
window holds at least `min_calls` outcomes and the failure ratio reaches `failure_ratio`,
the breaker OPENs. OPEN: calls fail fast until `open_seconds` have passed, then the breaker
is HALF_OPEN: one probe call at a time may pass; its success CLOSEs the breaker (with an
empty window), its failure OPENs it again. Only failures that say something about the
database's health (retryable ones) should be recorded as failures.
"""

from __future__ import annotations

import collections
import enum

import attrs

from daz_actors.runtime.validators import positive

__all__ = ["BreakerPolicy", "BreakerState", "CircuitBreaker"]


class BreakerState(enum.Enum):
    """Where a circuit breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def _ratio(_inst: object, _attr: attrs.Attribute[float], value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"failure_ratio must be in (0, 1], got {value!r}")


def _at_least_one(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attr.name} must be >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class BreakerPolicy:
    """When a breaker opens and for how long."""

    window: int = attrs.field(default=20, validator=_at_least_one)  # outcomes remembered
    min_calls: int = attrs.field(default=5, validator=_at_least_one)  # before it may open
    failure_ratio: float = attrs.field(default=0.5, validator=_ratio)  # opens at this ratio
    open_seconds: float = attrs.field(default=5.0, validator=positive)  # before a probe


class CircuitBreaker:
    """The breaker's state machine; the caller passes the current time to each method."""

    def __init__(self, policy: BreakerPolicy | None = None) -> None:
        self.policy = policy if policy is not None else BreakerPolicy()
        self.state = BreakerState.CLOSED
        self._outcomes: collections.deque[bool] = collections.deque(maxlen=self.policy.window)
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.transitions = 0  # state changes so far

    def retry_after(self, now: float) -> float:
        """Seconds until an OPEN breaker lets a probe through (0 otherwise)."""
        if self.state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self.policy.open_seconds - now)
        return 0.0

    def allow(self, now: float) -> bool:
        """Whether a call may go ahead now; a True in HALF_OPEN makes it the probe."""
        if self.state is BreakerState.OPEN:
            if now - self._opened_at < self.policy.open_seconds:
                return False
            self._move(BreakerState.HALF_OPEN)
        if self.state is BreakerState.HALF_OPEN:
            if self._probe_in_flight:
                return False
            self._probe_in_flight = True
        return True

    def record_success(self, now: float) -> None:
        """A call that was allowed succeeded (or failed for reasons of its own)."""
        if self.state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False
            self._outcomes.clear()
            self._move(BreakerState.CLOSED)
            return
        if self.state is BreakerState.CLOSED:
            self._outcomes.append(True)
            self._check(now)

    def record_failure(self, now: float) -> None:
        """A call that was allowed failed in a way that says the database is unwell."""
        if self.state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False
            self._open(now)
            return
        if self.state is BreakerState.OPEN:
            return
        self._outcomes.append(False)
        self._check(now)

    def _check(self, now: float) -> None:
        """Open when the window holds min_calls outcomes at or past the failure ratio."""
        if (
            len(self._outcomes) >= self.policy.min_calls
            and self._outcomes.count(False) / len(self._outcomes) >= self.policy.failure_ratio
        ):
            self._open(now)

    def record_cancelled(self) -> None:
        """An allowed call ended without an outcome (cancelled): free the probe slot."""
        if self.state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False

    def failure_ratio(self) -> float:
        """Failures over outcomes in the window now (0 when empty)."""
        if not self._outcomes:
            return 0.0
        return self._outcomes.count(False) / len(self._outcomes)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._outcomes.clear()
        self._move(BreakerState.OPEN)

    def _move(self, state: BreakerState) -> None:
        if state is not self.state:
            self.state = state
            self.transitions += 1
