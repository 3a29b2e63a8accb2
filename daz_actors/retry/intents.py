"""Typed, versioned intents: what a queue item means, and the handler that carries it out.

A queue item made from an `Intent` has the intent's name as its event type and
``{"version": N, "args": {...}}`` as its event data. The `IntentType` registered for that
name decodes the arguments into its attrs class (strictly: a missing or mistyped field is a
permanent error naming it), upgrades an older version step by step with the upgraders it
ships, and runs its handler. No code or SQL is ever stored: the handler rebuilds the action
from the code of the process that runs it (procrastinate's task name + JSON arguments).

An unknown name or version is a permanent error that names both, so the item goes to dead
letter at once with the reason an operator needs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import attrs

from daz_actors.retry.handlers import AttemptContext, PermanentError
from daz_actors.runtime.config_reader import read_attrs
from daz_actors.runtime.errors import ConfigError
from daz_actors.runtime.events import Intent
from daz_actors.storage.queue_types import QueueItem

__all__ = ["IntentType", "intent_data", "intent_of"]

A = TypeVar("A")

# one step of an upgrade: the arguments of version v, as JSON, to those of version v + 1
Upgrader = Callable[[dict[str, Any]], dict[str, Any]]


def intent_data(intent: Intent) -> dict[str, Any]:
    """The queue item's ``event_data`` for `intent`."""
    return {"version": intent.version, "args": dict(intent.args)}


def intent_of(item: QueueItem) -> Intent:
    """The intent a queue item holds; `PermanentError` naming what is missing otherwise."""
    data = item.event_data
    version = data.get("version") if isinstance(data, dict) else None
    args = data.get("args") if isinstance(data, dict) else None
    if isinstance(version, bool) or not isinstance(version, int):
        raise PermanentError(
            f"item {item.event_type!r} has no intent version in its event data "
            f'(expected {{"version": N, "args": {{...}}}}, got {_preview(data)})'
        )
    if not isinstance(args, dict):
        raise PermanentError(
            f"intent {item.event_type!r} version {version}: its 'args' must be an object, "
            f"got {_preview(args)}"
        )
    return Intent(name=item.event_type, version=version, args=args)


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


@attrs.frozen(kw_only=True)
class IntentType(Generic[A]):
    """One intent, at its current version: the arguments' attrs class and the handler.

    Register it with ``handlers.add(t.name, t)`` (it is a retry `Handler`); make an intent
    to queue with ``t.intent(args)``.
    """

    name: str  # the queue item's event type
    version: int  # current version of the arguments' shape (from 1)
    args: type[A]  # an attrs class whose fields are JSON values
    run: Callable[[A, AttemptContext], Awaitable[None]]  # carries it out; idempotent
    # version v -> the function turning v's arguments into v + 1's, for every v < version
    upgraders: Mapping[int, Upgrader] = attrs.field(factory=dict)
    description: str = ""

    def __attrs_post_init__(self) -> None:
        if self.version < 1:
            raise ValueError(f"intent {self.name!r}: version must be >= 1, got {self.version}")
        if not attrs.has(self.args):
            raise TypeError(f"intent {self.name!r}: args must be an attrs class")
        missing = [v for v in range(1, self.version) if v not in self.upgraders]
        if missing:
            raise ValueError(
                f"intent {self.name!r} version {self.version} has no upgrader from "
                f"version(s) {missing}: a release that bumps a version ships its upgrader"
            )

    def intent(self, args: A) -> Intent:
        """The intent to queue for `args` (at the current version)."""
        if not isinstance(args, self.args):
            raise TypeError(f"intent {self.name!r} takes {self.args.__name__}, got {args!r}")
        return Intent(name=self.name, version=self.version, args=attrs.asdict(args))  # type: ignore[arg-type]

    def decode(self, intent: Intent) -> A:
        """The arguments of `intent`, upgraded to the current version."""
        if intent.name != self.name:
            raise PermanentError(f"intent {intent.name!r} given to the handler of {self.name!r}")
        version, args = intent.version, dict(intent.args)
        if version > self.version or version < 1:
            raise PermanentError(
                f"unknown intent {self.name!r} version {version}: this process knows "
                f"versions 1 to {self.version}"
            )
        while version < self.version:
            try:
                args = self.upgraders[version](args)
            except Exception as exc:
                raise PermanentError(
                    f"intent {self.name!r}: upgrading version {version} failed: {exc!r}"
                ) from exc
            version += 1
        try:
            return read_attrs(args, self.args, f"{self.name} v{self.version}", bounded=False)
        except ConfigError as exc:
            raise PermanentError(f"intent {self.name!r} version {intent.version}: {exc}") from None

    async def __call__(self, item: QueueItem, ctx: AttemptContext) -> None:
        await self.run(self.decode(intent_of(item)), ctx)
