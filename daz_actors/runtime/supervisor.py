"""Supervisors: run children, restart them by OTP rules with backoff, stop them in order.

A `Supervisor` object outlives its incarnations: the child slots (and so the mailboxes and
refs) belong to it, so a ref stays valid when its actor restarts, and also when a whole
subtree is restarted by the supervisor above it.

One task per supervisor incarnation makes every decision (`_loop`); child incarnations run
in their own tasks and report their exits on a channel. Backoff is a due time on the slot,
not a sleeping task, so shutdown never waits one out. Once a stop is asked for, nothing is
started or restarted again: pending backoffs are dropped, and a child still starting (a
subtree that is not ready yet) is asked to stop too, then cancelled after its
``shutdown_timeout``.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import trio

from daz_actors.runtime.actor import ActorContext, Startable
from daz_actors.runtime.bus import EventBus
from daz_actors.runtime.errors import (
    ActorStopped,
    Killed,
    NameTaken,
    NoSuchActor,
    StartFailed,
    SupervisorGaveUp,
)
from daz_actors.runtime.events import ActorFailed, FailureEvent, Intent
from daz_actors.runtime.mailbox import Ask, Mailbox, OneShot, crashed_error
from daz_actors.runtime.poison import poison_key
from daz_actors.runtime.ref import ActorRef
from daz_actors.runtime.registry import Registry
from daz_actors.runtime.supervision_policy import (
    ExitKind,
    Restart,
    RestartIntensity,
    SupervisorPolicy,
    affected_children,
    needs_restart,
)

__all__ = ["ChildInfo", "ChildSpec", "ChildState", "Supervisor"]

log = logging.getLogger("daz_actors.supervisor")

CRASH_TOPIC = "actor.crashed"
POISON_TOPIC = "actor.poison.failed"  # a message dropped after `ChildSpec.redeliver` tries
POISON_EVENT_TYPE = "actor.poison"  # no retry handler: the queue dead-letters it
POISON_REPR_LIMIT = 4000  # characters of the message's repr kept


class ChildState(enum.Enum):
    """Where a child is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    BACKING_OFF = "backing_off"  # waiting out its backoff before a restart
    STOPPING = "stopping"
    STOPPED = "stopped"


def _valid_name(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"child name must be a non-empty string without spaces, got {value!r}")


