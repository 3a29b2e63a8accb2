"""Ask timeouts without a cancel scope per ask.

Entering and leaving a cancel scope costs about as much as a whole bare request/reply in
trio, so the timeouts of asks that got into a mailbox at once are kept here instead: one
system task per trio run fails the asks whose deadline passed with `AskTimeout`.

Deadlines are queued per timeout value, so each queue is in deadline order (asks with the
same timeout expire in the order they were made) and both adding and expiring are O(1).
Answered asks are dropped from the front of their queue as new ones arrive, which keeps
the queues short when replies come in time.
"""

from __future__ import annotations

import collections
import math

import trio

from daz_actors.runtime.errors import AskTimeout
from daz_actors.runtime.mailbox import Ask, Mailbox

__all__ = ["watch_deadline"]

_Entry = tuple[float, Ask, Mailbox]


class _Deadlines:
    def __init__(self) -> None:
        self.queues: dict[float, collections.deque[_Entry]] = {}
        self.next_deadline = math.inf
        self.wake = trio.Event()

    def add(self, ask: Ask, timeout: float, mailbox: Mailbox) -> None:
        deadline = trio.current_time() + timeout
        queue = self.queues.get(timeout)
        if queue is None:
            queue = self.queues[timeout] = collections.deque()
        while queue and queue[0][1].settled:
            queue.popleft()
        queue.append((deadline, ask, mailbox))
        if deadline < self.next_deadline:
            self.next_deadline = deadline
            self.wake.set()

    def expire(self, now: float) -> float:
        """Fail every ask past its deadline; the next deadline."""
        earliest = math.inf
        for timeout in list(self.queues):
            queue = self.queues[timeout]
            while queue and (queue[0][1].settled or queue[0][0] <= now):
                _deadline, ask, mailbox = queue.popleft()
                if not ask.settled:
                    mailbox.asks_timed_out += 1
                    ask.fail(
                        AskTimeout(
                            f"no reply from {mailbox.name!r} within {timeout:g} s (correlation id "
                            f"{ask.correlation_id}, message {type(ask.message).__name__})"
                        )
                    )
            if queue:
                earliest = min(earliest, queue[0][0])
            else:
                del self.queues[timeout]
        return earliest

    async def run(self) -> None:
        while True:
            self.next_deadline = self.expire(trio.current_time())
            self.wake = trio.Event()
            with trio.move_on_at(self.next_deadline):
                await self.wake.wait()


_per_run: trio.lowlevel.RunVar[_Deadlines] = trio.lowlevel.RunVar("daz_actors_ask_deadlines")


def watch_deadline(ask: Ask, timeout: float, mailbox: Mailbox) -> None:
    """Fail `ask` with `AskTimeout` if it is not answered within `timeout` seconds."""
    try:
        deadlines = _per_run.get()
    except LookupError:
        deadlines = _Deadlines()
        _per_run.set(deadlines)
        trio.lowlevel.spawn_system_task(deadlines.run, name="daz_actors ask deadlines")
    deadlines.add(ask, timeout, mailbox)
