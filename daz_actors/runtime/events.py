"""Typed events published on the bus."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["ActorFailed", "FailureEvent", "new_id"]


def new_id() -> str:
    """A fresh unique id for an event or a correlation."""
    return uuid.uuid4().hex


@attrs.frozen(kw_only=True)
class FailureEvent:
    """An operation failed; published on a topic such as ``sql.exec.failed``.

    The retry subsystem turns retryable ones into durable queue items, idempotently by
    `event_id`: the same failure published twice is queued once.
    """

    topic: str  # where it was published, e.g. "cytube.send.failed"
    source: str  # name of the actor that saw the failure
    operation: str  # operation type, selects the retry policy: "cytube_command", ...
    event_type: str  # which retry handler can redo it, e.g. "cytube.send_chat"
    error: str  # the error text (never a secret)
    error_code: str | None = None  # SQLSTATE, error class name, ...
    retryable: bool  # classified before publishing: retryable or permanent
    retry_data: Mapping[str, Any] = attrs.field(factory=dict)  # JSON data to redo it
    channel: str | None = None  # the chat channel it concerns, if any
    event_id: str = attrs.field(factory=new_id)  # idempotency key for the queue
    correlation_id: str = attrs.field(factory=new_id)  # follows the operation everywhere
    occurred_at: float = attrs.field(factory=time.time)  # wall-clock seconds since epoch


@attrs.frozen(kw_only=True)
class ActorFailed:
    """An actor incarnation crashed; published on the topic ``actor.crashed``."""

    actor: str  # the child's name
    supervisor: str  # the supervisor that owns it
    error: str  # repr of the exception
    error_type: str  # the exception's class name
    message_type: str | None  # type of the message being handled, if any
    incarnation: int  # which incarnation crashed
    occurred_at: float = attrs.field(factory=time.time)
