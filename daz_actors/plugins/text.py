"""Small text helpers shared by the built-in plugins' replies."""

from __future__ import annotations

import re
from datetime import datetime

__all__ = ["USER_NAME", "ago", "clip", "parse_user"]

# a CyTube user name (1-20 of [A-Za-z0-9_-]), optionally written @name
USER_NAME = re.compile(r"@?([A-Za-z0-9_-]{1,20})")


def parse_user(text: str) -> str | None:
    """The user name `text` names (``ann`` or ``@ann``), or None if it is not one."""
    match = USER_NAME.fullmatch(text.strip())
    return match.group(1) if match else None


def ago(then: datetime, now: datetime) -> str:
    """``"3m ago"``, ``"2h 5m ago"``, ``"4d 3h ago"``: the two largest units."""
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 60:
        return f"{seconds}s ago"
    units = (("d", 86400), ("h", 3600), ("m", 60))
    parts: list[str] = []
    for suffix, size in units:
        value, seconds = divmod(seconds, size)
        if value or parts:
            parts.append(f"{value}{suffix}")
        if len(parts) == 2:
            break
    return " ".join(p for p in parts if not p.startswith("0")) + " ago"


def clip(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"
