"""Retry handlers: what redoes a queued operation, registered per event type.

A handler is ``async def handler(item: QueueItem, ctx: AttemptContext) -> None``. It must
be idempotent: delivery is at least once, and ``ctx.event_id`` is the key to deduplicate
on. Raising fails the attempt; the error is classified retryable or permanent (a
`PermanentError` is always permanent). A handler that runs past the item's attempt timeout
is cancelled and the attempt fails as retryable.

A multi-step handler records each step it finished with ``await ctx.checkpoint.mark(step)``
and skips steps for which ``ctx.checkpoint.done(step)`` is true, so the next attempt resumes
after the last step that succeeded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import attrs

from daz_actors.runtime.errors import DazActorsError, NameTaken
from daz_actors.runtime.registry import Registry
from daz_actors.runtime.supervisor import POISON_EVENT_TYPE
from daz_actors.storage.queue_types import Lease, QueueItem
from daz_actors.storage.sql_messages import SqlClient

__all__ = [
    "AttemptContext",
    "Checkpoint",
    "Handler",
    "HandlerRegistry",
    "ItemReleased",
    "PermanentError",
    "UnknownEventType",
]


class PermanentError(DazActorsError):
    """Raised by a handler: this item can never succeed; dead-letter it at once."""

    retryable = False  # read by the error classifier
    code = "permanent"  # the error code stored on the dead letter


class NotRequeueable(PermanentError):
    """A dead letter kept for inspection only: requeueing it dead-letters it again."""

    code = "not_requeueable"


class ItemReleased(Exception):
    """Raised by a handler that has released its item itself, e.g. handed it over to the
    node holding its channel (``release_retry_items`` or a function built on it: no attempt
    counted, the history row closed as 'released'). The worker writes no outcome for it
    (no completion, no failure), counts it as handed back, and goes on with the batch."""


class UnknownEventType(DazActorsError, LookupError):
    """No enabled handler for an item's event type (the item is dead-lettered)."""


class Checkpoint:
    """The resume point of a multi-step handler, saved in the item's ``checkpoint`` column."""

    def __init__(self, saved: Any, save: Callable[[dict[str, Any]], Awaitable[bool]]) -> None:
        steps = saved.get("steps", []) if isinstance(saved, dict) else []
        self._steps: list[str] = [str(s) for s in steps]
        self._save = save

    @property
    def steps(self) -> tuple[str, ...]:
        """Steps finished so far, in order."""
        return tuple(self._steps)

    def done(self, step: str) -> bool:
        """True if `step` finished in this or an earlier attempt."""
        return step in self._steps

    async def mark(self, step: str) -> None:
        """Record that `step` finished (durably, before returning)."""
        if step in self._steps:
            return
        self._steps.append(step)
        if not await self._save({"steps": self._steps}):
            raise PermanentError(f"lost the lease while saving checkpoint {step!r}")


@attrs.frozen(kw_only=True)
class AttemptContext:
    """What a handler gets besides the item."""

    event_id: str  # the idempotency key
    correlation_id: str | None  # follows the operation through every attempt and log line
    attempt: int  # 1 for the first attempt
    lease: Lease  # this attempt's lease (for handlers that write to the queue themselves)
    checkpoint: Checkpoint  # resume point of a multi-step handler
    registry: Registry  # to reach other actors
    db: SqlClient  # the SQL gateway
    attempt_timeout: float = 30.0  # seconds this attempt may take (it is cancelled after)


class Handler(Protocol):
    async def __call__(self, item: QueueItem, ctx: AttemptContext) -> None: ...


@attrs.frozen(kw_only=True)
class _Entry:
    handler: Handler
    description: str


class HandlerRegistry:
    """Event type -> handler. Pass one to the retry subsystem; no global state."""

    def __init__(self) -> None:
        self._handlers: dict[str, _Entry] = {}
        self._disabled: set[str] = set()

    def register(self, event_type: str, *, description: str = "") -> Callable[[Handler], Handler]:
        """Decorator: ``@handlers.register("greeting.send")``."""

        def decorate(handler: Handler) -> Handler:
            self.add(event_type, handler, description=description)
            return handler

        return decorate

    def add(self, event_type: str, handler: Handler, *, description: str = "") -> None:
        """Register `handler` for `event_type` (once per type)."""
        if not event_type or not isinstance(event_type, str):
            raise ValueError(f"event type must be a non-empty string, got {event_type!r}")
        if event_type in self._handlers:
            raise NameTaken(f"a retry handler for {event_type!r} is already registered")
        self._handlers[event_type] = _Entry(handler=handler, description=description)

    def disable(self, event_types: Iterable[str]) -> None:
        """Switch handlers off (their items then go to dead letter as unknown)."""
        for event_type in event_types:
            if event_type not in self._handlers:
                raise LookupError(f"no retry handler {event_type!r} to disable")
            self._disabled.add(event_type)

    def get(self, event_type: str) -> Handler:
        """The enabled handler for `event_type`; `UnknownEventType` if none."""
        entry = self._handlers.get(event_type)
        if entry is None or event_type in self._disabled:
            raise UnknownEventType(f"no enabled retry handler for event type {event_type!r}")
        return entry.handler

    def event_types(self) -> list[str]:
        """Enabled event types, sorted."""
        return sorted(set(self._handlers) - self._disabled)


async def keep_poison(item: QueueItem, ctx: AttemptContext) -> None:
    """Handler for ``actor.poison``: a tell an actor crashed on every time it was given.

    The item holds the message as text (its repr) only, so nothing can run it again: it is
    dead-lettered at once with a reason that says so, and again if requeued.
    """
    data = item.event_data if isinstance(item.event_data, dict) else {}
    args = data.get("args", data)  # an intent (version 1), or the form before intents
    args = args if isinstance(args, dict) else {}
    raise NotRequeueable(
        f"poison message for {args.get('actor', '?')} ({args.get('message_type', '?')}), kept"
        " for inspection only: it is stored as text, so it cannot be requeued or run again"
    )


def register_retry_handlers(handlers: HandlerRegistry) -> HandlerRegistry:
    """Add the retry layer's own handler, ``actor.poison``, to `handlers`."""
    handlers.add(
        POISON_EVENT_TYPE, keep_poison, description="dead-letter a poison message (not requeueable)"
    )
    return handlers
