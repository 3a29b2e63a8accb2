"""Test actors that record what happens to them, for supervision tests."""

from __future__ import annotations

from typing import Any

import attrs
import trio

from daz_actors import (
    Actor,
    ActorContext,
    ChildSpec,
    EventBus,
    Registry,
    Restart,
    Startable,
    Supervisor,
    SupervisorPolicy,
    actor_factory,
)


class Boom(Exception):
    """The error a probe raises when told to crash."""


@attrs.frozen
class Sleep:
    """Ask a probe to stay busy for `seconds` while handling this message."""

    seconds: float


@attrs.define
class Journal:
    """Ordered record of starts and stops; fails if one child ever runs twice at once."""

    events: list[tuple[str, str, int]] = attrs.field(factory=list)
    running: dict[str, int] = attrs.field(factory=dict)
    overlaps: list[str] = attrs.field(factory=list)

    def enter(self, name: str, incarnation: int) -> None:
        self.events.append(("start", name, incarnation))
        self.running[name] = self.running.get(name, 0) + 1
        if self.running[name] > 1:
            self.overlaps.append(name)

    def leave(self, name: str, incarnation: int) -> None:
        self.events.append(("stop", name, incarnation))
        self.running[name] -= 1

    def starts(self, name: str | None = None) -> list[str | tuple[str, int]]:
        """Names started, in order (or the incarnations of `name`)."""
        return [
            (n, i) if name else n
            for (e, n, i) in self.events
            if e == "start" and (name is None or n == name)
        ]

    def of(self, kind: str) -> list[str]:
        return [n for (e, n, _) in self.events if e == kind]

    def total_running(self) -> int:
        return sum(self.running.values())


class Probe(Actor):
    """Answers ``"ping"`` with (name, incarnation); ``"crash"`` raises; ``"exit"`` ends normally."""

    def __init__(self, fail_start: int = 0) -> None:
        self.fail_start = fail_start

    async def on_start(self) -> None:
        if self.ctx.incarnation <= self.fail_start:
            raise Boom(f"{self.ctx.name} failed to start")

    async def handle(self, message: Any) -> Any:
        if message == "crash":
            raise Boom(f"{self.ctx.name} crashed")
        if message == "exit":
            self.ctx.finish()
            return "bye"
        if isinstance(message, Sleep):
            await trio.sleep(message.seconds)
            return "slept"
        return (self.ctx.name, self.ctx.incarnation, message)


def probe(journal: Journal, *, fail_start: int = 0) -> Startable:
    """A Startable running `Probe`, recorded in `journal`."""
    inner = actor_factory(lambda: Probe(fail_start))

    async def start(
        ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        journal.enter(ctx.name, ctx.incarnation)
        try:
            await inner(ctx, task_status=task_status)
        finally:
            journal.leave(ctx.name, ctx.incarnation)

    return start


def spec(journal: Journal, name: str, restart: Restart = Restart.PERMANENT, **kw: Any) -> ChildSpec:
    fail_start = kw.pop("fail_start", 0)
    return ChildSpec(name=name, start=probe(journal, fail_start=fail_start), restart=restart, **kw)


def supervisor(
    name: str,
    children: list[ChildSpec],
    policy: SupervisorPolicy,
    registry: Registry | None = None,
    bus: EventBus | None = None,
) -> Supervisor:
    return Supervisor(
        name,
        children,
        policy=policy,
        registry=registry if registry is not None else Registry(),
        bus=bus if bus is not None else EventBus(),
    )


def listen(bus: Any, pattern: str) -> Any:
    """A mailbox subscribed to `pattern` on `bus` (BLOCK): every event published there
    after this call, in order, as `Published` messages (``await mailbox.get()``)."""
    from daz_actors import ActorRef, Overflow
    from daz_actors.runtime.mailbox import Mailbox

    mailbox = Mailbox("listener", 100)
    bus.subscribe(pattern, ActorRef(mailbox), overflow=Overflow.BLOCK)
    return mailbox
