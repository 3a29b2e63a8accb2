"""Every delay in the system: actor restarts, websocket reconnects, retry attempts.

Pure and deterministic given a random source: `BackoffPolicy.delay(attempt, rng=...)`.
The base delay is ``min(max_delay, initial * multiplier ** attempt)``; the jitter mode
then spreads it:

- ``none``: the base delay itself.
- ``proportional``: uniform in ``base * (1 ± jitter_ratio)``, capped at ``max_delay``.
- ``full``: uniform in ``[0, base]`` (AWS "full jitter").
- ``decorrelated``: uniform in ``[initial, previous * 3]`` capped at ``max_delay``, where
  ``previous`` is the delay returned for the attempt before (AWS "decorrelated jitter").
"""

from __future__ import annotations

import enum
import math
import random

import attrs

__all__ = ["BackoffPolicy", "Jitter"]


class Jitter(enum.Enum):
    """How a backoff delay is spread around its base value."""

    NONE = "none"
    PROPORTIONAL = "proportional"
    FULL = "full"
    DECORRELATED = "decorrelated"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _non_negative(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not (_is_number(value) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{attr.name} must be a finite number >= 0, got {value!r}")


def _multiplier(_inst: object, _attr: attrs.Attribute[float], value: float) -> None:
    if not (_is_number(value) and math.isfinite(value) and value >= 1):
        raise ValueError(f"multiplier must be a finite number >= 1, got {value!r}")


def _ratio(_inst: object, _attr: attrs.Attribute[float], value: float) -> None:
    if not (_is_number(value) and 0 <= value <= 1):
        raise ValueError(f"jitter_ratio must be between 0 and 1, got {value!r}")


def _jitter(_inst: object, _attr: attrs.Attribute[Jitter], value: Jitter) -> None:
    # A plain string such as "none" would otherwise fall through to decorrelated jitter.
    if not isinstance(value, Jitter):
        choices = ", ".join(repr(j.value) for j in Jitter)
        raise ValueError(f"jitter must be a Jitter ({choices}), got {value!r}")


@attrs.frozen(kw_only=True)
class BackoffPolicy:
    """Exponential backoff with a cap and a jitter mode."""

    initial: float = attrs.field(default=0.1, validator=_non_negative)  # seconds, attempt 0
    multiplier: float = attrs.field(default=2.0, validator=_multiplier)  # growth per attempt
    max_delay: float = attrs.field(default=30.0, validator=_non_negative)  # cap, seconds
    jitter: Jitter = attrs.field(default=Jitter.PROPORTIONAL, validator=_jitter)  # spread
    jitter_ratio: float = attrs.field(default=0.25, validator=_ratio)  # for PROPORTIONAL

    def __attrs_post_init__(self) -> None:
        if self.max_delay < self.initial:
            raise ValueError(
                f"max_delay ({self.max_delay:g}) must not be below initial ({self.initial:g})"
            )

    def base_delay(self, attempt: int) -> float:
        """The delay before jitter for `attempt` (0 is the first retry)."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        if self.initial == 0:  # 0 * multiplier**attempt, even where the power overflows
            return 0.0
        try:
            # float power: an int multiplier with a huge attempt would build a huge int
            growth = float(self.multiplier) ** attempt
        except OverflowError:
            return self.max_delay
        return min(self.max_delay, self.initial * growth)

    def bounds(self, attempt: int, previous: float | None = None) -> tuple[float, float]:
        """The closed interval every `delay(attempt, ...)` lies in."""
        base = self.base_delay(attempt)
        if self.jitter is Jitter.NONE:
            return base, base
        if self.jitter is Jitter.PROPORTIONAL:
            return base * (1 - self.jitter_ratio), min(
                self.max_delay, base * (1 + self.jitter_ratio)
            )
        if self.jitter is Jitter.FULL:
            return 0.0, base
        prev = self.initial if previous is None else max(previous, self.initial)
        return min(self.initial, self.max_delay), min(self.max_delay, prev * 3)

    def delay(
        self, attempt: int, *, rng: random.Random | None = None, previous: float | None = None
    ) -> float:
        """The delay in seconds before retry number `attempt` (0-based).

        `previous` is only used by ``decorrelated`` jitter: the delay returned last time.
        """
        low, high = self.bounds(attempt, previous)
        if low == high:
            return low
        source = rng if rng is not None else random
        # uniform() computes low + (high - low) * r, which rounding may push past an end
        return min(high, max(low, source.uniform(low, high)))
