"""Retry policies: how the queue retries each operation type (the `[retry_policies]` table)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from daz_actors.runtime.backoff import BackoffPolicy, Jitter
from daz_actors.runtime.validators import non_negative, positive

__all__ = ["DEFAULT_RETRY_POLICIES", "RetryPolicy"]


def _priority(_inst: object, attr: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10:
        raise ValueError(f"{attr.name} must be an integer from 1 to 10, got {value!r}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How the retry queue retries one operation type."""

    max_retries: int = attrs.field(default=3, validator=non_negative)
    initial: float = attrs.field(default=60.0, validator=non_negative)  # seconds
    max_delay: float = attrs.field(default=3600.0, validator=non_negative)  # seconds
    multiplier: float = 2.0
    jitter: Jitter = Jitter.NONE
    attempt_timeout: float = attrs.field(default=30.0, validator=positive)  # seconds
    priority: int = attrs.field(default=5, validator=_priority)  # 1-10, 10 handed out first
    tags: tuple[str, ...] = attrs.field(default=(), converter=tuple)  # labels on its items

    def __attrs_post_init__(self) -> None:
        self.backoff()  # validates multiplier and max_delay >= initial

    def backoff(self) -> BackoffPolicy:
        """The delays between attempts as a `BackoffPolicy`."""
        return BackoffPolicy(
            initial=self.initial,
            multiplier=self.multiplier,
            max_delay=self.max_delay,
            jitter=self.jitter,
        )


DEFAULT_RETRY_POLICIES: Mapping[str, Mapping[str, Any]] = {
    "cytube_command": {  # a reply to a user: first
        "priority": 8,
        "tags": ["chat"],
        "max_retries": 5,
        "initial": 5.0,
        "max_delay": 300.0,
        "multiplier": 2.0,
        "attempt_timeout": 30.0,
    },
    "sql_operation": {  # a log write: after replies and commands
        "priority": 5,
        "tags": ["database"],
        "max_retries": 3,
        "initial": 2.0,
        "max_delay": 60.0,
        "multiplier": 1.5,
        "attempt_timeout": 15.0,
    },
    "plugin_request": {
        "priority": 6,
        "tags": ["command"],
        "max_retries": 3,
        "initial": 1.0,
        "max_delay": 30.0,
        "multiplier": 2.0,
        "attempt_timeout": 20.0,
    },
    "default": {
        "max_retries": 3,
        "initial": 60.0,
        "max_delay": 3600.0,
        "multiplier": 2.0,
        "attempt_timeout": 30.0,
    },
}
