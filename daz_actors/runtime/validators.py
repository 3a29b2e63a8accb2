"""Attrs validators shared by every settings class, so a bad value reads the same everywhere."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["at_most", "non_negative", "positive"]


def positive(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    """Refuse a value that is not > 0, naming the field."""
    if not value > 0:
        raise ValueError(f"{attr.name} must be > 0, got {value!r}")


def non_negative(_inst: object, attr: attrs.Attribute[Any], value: float | None) -> None:
    """Refuse a value below 0 (None passes: "not set"), naming the field."""
    if value is not None and value < 0:
        raise ValueError(f"{attr.name} must be >= 0, got {value!r}")


def at_most(high: float) -> Any:
    """A validator refusing a value above `high` (a sane upper bound), naming the field."""

    def check(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
        if value > high:
            raise ValueError(f"{attr.name} must be at most {high:,}, got {value!r}")

    return check
