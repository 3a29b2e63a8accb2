"""The CyTube layer's retried operations: say a line again (``cytube.say``) and run a
failed command again (``command.run``), as typed, versioned intents.

``cytube.say`` remembers which parts of a long line (split at 320 characters) were
already delivered, so a retry says the rest only. ``command.run`` asks the room's event
router to run the command again; the router runs it beside its logging (never in its
mailbox loop) and answers with a `PendingCommand` the handler waits on.

On a cluster node (given an `Elsewhere`, cytube/elsewhere.py) an item whose room is not in
this process is handed over to the node holding its channel instead (no attempt counted),
and so is a line the room here cannot say while another node holds the channel; in a
single process (no `Elsewhere`) a line with no room is dropped and a command with no room
dead-letters, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from daz_actors.cytube.elsewhere import Elsewhere, HandOver, HandOverResult, NotHeldHere
from daz_actors.cytube.events import SendChat, SendPrivate
from daz_actors.cytube.names import connection_name, router_name
from daz_actors.cytube.sender import CannotSpeak
from daz_actors.retry.handlers import (
    AttemptContext,
    HandlerRegistry,
    ItemReleased,
    PermanentError,
)
from daz_actors.retry.intents import IntentType
from daz_actors.runtime.errors import DazActorsError

__all__ = [
    "COMMAND_RUN",
    "SAY",
    "CommandFailed",
    "CommandOutcome",
    "CommandRun",
    "PendingCommand",
    "Say",
    "register_intent_handlers",
]

log = logging.getLogger("daz_actors.router")


# ---------------------------------------------------------------------------- cytube.say


@attrs.frozen(kw_only=True)
class Say:
    """A line to say in a channel, or to send by PM (intent ``cytube.say`` v1)."""

    channel: str
    msg: str
    to: str | None = None  # a private message to this user; None: the channel
    connection: str = ""  # the connection's registered name; "": the room's own
    delivered_parts: int = 0  # parts (of 320 characters) already delivered: not said again

    def request(self, *, event_id: str, correlation_id: str | None) -> SendChat | SendPrivate:
        """The connection's request that says what is left."""
        ids: dict[str, Any] = {"event_id": event_id, "delivered_parts": self.delivered_parts}
        if correlation_id:
            ids["correlation_id"] = correlation_id
        if self.to is None:
            return SendChat(msg=self.msg, **ids)
        return SendPrivate(to=self.to, msg=self.msg, **ids)


HOLD_SHARE = 0.5  # of the attempt's timeout, spent waiting for the bot to be able to speak


def _handed(channel: str, what: str, result: HandOverResult) -> None:
    """Raise what settles the attempt after a hand-over: `ItemReleased` when the item was
    handed over (or this worker's lease on it is gone: another worker has it), an error
    that fails it otherwise; return for `HandOver.STAY` (the caller goes on as in a single
    process)."""
    verdict = result.verdict
    if verdict is HandOver.HANDED_OVER:
        raise ItemReleased(
            f"{channel}: {what} handed over to the node holding it"
            f" ({result.holder or 'none yet'}; hand-over {result.hand_overs})"
        )
    if verdict is HandOver.LOST:
        raise ItemReleased(f"{channel}: {what} not handed over: its lease on the item is gone")
    if verdict is HandOver.UNSERVED:
        raise PermanentError(
            f"no node serves channel {channel!r}: no node holds it or lists it in its config"
        )
    if verdict is HandOver.EXHAUSTED:
        raise NotHeldHere(
            f"channel {channel!r} is held by {result.holder or 'no node'}, whose workers did"
            f" not take this item in {result.hand_overs} hand-overs"
        )


def make_say_again(elsewhere: Elsewhere | None) -> Callable[[Say, AttemptContext], Awaitable[None]]:
    """The ``cytube.say`` handler; on a cluster node (`elsewhere`), one that hands an item
    it cannot say here over to the node holding the channel."""

    async def say_again(say: Say, ctx: AttemptContext) -> None:
        """Send what is left of the line; the same event id goes with it, so a failure of
        this attempt is not queued twice. `SendFailed` (retryable) when the echo does not
        come.

        When the bot cannot speak in the room (no such room in this process, not joined,
        not logged in, within half the attempt's timeout) the line is dropped, logged, and
        the item completes: a reply is only worth saying while it is fresh, and waiting
        rooms must not burn retries into dead letters. On a cluster node the line goes to
        the node holding the channel instead, when one does.
        """
        name = say.connection or connection_name(say.channel)
        ref = ctx.registry.get(name)
        if ref is None:
            if elsewhere is not None:
                _handed(say.channel, "line", await elsewhere.hand_over(say.channel, ctx))
            log.warning("%s: not said again: no connection %r in this process", say.channel, name)
            return
        request = say.request(event_id=ctx.event_id, correlation_id=ctx.correlation_id)
        request = attrs.evolve(request, hold=ctx.attempt_timeout * HOLD_SHARE)
        try:
            await ref.ask(request, timeout=ctx.attempt_timeout)
        except CannotSpeak as exc:
            if elsewhere is not None:
                result = await elsewhere.hand_over(say.channel, ctx, only_elsewhere=True)
                if result.verdict in (HandOver.HANDED_OVER, HandOver.LOST):
                    _handed(say.channel, "line", result)  # raises ItemReleased
            log.warning("%s: not said again (%s); dropped", say.channel, exc)

    return say_again