def _timeout(_inst: object, _attr: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (isinstance(value, int | float) and value >= 0):
        raise ValueError(f"shutdown_timeout must be None or a number >= 0, got {value!r}")


def _capacity(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"mailbox_size must be an integer >= 1, got {value!r}")


def _redeliveries(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"redeliver must be an integer >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class ChildSpec:
    """How a supervisor runs one child."""

    name: str = attrs.field(validator=_valid_name)  # unique among its siblings
    start: Startable  # one call runs one incarnation (a Supervisor is a Startable too)
    restart: Restart = Restart.PERMANENT  # when it is restarted
    shutdown_timeout: float | None = attrs.field(default=5.0, validator=_timeout)
    # seconds an orderly stop waits before cancelling; None waits as long as it takes
    mailbox_size: int = attrs.field(default=100, validator=_capacity)  # mailbox capacity
    # times a tell the child was handling when it crashed is given to its next incarnation
    # again (0: never, as in Erlang); then it is dropped as poison. For idempotent handlers.
    redeliver: int = attrs.field(default=0, validator=_redeliveries)


@attrs.frozen(kw_only=True)
class ChildInfo:
    """A snapshot of one child, from `Supervisor.which_children()`."""

    name: str  # the child's name within its supervisor
    registered_as: str  # its name in the registry
    state: ChildState
    restart: Restart
    restarts: int  # times it was restarted since the supervisor object was made
    incarnation: int  # 0 before the first start
    last_error: str | None  # repr of the last exception, if it ever crashed
    backoff_until: float | None  # trio clock time the backoff ends, while backing off
    mailbox_depth: int  # messages waiting
    children: tuple[ChildInfo, ...] | None  # a supervisor child's own children
    mailbox_full: int = 0  # try_send calls refused because the mailbox was full
    mailbox_capacity: int = 0  # the mailbox's size
    mailbox_depth_max: int = 0  # the most messages ever waiting at once
    mailbox_blocked_sends: int = 0  # sends that waited for room in the full mailbox
    mailbox_blocked_seconds: float = 0.0  # the total of those waits
    mailbox_senders_waiting: int = 0  # senders blocked on the full mailbox now
    # restarts by reason: the exception's type name for a crash or a failed start,
    # "exit" (a permanent child returned), "sibling" (restarted by the strategy with
    # another child), "request" (`restart_child`); sorted by reason
    restarts_by_reason: tuple[tuple[str, int], ...] = ()
    backoff_waits: int = 0  # restarts that waited out a backoff delay > 0
    backoff_seconds: float = 0.0  # the total of those delays
    asks_timed_out: int = 0  # asks to this child that got no reply in time
    redelivered: int = 0  # tells given again to a new incarnation after a crash on them
    poison_dropped: int = 0  # tells dropped after `ChildSpec.redeliver` crashes on them
    poison_skipped: int = 0  # later copies of those skipped unhandled (runtime/poison.py)


class _ReadyRelay:
    """Passed to a child as its ``task_status``; wakes the supervisor when it is ready."""

    __slots__ = ("_ready", "done")

    def __init__(self, ready: OneShot) -> None:
        self._ready = ready
        self.done = False

    def started(self, value: object = None) -> None:
        if self.done:
            raise RuntimeError("task_status.started() called twice")
        self.done = True
        self._ready.reply(None)


@attrs.frozen
class _StartError:
    error: BaseException


@attrs.frozen
class _Exit:
    slot: _Slot
    incarnation: int
    error: BaseException | None
    start_failed: bool = False  # the incarnation never became ready


class _StopRequested:
    pass


@attrs.define(eq=False)
class _Slot:
    spec: ChildSpec
    mailbox: Mailbox
    ref: ActorRef
    registered_as: str
    state: ChildState = ChildState.STOPPED
    incarnation: int = 0
    restarts: int = 0
    attempt: int = 0  # consecutive restarts, for the backoff
    last_delay: float | None = None
    last_error: BaseException | None = None
    due: float | None = None  # when to (re)start, while BACKING_OFF
    reasons: dict[str, int] = attrs.field(factory=dict)  # restarts by reason
    redelivering: Any = None  # the tell given again last, while it is being retried
    deliveries: int = 0  # how many times it crashed the child
    redelivered: int = 0
    poison_dropped: int = 0
    backoff_waits: int = 0
    backoff_seconds: float = 0.0
    started_at: float = 0.0
    ctx: ActorContext | None = None
    done: trio.Event = attrs.field(factory=trio.Event)


class Supervisor:
    """Runs children by an OTP strategy, with restart intensity and backoff.

    Use it as a child of another supervisor (it is a `Startable`), or as the root with
    `daz_actors.run_tree`. Children can be added and removed while it runs.
    """

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec] = (),
        *,
        policy: SupervisorPolicy | None = None,
        registry: Registry,
        bus: EventBus,
        prefix: str = "",
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.policy = policy if policy is not None else SupervisorPolicy()
        self.registry = registry
        self.bus = bus
        self.prefix = prefix  # prepended to children's registered names
        self._rng = rng if rng is not None else random.Random()
        self._slots: list[_Slot] = []
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._exits: trio.MemorySendChannel[_Exit | _StopRequested] | None = None
        self._intensity = RestartIntensity(self.policy.max_restarts, self.policy.within_seconds)
        self._stopping = False  # this incarnation was asked to stop: start nothing more
        for spec in children:
            self._add_slot(spec)

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r} {self.policy.strategy.value}>"

    # ----------------------------------------------------------------- public API

    @property
    def running(self) -> bool:
        """True while an incarnation of this supervisor runs."""
        return self._nursery is not None

    def ref(self, name: str) -> ActorRef:
        """The ref of child `name` (valid whether or not the child runs now)."""
        return self._slot(name).ref

    def which_children(self) -> list[ChildInfo]:
        """A snapshot of every child, in start order."""
        return [self._info(slot) for slot in self._slots]

    async def start_child(self, spec: ChildSpec) -> ActorRef:
        """Add a child at run time and start it; raises `StartFailed` if it fails to start."""
        async with self._lock:
            self._require_running()
            slot = self._add_slot(spec)
            try:
                error = await self._start(slot)
            except BaseException:
                self._remove_slot(slot)
                raise
            if error is not None:
                self._remove_slot(slot)
                raise StartFailed(f"child {spec.name!r} failed to start: {error!r}") from error
            return slot.ref

    async def terminate_child(self, name: str) -> None:
        """Stop child `name` in order and remove it; its ref then raises `ActorStopped`."""
        async with self._lock:
            slot = self._slot(name)
            await self._stop(slot)
            self._remove_slot(slot)

    async def restart_child(self, name: str) -> None:
        """Stop child `name` and start it again at once (a recovery action)."""
        async with self._lock:
            self._require_running()
            slot = self._slot(name)
            await self._stop(slot)
            slot.restarts += 1
            _count(slot.reasons, "request")
            log.warning("%s: restarting %r on request", self.name, slot.registered_as)
            error = await self._start(slot)
            if error is not None and self._exits is not None:
                # the supervisor's own task applies the policy (and may give up)
                self._exits.send_nowait(_Exit(slot, slot.incarnation, error, start_failed=True))

    def kill_child(self, name: str, reason: str = "killed") -> None:
        """Crash child `name` now, as if it had raised ``Killed(reason)``.

        Erlang's ``exit(Pid, Reason)``: the child's task is cancelled at once (no orderly
        stop) and its supervisor applies the policy to the crash (restart type, strategy,
        backoff, intensity). For fault injection and for recovering a wedged actor.
        Raises `ActorStopped` when the child is not running; a second kill before the
        first one took effect does nothing.
        """
        slot = self._slot(name)
        ctx = slot.ctx
        if ctx is not None and ctx._killed is not None:
            return
        if slot.state is not ChildState.RUNNING or ctx is None or ctx._cancel_scope is None:
            raise ActorStopped(f"{slot.registered_as!r} is not running ({slot.state.value})")
        log.warning("%s: killing %r: %s", self.name, slot.registered_as, reason)
        ctx._killed = Killed(f"{slot.registered_as!r} killed: {reason}")
        ctx._cancel_scope.cancel()

    def startables(self) -> Iterator[Startable]:
        """Every child's long-lived Startable, depth first through child supervisors."""
        for slot in self._slots:
            yield slot.spec.start
            if isinstance(slot.spec.start, Supervisor):
                yield from slot.spec.start.startables()

    def mailboxes(self) -> Iterator[Mailbox]:
        """Every child's mailbox, depth first through child supervisors."""
        for slot in self._slots:
            yield slot.mailbox
            if isinstance(slot.spec.start, Supervisor):
                yield from slot.spec.start.mailboxes()

    def owner_of(self, name: str) -> Supervisor | None:
        """The supervisor (this one or one below it) that has a child called `name`."""
        if any(slot.spec.name == name for slot in self._slots):
            return self
        for slot in self._slots:
            if isinstance(slot.spec.start, Supervisor):
                found = slot.spec.start.owner_of(name)
                if found is not None:
                    return found
        return None

    def close(self) -> None:
        """Stop taking messages for every child, recursively, and free their names.

        For a supervisor that will not run again (removed, or the tree is done).
        """
        for slot in self._slots:
            if isinstance(slot.spec.start, Supervisor):
                slot.spec.start.close()
            slot.mailbox.close()
            self.registry.unregister(slot.registered_as)

    # ----------------------------------------------------------------- running

    async def __call__(
        self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run one incarnation: start the children in order, report ready, supervise."""
        ctx.idle = False  # an orderly stop must reach `_loop`, not cancel it
        self._stopping = False
        self._intensity = RestartIntensity(self.policy.max_restarts, self.policy.within_seconds)
        send, receive = trio.open_memory_channel[_Exit | _StopRequested](math.inf)
        self._exits = send
        failure: Exception | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._watch_stop, ctx, send)
                try:
                    await self._loop(receive, task_status)
                except Exception as exc:  # giving up, or a bug: stop the children first
                    failure = exc
                await self._stop_all()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self._exits = None
        if failure is not None:
            raise failure

    async def _watch_stop(
        self, ctx: ActorContext, send: trio.MemorySendChannel[_Exit | _StopRequested]
    ) -> None:
        await ctx.stop_requested.wait()
        self._stopping = True
        send.send_nowait(_StopRequested())
        # `_loop` may be waiting for a child to report ready (a subtree held back by a
        # child failing to start): that start is stopped too, or shutdown would wait on it
        assert self._nursery is not None
        for slot in self._slots:
            if slot.state is ChildState.STARTING:
                self._nursery.start_soon(self._stop_starting, slot)

    async def _stop_starting(self, slot: _Slot) -> None:
        """Ask a child that has not reported ready yet to stop; cancel it after its
        shutdown timeout."""
        ctx = slot.ctx
        if ctx is None:
            return
        ctx._request_stop()
        timeout = slot.spec.shutdown_timeout
        with trio.move_on_after(math.inf if timeout is None else timeout):
            await slot.done.wait()
        if not slot.done.is_set() and ctx._cancel_scope is not None:
            log.warning(
                "%s: %r did not stop starting within %s s; cancelling it",
                self.name,
                slot.registered_as,
                timeout,
            )
            ctx._cancel_scope.cancel()

    async def _loop(
        self,
        receive: trio.MemoryReceiveChannel[_Exit | _StopRequested],
        task_status: trio.TaskStatus[None],
    ) -> None:
        now = trio.current_time()
        for slot in self._slots:
            slot.state, slot.due = ChildState.BACKING_OFF, now
        ready = False
        while True:
            await self._acquire()
            try:
                due = await self._start_due(in_order=not ready)
                if self._stopping:
                    return
                if not ready and all(s.state is not ChildState.BACKING_OFF for s in self._slots):
                    ready = True
                    task_status.started()
            finally:
                self._lock.release()
            event: _Exit | _StopRequested | None = None
            if due == math.inf:  # no timeout scope when nothing is due: restarts stay cheap
                event = await receive.receive()
            else:
                with trio.move_on_at(due):
                    event = await receive.receive()
                if event is None:
                    continue
            if isinstance(event, _StopRequested):
                return
            await self._acquire()
            try:
                slot = event.slot
                expected = ChildState.STOPPED if event.start_failed else ChildState.RUNNING
                if (
                    slot in self._slots
                    and event.incarnation == slot.incarnation
                    and slot.state is expected
                ):
                    await self._handle_exit(slot, event.error, start_failed=event.start_failed)
            finally:
                self._lock.release()

    async def _acquire(self) -> None:
        """Take the lock; without a scheduling pass when it is free (the usual case)."""
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def _start_due(self, *, in_order: bool) -> float:
        """Start every slot whose backoff is over, in start order; the next due time.

        Before the supervisor is ready, a slot waits for every earlier one to run. After a
        failed start the pass begins again, since the strategy may have rescheduled others.
        """
        again = True
        next_due = math.inf
        while again:
            again = False
            next_due = math.inf
            for slot in list(self._slots):
                if self._stopping:
                    return math.inf
                if slot.state is not ChildState.BACKING_OFF or slot not in self._slots:
                    continue
                assert slot.due is not None
                if slot.due > trio.current_time():
                    next_due = min(next_due, slot.due)
                    if in_order:
                        return next_due
                    continue
                error = await self._start(slot)
                if error is not None and self._stopping:
                    log.info("%s: %r stopped before it was ready", self.name, slot.registered_as)
                    return math.inf
                if error is not None:
                    await self._handle_exit(slot, error, start_failed=True)
                    again = True
                    break
        return next_due

    async def _start(self, slot: _Slot) -> BaseException | None:
        """Start one incarnation; the error if it failed before reporting ready."""
        assert self._nursery is not None
        slot.incarnation += 1
        slot.state, slot.due = ChildState.STARTING, None
        slot.mailbox.mark_up()
        slot.done = trio.Event()
        ctx = ActorContext(
            name=slot.registered_as,
            mailbox=slot.mailbox,
            ref=slot.ref,
            registry=self.registry,
            bus=self.bus,
            incarnation=slot.incarnation,
        )
        slot.ctx = ctx
        # start_soon and a one-shot slot instead of nursery.start: no temporary nursery
        ready = OneShot()
        self._nursery.start_soon(self._run_child, slot, ctx, ready)
        try:
            outcome = await ready.wait()
        except BaseException:
            # the starter was cancelled: never leave a half-started child behind
            if ctx._cancel_scope is not None:
                ctx._cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await slot.done.wait()
            slot.state = ChildState.STOPPED
            raise
        if isinstance(outcome, _StartError):
            slot.state = ChildState.STOPPED
            return outcome.error
        slot.state = ChildState.RUNNING
        slot.started_at = trio.current_time()
        return None

    async def _run_child(self, slot: _Slot, ctx: ActorContext, ready: OneShot) -> None:
        relay = _ReadyRelay(ready)
        error: BaseException | None = None
        scope = trio.CancelScope()
        ctx._cancel_scope = scope
        try:
            try:
                with scope:
                    await slot.spec.start(ctx, task_status=relay)
            except Exception as exc:  # outside the scope: also a group raised while cancelled
                error = exc
            if ctx._killed is not None and error is None:
                error = ctx._killed
            if not relay.done:
                if error is None:
                    error = StartFailed(f"{slot.registered_as!r} exited before it was ready")
                ready.reply(_StartError(error))
                return
            if self._exits is not None and not ctx.stop_requested.is_set():
                self._exits.send_nowait(_Exit(slot, ctx.incarnation, error))
            elif error is not None:
                log.warning("%s: %r failed while stopping: %r", self.name, ctx.name, error)
        finally:
            if not ready.settled:  # interrupted before ready: never leave the starter waiting
                ready.reply(_StartError(StartFailed(f"{slot.registered_as!r} was interrupted")))
            slot.done.set()

    async def _handle_exit(
        self, slot: _Slot, error: BaseException | None, *, start_failed: bool = False
    ) -> None:
        """Apply the restart type, intensity and strategy to one child's exit."""
        now = trio.current_time()
        kind = ExitKind.NORMAL if error is None else ExitKind.CRASH
        slot.state = ChildState.STOPPED
        if error is not None:
            slot.last_error = error
            self._report_crash(slot, error)
            if slot.spec.redeliver and not start_failed:
                self._redeliver(slot, "crashed on")
        if not needs_restart(slot.spec.restart, kind) or self._stopping:
            if slot.spec.restart is Restart.TEMPORARY:
                self._remove_slot(slot)
            return
        if not self._intensity.record(now):
            log.error(
                "%s: giving up, %r exceeded %d restarts within %g s",
                self.name,
                slot.registered_as,
                self.policy.max_restarts,
                self.policy.within_seconds,
            )
            raise SupervisorGaveUp(
                self.name, slot.registered_as, self.policy.max_restarts, self.policy.within_seconds
            ) from error
        if not start_failed and now - slot.started_at >= self.policy.reset_after:
            slot.attempt = 0
        delay = self.policy.backoff.delay(slot.attempt, rng=self._rng, previous=slot.last_delay)
        slot.attempt += 1
        slot.last_delay = delay
        if delay > 0:
            slot.backoff_waits += 1
            slot.backoff_seconds += delay
        reason = "exit" if error is None else type(error).__name__
        index = self._slots.index(slot)
        group = [
            self._slots[i] for i in affected_children(self.policy.strategy, index, len(self._slots))
        ]
        if len(group) > 1:
            # the restart waits until the others stop, and they may be waiting on this
            # child's answers: its asks fail at once until it runs again (Erlang's calls
            # to a dead process fail at once too); tells wait for the restart
            cause = error if error is not None else RuntimeError("exited")
            failed = slot.mailbox.mark_down(lambda: crashed_error(slot.registered_as, cause))
            if failed:
                log.info("%s: failed %d asks waiting for %r", self.name, failed, slot.registered_as)
        for other in reversed(group):
            if other is not slot:
                await self._stop(other)
        for member in group:
            if member is not slot and member.spec.restart is Restart.TEMPORARY:
                self._remove_slot(member)
                continue
            member.restarts += 1
            _count(member.reasons, reason if member is slot else "sibling")
            member.state, member.due = ChildState.BACKING_OFF, now + delay
        if delay > 0:
            log.info("%s: restarting %r in %.3f s", self.name, slot.registered_as, delay)

    def _redeliver(self, slot: _Slot, what: str) -> None:
        """Give the tell the child was handling (it crashed, or a stop cancelled it) to its
        next incarnation, or drop it as poison after `ChildSpec.redeliver` times."""
        message = slot.ctx.current_message if slot.ctx is not None else None
        if message is None or type(message) is Ask:  # an ask's asker got the error already
            return
        crashes = slot.deliveries + 1 if slot.redelivering is message else 1
        if crashes > slot.spec.redeliver:
            slot.poison_dropped += 1
            slot.redelivering, slot.deliveries = None, 0
            key = poison_key(message)
            if key is not None:  # a copy (a replay) is skipped, not crashed on again
                slot.mailbox.poison.remember(key)
            log.error(
                "%s: dropping %s: %r %s it %d times (poison): %r",
                self.name, type(message).__name__, slot.registered_as, what, crashes, message,
            )  # fmt: skip
            self._publish_poison(slot, message, f"{slot.registered_as} {what} it {crashes} times")
            return
        slot.redelivering, slot.deliveries = message, crashes
        slot.redelivered += 1
        slot.mailbox.redeliver(message)
        log.warning(
            "%s: %s given again to %r's next incarnation (it %s it: %d of at most %d times)",
            self.name, type(message).__name__, slot.registered_as, what, crashes,
            slot.spec.redeliver,
        )  # fmt: skip

    def _publish_poison(self, slot: _Slot, message: Any, error: str) -> None:
        """Keep a dropped message durably: a failure event no handler redoes, which the
        retry queue (if one runs) therefore stores as a dead letter with the message."""
        if self._nursery is None:
            return
        event = FailureEvent(
            topic=POISON_TOPIC,
            source=slot.registered_as,
            operation="default",
            event_type=POISON_EVENT_TYPE,
            error=error,
            error_code="poison",
            retryable=True,  # queued; with no handler its first attempt dead-letters it
            intent=Intent(
                name=POISON_EVENT_TYPE,
                version=1,
                args={
                    "actor": slot.registered_as,
                    "message_type": type(message).__name__,
                    "message": repr(message)[:POISON_REPR_LIMIT],
                },
            ),
        )
        self._nursery.start_soon(self.bus.publish, POISON_TOPIC, event)

    def _report_crash(self, slot: _Slot, error: BaseException) -> None:
        ctx = slot.ctx
        message = ctx.current_message if ctx is not None else None
        if isinstance(message, Ask):
            message = message.message
        log.warning(
            "%s: %r crashed (incarnation %d) handling %s: %r",
            self.name,
            slot.registered_as,
            slot.incarnation,
            type(message).__name__ if message is not None else "no message",
            error,
            exc_info=error if log.isEnabledFor(logging.DEBUG) else None,
        )
        if self._nursery is not None and self.bus.subscriptions():
            event = ActorFailed(
                actor=slot.registered_as,
                supervisor=self.name,
                error=repr(error),
                error_type=type(error).__name__,
                message_type=type(message).__name__ if message is not None else None,
                incarnation=slot.incarnation,
            )
            self._nursery.start_soon(self.bus.publish, CRASH_TOPIC, event)

    async def _stop(self, slot: _Slot) -> None:
        """Orderly stop of one child: ask, wait its shutdown timeout, then cancel."""
        if slot.state is not ChildState.RUNNING:
            slot.state, slot.due = ChildState.STOPPED, None
            return
        ctx = slot.ctx
        assert ctx is not None
        slot.state = ChildState.STOPPING
        ctx._request_stop()
        timeout = slot.spec.shutdown_timeout
        with trio.move_on_after(math.inf if timeout is None else timeout):
            await slot.done.wait()
        if not slot.done.is_set():
            log.warning(
                "%s: %r did not stop within %s s; cancelling it",
                self.name,
                slot.registered_as,
                timeout,
            )
            if ctx._cancel_scope is not None:
                ctx._cancel_scope.cancel()
            await slot.done.wait()
            if slot.spec.redeliver:
                self._redeliver(slot, "was cancelled by a stop on")
        slot.state = ChildState.STOPPED

    async def _stop_all(self) -> None:
        await self._acquire()
        try:
            for slot in reversed(list(self._slots)):
                await self._stop(slot)
        finally:
            self._lock.release()

    # ----------------------------------------------------------------- slots

    def _add_slot(self, spec: ChildSpec) -> _Slot:
        if any(s.spec.name == spec.name for s in self._slots):
            raise NameTaken(f"supervisor {self.name!r} already has a child {spec.name!r}")
        registered_as = self.prefix + spec.name
        mailbox = Mailbox(registered_as, spec.mailbox_size)
        ref = ActorRef(mailbox)
        self.registry.register(registered_as, ref)
        slot = _Slot(spec=spec, mailbox=mailbox, ref=ref, registered_as=registered_as)
        self._slots.append(slot)
        return slot

    def _remove_slot(self, slot: _Slot) -> None:
        if slot in self._slots:
            self._slots.remove(slot)
        self.registry.unregister(slot.registered_as)
        if isinstance(slot.spec.start, Supervisor):
            slot.spec.start.close()
        slot.mailbox.close()

    def _slot(self, name: str) -> _Slot:
        for slot in self._slots:
            if slot.spec.name == name:
                return slot
        raise NoSuchActor(f"supervisor {self.name!r} has no child {name!r}")

    def _require_running(self) -> None:
        if self._nursery is None:
            raise ActorStopped(f"supervisor {self.name!r} is not running")

    def _info(self, slot: _Slot) -> ChildInfo:
        sub = slot.spec.start
        return ChildInfo(
            name=slot.spec.name,
            registered_as=slot.registered_as,
            state=slot.state,
            restart=slot.spec.restart,
            restarts=slot.restarts,
            incarnation=slot.incarnation,
            last_error=None if slot.last_error is None else repr(slot.last_error),
            backoff_until=slot.due if slot.state is ChildState.BACKING_OFF else None,
            mailbox_depth=slot.mailbox.depth,
            mailbox_full=slot.mailbox.full_count,
            mailbox_capacity=slot.mailbox.capacity,
            mailbox_depth_max=slot.mailbox.depth_max,
            mailbox_blocked_sends=slot.mailbox.blocked_sends,
            mailbox_blocked_seconds=slot.mailbox.blocked_seconds,
            mailbox_senders_waiting=slot.mailbox.senders_waiting,
            restarts_by_reason=tuple(sorted(slot.reasons.items())),
            backoff_waits=slot.backoff_waits,
            backoff_seconds=slot.backoff_seconds,
            asks_timed_out=slot.mailbox.asks_timed_out,
            redelivered=slot.redelivered,
            poison_dropped=slot.poison_dropped,
            poison_skipped=slot.mailbox.poison_skipped,
            children=tuple(sub.which_children()) if isinstance(sub, Supervisor) else None,
        )


def _count(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1
