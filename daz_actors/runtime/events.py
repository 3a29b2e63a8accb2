"""Typed events published on the bus."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["ActorFailed", "FailureBatch", "FailureEvent", "Intent", "new_id"]


def new_id() -> str:
    """A fresh unique id for an event or a correlation."""
    return uuid.uuid4().hex


def _json_object(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(f"{attr.name} must be a mapping of JSON values, got {value!r}")


@attrs.frozen(kw_only=True)
class Intent:
    """What a queued operation means: a named, versioned operation with JSON arguments.

    Never code or SQL: the handler registered for (`name`, `version`) rebuilds the action
    from the code of the process that runs it, so a migration or a new release does not
    break what was queued before it (an older version is upgraded by its handler).
    """

    name: str  # e.g. "chat.log", "cytube.say", "command.run"
    version: int  # of the arguments' shape
    args: Mapping[str, Any] = attrs.field(validator=_json_object)  # JSON-serialisable


@attrs.frozen(kw_only=True)
class FailureEvent:
    """An operation failed; published on a topic such as ``cytube.send.failed``.

    Only an event that carries an `intent` (set by the caller that chose to have the
    operation retried) and is retryable becomes a durable queue item, idempotently by
    `event_id`: the same failure published twice is queued once. Any other failure is for
    observation (logs, metrics, subscribers) and was reported to its caller.
    """

    topic: str  # where it was published, e.g. "cytube.send.failed"
    source: str  # name of the actor that saw the failure
    operation: str  # operation type, selects the retry policy: "cytube_command", ...
    event_type: str  # what failed, e.g. "sql.exec" or the intent's name
    error: str  # the error text (never a secret)
    error_code: str | None = None  # SQLSTATE, error class name, ...
    retryable: bool  # classified before publishing: retryable or permanent
    intent: Intent | None = None  # what to queue to redo it; None: not retried
    plugin: str | None = None  # the component that failed ("chat-log", "cytube", ...)
    channel: str | None = None  # the chat channel it concerns, if any
    event_id: str = attrs.field(factory=new_id)  # idempotency key for the queue
    correlation_id: str = attrs.field(factory=new_id)  # follows the operation everywhere
    occurred_at: float = attrs.field(factory=time.time)  # wall-clock seconds since epoch


@attrs.frozen(kw_only=True)
class FailureBatch:
    """Several failures of one operation, published at once on one topic (the rows of a
    batch write that failed together). Each is what its `FailureEvent` says; as one
    message, the retry capture queues (or spools) them in one call, and a capture that
    crashes on it is given the whole batch again."""

    topic: str  # where it was published, e.g. "chat.log.failed"
    events: tuple[FailureEvent, ...]  # in order; each with its own event id and intent


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