def say_intent(elsewhere: Elsewhere | None = None) -> IntentType[Say]:
    """``cytube.say`` v1, with the handler for this process (`make_say_again`)."""
    return IntentType(
        name="cytube.say",
        version=1,
        args=Say,
        run=make_say_again(elsewhere),
        description="say (or PM) the undelivered rest of a line",
    )


SAY = say_intent()


# ---------------------------------------------------------------------------- command.run


@attrs.frozen(kw_only=True)
class CommandRun:
    """A failed command to run again (intent ``command.run`` v1); also what the retry
    handler asks the room's router (the reply: a `PendingCommand`)."""

    channel: str
    command: str
    username: str
    rank: float
    args: str
    issued_at: float  # wall-clock seconds of the original line
    reply_to: str | None = None  # the user to answer by PM (a command sent by PM)


@attrs.frozen(kw_only=True)
class CommandOutcome:
    """How a rerun of a `CommandRun` went."""

    ok: bool
    error: str = ""
    retryable: bool = False
    stale: bool = False  # older than command_retry_window: not run


class PendingCommand:
    """A rerun started beside the router's logging; `outcome` waits for its end."""

    def __init__(self) -> None:
        self._done = trio.Event()
        self._outcome = CommandOutcome(ok=False, error="not finished", retryable=True)

    def settle(self, outcome: CommandOutcome) -> None:
        """Record the outcome (the first one counts)."""
        if not self._done.is_set():
            self._outcome = outcome
            self._done.set()

    async def outcome(self) -> CommandOutcome:
        """The outcome, once the rerun has ended."""
        await self._done.wait()
        return self._outcome


class CommandFailed(DazActorsError, RuntimeError):
    """A command run again by the retry queue failed retryably (the attempt is retried)."""

    retryable = True
    code = "command_failed"


def make_run_again(
    elsewhere: Elsewhere | None,
) -> Callable[[CommandRun, AttemptContext], Awaitable[None]]:
    """The ``command.run`` handler; on a cluster node (`elsewhere`), one that hands an
    item whose room is not here over to the node holding the channel."""

    async def run_again(run: CommandRun, ctx: AttemptContext) -> None:
        """Ask the room's router to run the command again and wait for its outcome.

        A command older than the router's ``command_retry_window`` is dropped (the attempt
        succeeds; a late answer to a stale question is noise).
        """
        ref = ctx.registry.get(router_name(run.channel))
        if ref is None:
            if elsewhere is not None:
                what = f"command {run.command!r}"
                _handed(run.channel, what, await elsewhere.hand_over(run.channel, ctx))
            raise PermanentError(f"no room for channel {run.channel!r} in this process")
        pending: PendingCommand = await ref.ask(run)  # the router runs it again
        outcome = await pending.outcome()
        if outcome.stale:
            log.warning("%s: not running %s again: too old", run.channel, run.command)
        elif not outcome.ok:
            if outcome.retryable:
                raise CommandFailed(f"command {run.command!r} failed again: {outcome.error}")
            raise PermanentError(f"command {run.command!r} failed: {outcome.error}")

    return run_again


def command_run_intent(elsewhere: Elsewhere | None = None) -> IntentType[CommandRun]:
    """``command.run`` v1, with the handler for this process (`make_run_again`)."""
    return IntentType(
        name="command.run",
        version=1,
        args=CommandRun,
        run=make_run_again(elsewhere),
        description="run a failed chat command again",
    )


COMMAND_RUN = command_run_intent()


def register_intent_handlers(
    handlers: HandlerRegistry, *, elsewhere: Elsewhere | None = None
) -> None:
    """Add the handlers of ``cytube.say`` and ``command.run`` to `handlers`; on a cluster
    node, `elsewhere` hands items for channels held by other nodes over to them."""
    for intent_type in (say_intent(elsewhere), command_run_intent(elsewhere)):
        handlers.add(intent_type.name, intent_type, description=intent_type.description)
