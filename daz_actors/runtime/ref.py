"""`ActorRef`: the only way to reach an actor."""

from __future__ import annotations

import math
from typing import Any

import trio

from daz_actors.runtime.ask_deadlines import watch_deadline
from daz_actors.runtime.errors import AskTimeout
from daz_actors.runtime.mailbox import Ask, Mailbox

__all__ = ["ActorRef"]

DEFAULT_ASK_TIMEOUT = 5.0


class ActorRef:
    """A handle on an actor's mailbox; it stays valid across restarts of the actor."""

    __slots__ = ("_mailbox", "name")

    def __init__(self, mailbox: Mailbox) -> None:
        self._mailbox = mailbox
        self.name = mailbox.name

    def __repr__(self) -> str:
        return f"<ActorRef {self.name!r}>"

    @property
    def mailbox_depth(self) -> int:
        """Messages waiting in the actor's mailbox."""
        return self._mailbox.depth

    @property
    def full_count(self) -> int:
        """How many `try_send` calls found the mailbox full."""
        return self._mailbox.full_count

    async def send(self, message: Any) -> None:
        """Tell: queue `message`, waiting while the mailbox is full.

        Raises `ActorStopped` if the actor was stopped for good.
        """
        await self._mailbox.put(message)

    def try_send(self, message: Any) -> bool:
        """Tell without waiting: False (and counted) when the mailbox is full."""
        return self._mailbox.try_put(message)

    async def ask(self, message: Any, *, timeout: float = DEFAULT_ASK_TIMEOUT) -> Any:
        """Request/reply: the value the actor's handler returned for `message`.

        Raises `AskTimeout` when no reply comes within `timeout` seconds (the wait for
        mailbox room counts too), `ActorCrashed` when the actor crashed on this message,
        and `ActorStopped` when it was stopped before answering.
        """
        if not timeout > 0 or math.isnan(timeout):
            raise ValueError(f"ask timeout must be > 0 seconds, got {timeout!r}")
        request = Ask(message)
        if self._mailbox.put_nowait(request):
            # fast path: no cancel scope; a per-run task enforces the deadline
            watch_deadline(request, timeout, self._mailbox)
            return await request.wait()
        with trio.move_on_after(timeout):
            await self._mailbox.put(request)
            return await request.wait()
        request.abandon()
        self._mailbox.asks_timed_out += 1
        raise AskTimeout(
            f"no reply from {self.name!r} within {timeout:g} s "
            f"(correlation id {request.correlation_id}, message {type(message).__name__})"
        )
