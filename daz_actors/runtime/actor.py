"""Actors: what a supervisor runs, and the context each incarnation gets.

Anything a supervisor can run is a `Startable`: an async callable taking the
incarnation's `ActorContext` and trio's ``task_status``; it calls
``task_status.started()`` once it is ready. Two ready-made shapes:

- a class deriving from `Actor`, made into a `Startable` by `actor_factory(...)`:
  a fresh instance per incarnation, messages handled one at a time by `Actor.handle`,
  whose return value is the reply to an `ask`;
- a plain ``async def run(ctx, *, task_status)`` function, which reads `ctx.mailbox`
  itself (services like a websocket connection).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import trio

from daz_actors.runtime.errors import ActorStopped
from daz_actors.runtime.mailbox import Ask, Mailbox, crashed_error
from daz_actors.runtime.ref import ActorRef

if TYPE_CHECKING:
    from daz_actors.runtime.bus import EventBus
    from daz_actors.runtime.registry import Registry

__all__ = ["Actor", "ActorContext", "Startable", "actor_factory"]


class Startable(Protocol):
    """What a supervisor runs for one child: one call is one incarnation."""

    async def __call__(
        self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None: ...


class ActorContext:
    """What one incarnation of an actor is given: its name, mailbox, ref, registry, bus.

    The supervisor may stop an incarnation at any moment it is *idle*; code that must
    not be interrupted by an orderly stop runs inside ``with ctx.busy():`` and gets the
    child's ``shutdown_timeout`` to finish. Class actors are busy while handling a
    message and idle while waiting for one.
    """

    __slots__ = (
        "_cancel_scope",
        "_finish",
        "_killed",
        "_stop_requested",
        "bus",
        "current_message",
        "idle",
        "incarnation",
        "mailbox",
        "name",
        "ref",
        "registry",
    )

    def __init__(
        self,
        *,
        name: str,
        mailbox: Mailbox,
        ref: ActorRef,
        registry: Registry,
        bus: EventBus,
        incarnation: int,
    ) -> None:
        self.name = name  # the child's registered name
        self.mailbox = mailbox  # shared by every incarnation of this child
        self.ref = ref  # this actor's own ref
        self.registry = registry
        self.bus = bus
        self.incarnation = incarnation  # 1 for the first start, +1 per restart
        self.idle = True  # may be cancelled at once by an orderly stop
        self.current_message: Any = None  # the message being handled, for crash reports
        self._stop_requested = trio.Event()
        self._cancel_scope: trio.CancelScope | None = None
        self._finish = False
        self._killed: BaseException | None = None  # set by `Supervisor.kill_child`

    def finish(self) -> None:
        """End this incarnation normally once the current message is handled.

        A normal exit: a ``transient`` or ``temporary`` child is then not restarted.
        """
        self._finish = True

    def interrupted_error(self, what: str) -> Exception:
        """What an ask interrupted by this incarnation's end fails with: `ActorCrashed`
        when `Supervisor.kill_child` killed it, else `ActorStopped` (``what`` happened)."""
        if self._killed is not None:
            return crashed_error(self.name, self._killed)
        return ActorStopped(f"actor {self.name!r} {what}")

    @property
    def stop_requested(self) -> trio.Event:
        """Set when the supervisor asks this incarnation to stop."""
        return self._stop_requested

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Mark a section that an orderly stop waits for instead of cancelling."""
        was_idle = self.idle
        self.idle = False
        try:
            yield
        finally:
            self.idle = was_idle
            if was_idle and self._stop_requested.is_set() and self._cancel_scope is not None:
                self._cancel_scope.cancel()

    def _request_stop(self) -> None:
        self._stop_requested.set()
        if self.idle and self._cancel_scope is not None:
            self._cancel_scope.cancel()


class Actor:
    """Base class for message-handling actors: override `handle`, maybe `on_start`."""

    ctx: ActorContext

    async def on_start(self) -> None:
        """Called before the actor reports ready; `self.ctx` is set. Raise to fail the start."""

    async def handle(self, message: Any) -> Any:
        """Handle one message; the return value is the reply when it came by `ask`."""
        raise TypeError(f"{type(self).__name__} does not handle {type(message).__name__}")

    async def on_stop(self) -> None:
        """Called after an orderly stop, when no message is being handled."""


async def run_actor(instance: Actor, ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
    """Run one incarnation of a class actor: start, then handle messages until stopped."""
    instance.ctx = ctx
    ctx.idle = False
    await instance.on_start()
    ctx.idle = True
    task_status.started()
    get = ctx.mailbox.get
    handle = instance.handle
    stop = ctx._stop_requested
    try:
        await _handle_messages(ctx, get, handle, stop)
    except trio.Cancelled:
        # an orderly stop cancels an idle actor where it waits for its next message: it
        # still gets its on_stop (shielded; the supervisor's shutdown timeout cancels it)
        if stop.is_set() and ctx.idle and ctx._killed is None:
            await _on_stop_after_cancel(instance, ctx)
        raise
    await instance.on_stop()


async def _on_stop_after_cancel(instance: Actor, ctx: ActorContext) -> None:
    scope = trio.CancelScope(shield=True)
    ctx._cancel_scope = scope  # what the supervisor cancels when the stop times out
    with scope:
        await instance.on_stop()


async def _handle_messages(
    ctx: ActorContext,
    get: Callable[[], Awaitable[Any]],
    handle: Callable[[Any], Awaitable[Any]],
    stop: trio.Event,
) -> None:
    while not stop.is_set() and not ctx._finish:
        message = await get()
        scope = ctx._cancel_scope
        if scope is not None and scope.cancel_called and type(message) is not Ask:
            # trio handed the tell to this task, but a stop or kill came before the task
            # ran (it was still idle, so it was cancelled): the tell was not begun, and
            # the handler would die at its first checkpoint with it. It goes back to the
            # front of the mailbox, for the next incarnation (a crash-free re-delivery:
            # not counted by `ChildSpec.redeliver`). An ask fails below as before.
            ctx.mailbox.redeliver(message)
            await trio.lowlevel.checkpoint()  # raises the stop's (or the kill's) Cancelled
            continue
        ctx.idle = False
        ctx.current_message = message
        if type(message) is Ask:
            if not message.settled:
                try:
                    result = await handle(message.message)
                except Exception as exc:
                    message.fail(crashed_error(ctx.name, exc))
                    raise
                except BaseException:
                    message.fail(ctx.interrupted_error("was stopped mid-answer"))
                    raise
                message.reply(result)
        else:
            await handle(message)
        ctx.current_message = None
        ctx.idle = True


def actor_factory(factory: Callable[[], Actor]) -> Startable:
    """Make a `Startable` that runs a fresh `factory()` instance per incarnation."""

    async def start(
        ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await run_actor(factory(), ctx, task_status)

    start.__qualname__ = f"actor_factory({getattr(factory, '__qualname__', factory)!s})"
    return start
