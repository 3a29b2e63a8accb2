"""The parameters of the retry layer's kinds (``retry``, ``failure-log``), apart from the
actors so that reading a config imports none of them."""

from __future__ import annotations

from typing import Any

import attrs

from daz_actors.runtime.validators import at_most, positive
from daz_actors.storage.error_classes import ErrorRules
from daz_actors.storage.gateway_params import GATEWAY_NAME

__all__ = ["FailureLogParams", "RetryParams"]


@attrs.frozen(kw_only=True)
class RetryParams(ErrorRules):
    """Parameters of the ``retry`` kind."""

    worker_count: int = attrs.field(default=3, validator=[positive, at_most(64)])  # workers
    # items per acquire
    batch_size: int = attrs.field(default=10, validator=[positive, at_most(1000)])
    lock_timeout: float = attrs.field(default=300.0, validator=positive)  # seconds
    poll_interval: float = attrs.field(default=5.0, validator=positive)  # seconds
    cleanup_interval: float = attrs.field(default=3600.0, validator=positive)  # seconds
    retention_days: float = attrs.field(default=7.0, validator=positive)  # finished rows kept
    worker_shutdown_timeout: float = 10.0  # seconds a stopping worker may finish its attempt
    gateway: str = GATEWAY_NAME  # the SQL gateway's registered name
    capture_patterns: tuple[str, ...] = ("*.failed", "*.error", "*.timeout")
    ignore_event_types: tuple[str, ...] = ("sql.query", "sql.run")  # cannot be redone later
    disabled_handlers: tuple[str, ...] = ()  # event types whose handler is switched off
    spool_max_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=positive)
    # bound of the local spool used while PostgreSQL is unreachable

    def __attrs_post_init__(self) -> None:
        self.classifier()


def _patterns(_inst: object, _attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if not value or any(not p for p in value):
        raise ValueError("patterns must be a non-empty list of non-empty topic patterns")


@attrs.frozen(kw_only=True)
class FailureLogParams:
    """Parameters of the ``failure-log`` kind."""

    patterns: tuple[str, ...] = attrs.field(
        default=("*.failed", "*.error", "*.timeout", "actor.crashed"), validator=_patterns
    )  # topics to log
