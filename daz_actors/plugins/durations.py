"""Durations as people type them: ``90s``, ``10m``, ``1h30m``, ``2d``."""

from __future__ import annotations

import re

__all__ = ["DurationError", "parse_duration"]

_PART = re.compile(r"(\d+)([dhms])")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


class DurationError(ValueError):
    """Not a duration; the message says what one looks like."""


def parse_duration(text: str) -> int:
    """Whole seconds of ``1h30m``-style `text` (units d, h, m, s, largest first, each once)."""
    spec = text.strip().lower()
    parts = _PART.findall(spec)
    if not spec or "".join(n + u for n, u in parts) != spec:
        raise DurationError(f"{text!r} is not a duration: use e.g. 90s, 10m, 1h30m")
    units = [u for _, u in parts]
    if len(set(units)) != len(units) or units != sorted(units, key=lambda u: -_UNITS[u]):
        raise DurationError(f"{text!r}: give each unit once, largest first (1h30m)")
    return sum(int(n) * _UNITS[u] for n, u in parts)
