"""A mirror of the CyTube server's chat rate limiter, so the bot never trips it.

The server keeps one limiter per user, shared by chat lines and private messages
(``newRateLimiter`` in ``src/utilities.js``, used in ``src/channel/chat.js``). For each
line, with parameters burst, sustained (lines a second) and cooldown (seconds, default
burst / sustained):

- no line was *allowed* within the last cooldown seconds: count = 1, allowed;
- else count < burst: count += 1, allowed;
- else allowed only if at least 1000 / sustained ms passed since the last allowed line.

A refused line does not move the last-allowed time and gets ``cooldown`` with the bare
number 1000 / sustained. Chat uses the channel's ``chat_antiflood_params`` when its
``chat_antiflood`` option is on and the user's rank is below 2, else the minimum (burst 20,
sustained 10); private messages always use the minimum.

`LimiterMirror` replays that algorithm on the bot's side with a safety `Margin`: every
wait is stretched a little (network jitter can bring two lines closer together at the
server than they left the bot), and the mirror never believes the server's count was
reset before it surely was. Pure bookkeeping: the caller passes the time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

__all__ = [
    "ANTIFLOOD_DEFAULT",
    "DEFAULT_MARGIN",
    "MIN_ANTIFLOOD",
    "LimiterMirror",
    "LimiterParams",
    "Margin",
    "chat_params",
    "least_time",
]

_SATURATED = 2**31  # a count at or above any burst


@attrs.frozen(kw_only=True)
class LimiterParams:
    """One set of the server's limiter parameters."""

    burst: int  # lines allowed at once
    sustained: float  # lines a second after the burst
    cooldown: float | None = None  # seconds without an allowed line that reset the count

    @property
    def interval(self) -> float:
        """Seconds between lines after the burst (1 / sustained)."""
        return 1.0 / self.sustained

    @property
    def cooldown_s(self) -> float:
        """The cooldown in seconds (default burst / sustained, as the server computes it)."""
        return self.cooldown if self.cooldown is not None else self.burst / self.sustained


MIN_ANTIFLOOD = LimiterParams(burst=20, sustained=10)  # everyone; all private messages
ANTIFLOOD_DEFAULT = LimiterParams(burst=4, sustained=1, cooldown=4)  # chat_antiflood_params


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
    return float(value) if math.isfinite(value) and value > 0 else None


def chat_params(options: Mapping[str, Any], rank: float) -> LimiterParams:
    """The parameters the server applies to our chat lines: the channel's anti-flood
    parameters when ``chat_antiflood`` is on and our `rank` is below 2, else the minimum."""
    if not options.get("chat_antiflood") or rank >= 2:
        return MIN_ANTIFLOOD
    given = options.get("chat_antiflood_params")
    if not isinstance(given, Mapping):
        return ANTIFLOOD_DEFAULT
    burst = _number(given.get("burst"))
    sustained = _number(given.get("sustained"))
    return LimiterParams(
        burst=int(burst) if burst is not None else ANTIFLOOD_DEFAULT.burst,
        sustained=sustained if sustained is not None else ANTIFLOOD_DEFAULT.sustained,
        cooldown=_number(given.get("cooldown")),
    )


@attrs.frozen(kw_only=True)
class Margin:
    """How much later than the server's limit the bot sends: ``t * (1 + ratio) + fixed``."""

    ratio: float = 0.02
    fixed: float = 0.01  # seconds

    def stretch(self, seconds: float) -> float:
        return seconds * (1 + self.ratio) + self.fixed


DEFAULT_MARGIN = Margin()


@attrs.define
class LimiterMirror:
    """The server's limiter state as the bot knows it (trio seconds)."""

    margin: Margin = DEFAULT_MARGIN
    count: int = 0
    last: float = -math.inf  # when the last line the server allowed left the bot
    not_before: float = -math.inf  # after a refusal: no line before this

    def _cooled(self, now: float, params: LimiterParams) -> bool:
        # surely cooled down at the server too, whatever the jitter
        return now - self.last > self.margin.stretch(params.cooldown_s)

    def wait(self, now: float, params: LimiterParams) -> float:
        """Seconds from `now` until a line under `params` is surely allowed."""
        hold = max(0.0, self.not_before - now)
        if self._cooled(now + hold, params) or self.count < params.burst:
            return hold
        step = min(params.interval, params.cooldown_s)
        return max(hold, self.last + self.margin.stretch(step) - now)

    def cooled(self, now: float, params: LimiterParams) -> bool:
        """True when the server's count is surely reset: the mirror is exact again."""
        return self._cooled(now, params) and now >= self.not_before

    def record(self, now: float, params: LimiterParams) -> None:
        """A line left the bot at `now` (sent when `wait` said so): the server's steps."""
        if self._cooled(now, params):
            self.count = 1
        elif self.count < params.burst:
            self.count += 1
        self.last = now

    def refused(self, now: float, wait_ms: float) -> None:
        """The server refused a line (``cooldown`` with `wait_ms`): it is past its burst, and
        its last allowed line may be as late as `now`."""
        self.count = _SATURATED
        self.last = max(self.last, now)
        self.not_before = now + self.margin.stretch(max(wait_ms, 0.0) / 1000.0)


def least_time(ready: Iterable[float], params: LimiterParams) -> float:
    """The least time (from 0) by which the server's limiter lets through one line per
    entry of `ready` (each line no sooner than its ready time, in order): the ideal the
    bot's pacing is measured against."""
    count, last, t = 0, -math.inf, 0.0
    for at in ready:
        t = max(t, at)
        if t - last > params.cooldown_s:
            count = 1
        elif count < params.burst:
            count += 1
        else:
            t = max(t, last + params.interval)
        last = t
    return t
