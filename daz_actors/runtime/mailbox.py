"""Bounded mailboxes and the one-shot reply slot behind `ask`.

A mailbox belongs to a child slot in a supervisor, not to one incarnation of the actor,
so messages queued while an actor restarts reach the next incarnation.
"""

from __future__ import annotations

import collections
import itertools
import logging
from collections.abc import Callable
from typing import Any

import outcome
import trio

from daz_actors.runtime.errors import ActorCrashed, ActorStopped
from daz_actors.runtime.poison import PoisonMemory, poison_key

__all__ = ["Ask", "Mailbox", "OneShot"]

log = logging.getLogger("daz_actors.mailbox")

_correlation_ids = itertools.count(1)


class OneShot:
    """A one-shot slot for a value or an error, awaited by one task.

    The waiting task is parked with `trio.lowlevel.wait_task_rescheduled` and woken by
    `reply`/`fail` through `trio.lowlevel.reschedule` (the cheapest request/reply in trio).
    A value that arrives after the waiter gave up is dropped quietly.
    """

    __slots__ = ("_result", "_settled", "_waiter")

    def __init__(self) -> None:
        self._waiter: trio.lowlevel.Task | None = None
        self._result: outcome.Outcome[Any] | None = None
        self._settled = False

    @property
    def settled(self) -> bool:
        """True once a value or error was given (or the waiter gave up)."""
        return self._settled

    def reply(self, value: Any) -> None:
        """Give the waiter its value."""
        self._settle(outcome.Value(value))

    def fail(self, error: BaseException) -> None:
        """Make the waiter's `wait` raise `error`."""
        self._settle(outcome.Error(error))

    def abandon(self) -> None:
        """The waiter gave up (timeout or cancel): later values are dropped."""
        self._settled = True
        self._waiter = None

    def _settle(self, result: outcome.Outcome[Any]) -> None:
        if self._settled:
            return
        self._settled = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter, result)
        else:
            self._result = result

    async def wait(self) -> Any:
        """Wait for the value (cancellable)."""
        if self._result is not None:
            return self._result.unwrap()
        if self._settled:  # abandoned before waiting: nothing will come
            raise ActorStopped("the request was abandoned")
        self._waiter = trio.lowlevel.current_task()

        def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
            self.abandon()
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)


class Ask(OneShot):
    """A request in a mailbox: the message plus a one-shot slot for the reply."""

    __slots__ = ("correlation_id", "message")

    def __init__(self, message: Any) -> None:
        super().__init__()
        self.message = message
        self.correlation_id = next(_correlation_ids)


class Mailbox:
    """A bounded queue of messages for one child slot, kept across restarts."""

    __slots__ = (
        "_again",
        "_receive",
        "_send",
        "asks_timed_out",
        "capacity",
        "closed",
        "down",
        "dropped_on_close",
        "full_count",
        "name",
        "poison",
        "poison_skipped",
    )

    def __init__(self, name: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"mailbox capacity for {name!r} must be >= 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self._send, self._receive = trio.open_memory_channel[Any](capacity)
        self._again: collections.deque[Any] = collections.deque()  # redelivered first
        self.full_count = 0  # try_send calls refused because the mailbox was full
        self.asks_timed_out = 0  # asks to this mailbox that got no reply in time
        self.dropped_on_close = 0  # tells still queued when the actor stopped for good
        self.closed = False
        self.down: Callable[[], BaseException] | None = None  # see `mark_down`
        self.poison = PoisonMemory()  # keys of tells dropped as poison (see runtime/poison.py)
        self.poison_skipped = 0  # copies of those skipped instead of handled

    @property
    def depth(self) -> int:
        """Messages waiting in the mailbox now."""
        return self._receive.statistics().current_buffer_used + len(self._again)

    async def put(self, message: Any) -> None:
        """Queue `message`, waiting while the mailbox is full (backpressure)."""
        if self._refuse_if_down(message):
            return
        try:
            await self._send.send(message)
        except trio.ClosedResourceError:
            raise ActorStopped(f"actor {self.name!r} is stopped") from None

    def put_nowait(self, message: Any) -> bool:
        """Queue `message` if there is room now (not counted as full when there is none)."""
        if self._refuse_if_down(message):
            return True
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            return False
        except trio.ClosedResourceError:
            raise ActorStopped(f"actor {self.name!r} is stopped") from None
        return True

    def try_put(self, message: Any) -> bool:
        """Queue `message` if there is room now; count and return False if full."""
        if self._refuse_if_down(message):
            return True
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            self.full_count += 1
            return False
        except trio.ClosedResourceError:
            raise ActorStopped(f"actor {self.name!r} is stopped") from None
        return True

    async def get(self) -> Any:
        """Take the next message (used by the actor's incarnation); a copy of a tell that
        was dropped as poison is skipped."""
        while True:
            message = self._again.popleft() if self._again else await self._receive.receive()
            if not self.poison or type(message) is Ask or poison_key(message) not in self.poison:
                return message
            self.poison_skipped += 1
            log.warning(
                "%s: skipping a %s: a copy of a message dropped as poison",
                self.name, type(message).__name__,
            )  # fmt: skip

    def redeliver(self, message: Any) -> None:
        """Put `message` back in front: the next `get` returns it (see `ChildSpec.redeliver`)."""
        self._again.appendleft(message)

    def mark_down(self, error: Callable[[], BaseException]) -> int:
        """Fail every ask waiting here, and each new one at once, until `mark_up`.

        For a child whose next incarnation will be late (its supervisor first stops the
        siblings, which may be the very askers; Erlang's calls to a dead process fail at
        once too). Tells stay, in order, blocked senders' ones included; the number of
        asks failed now.
        """
        self.down = error
        failed = 0
        while True:
            try:
                item = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if type(item) is Ask:
                if not item.settled:
                    item.fail(error())
                    failed += 1
            else:
                self._again.append(item)  # after any redelivered one, before newer tells
        return failed

    def mark_up(self) -> None:
        """A new incarnation runs: asks queue up again."""
        self.down = None

    def _refuse_if_down(self, message: Any) -> bool:
        if self.down is not None and type(message) is Ask:
            message.fail(self.down())
            return True
        return False

    def close(self) -> None:
        """Stop taking messages for good: queued asks fail, queued tells are counted."""
        if self.closed:
            return
        self.closed = True
        self._send.close()
        self.dropped_on_close += len(self._again)
        self._again.clear()
        while True:
            try:
                item = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if isinstance(item, Ask):
                item.fail(ActorStopped(f"actor {self.name!r} stopped before answering"))
            else:
                self.dropped_on_close += 1
        if self.dropped_on_close:
            log.warning(
                "actor %r stopped for good with %d unhandled messages",
                self.name,
                self.dropped_on_close,
            )


def crashed_error(name: str, exc: BaseException) -> ActorCrashed:
    """The error an asker gets when the actor crashed on its message."""
    err = ActorCrashed(f"actor {name!r} crashed handling the message: {exc!r}")
    err.__cause__ = exc
    return err
