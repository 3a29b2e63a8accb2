"""The event router: one per room; logs what happens in the channel and answers commands.

The connection actor tells it every typed event (`ChatMessage`, `PrivateMessage`,
`UserJoined`, ...). For each chat line, private message, join, leave and media change the
router builds a row (in `chat_log`) and hands it to the room's log buffer, without waiting
on the database: a writer task beside it stores the rows that arrived together in one
transaction, one multi-row ``INSERT ... ON CONFLICT (event_id) ...`` per table, in arrival
order (see `log_writer`). The event id is a hash of the event's own fields, so the same
line logged twice is stored once. If a write fails retryably, the writer publishes
``chat.log.failed`` carrying each row as an intent (``chat.log``, ``pm.log`` or
``channel_event.log``); the retry queue keeps it and the intent's handler writes the row
again later. Neither the router nor its writer crashes on a failed write, and the rows of
a batch being written when the router crashes are written by its next incarnation.

A line is stored twice over: ``message`` is the text as a reader sees it (entities
unescaped, tags reduced to their text), ``raw_message`` what the server sent. A line's id
is channel + user + server time + raw text (+ its occurrence number when the same user said
the same text in the same millisecond again), so a history replay of lines already stored
adds nothing, and a replayed line never flags a live one as history.

A chat line starting with the prefix (not a history line, not the bot's own) goes to the
command registry, parsed from the reader's text. Commands are not run while the bot cannot
speak in the room (its connection tells the router its `ConnectionState`). Unknown
commands, users below a command's rank and users within their cooldown are ignored
(counted, logged at debug). Ranks come from ``userlist``, ``addUser`` (the global rank)
and ``setUserRank`` (the channel rank, after ``addUser`` and on every promotion or
demotion). Commands run in the background (bounded by ``max_running_commands``, each
within ``command_timeout``), so a slow command or a slow echo never stalls logging.
A reply is *told* to the connection as `SendChat`, not asked: the connection confirms
delivery by the echo, and when that fails it publishes ``cytube.send.failed`` itself and
the queue says it again. If the connection's mailbox has no room within
``reply_timeout`` (or no connection runs), the router publishes that same failure event
(intent ``cytube.say``). A command that raises publishes ``command.<name>.failed`` (intent
``command.run``) and the router goes on. A command the queue runs again (`CommandRun`)
runs beside the logging too: the router answers at once with a `PendingCommand` the retry
handler waits on.

Once it has handled a live join, leave, chat line, media change, rank change or user list,
the router publishes it on the bus as ``channel.<channel>.<kind>`` (cytube/channel_events.py):
that is how plugins see the channel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs
import trio

from daz_actors.cytube.channel_events import topic_of
from daz_actors.cytube.chat_log import (
    LogRow,
    channel_event_write,
    chat_write,
    private_write,
)
from daz_actors.cytube.commands import (
    PROCESS_STARTED_AT,
    Command,
    CommandContext,
    CommandRegistry,
    Cooldowns,
    TreeState,
    builtin_commands,
    parse_command,
)
from daz_actors.cytube.events import (
    ChannelOptions,
    ChatMessage,
    ConnectionState,
    Cooldown,
    ErrorMessage,
    Kicked,
    LoginResult,
    MediaChanged,
    MediaUpdate,
    OwnRank,
    PasswordAccepted,
    PasswordRequest,
    PlaylistQueued,
    PrivateMessage,
    SendChat,
    SendPrivate,
    UserJoined,
    UserLeft,
    UserList,
    UserRank,
)
from daz_actors.cytube.intents import (
    COMMAND_RUN,
    SAY,
    CommandOutcome,
    CommandRun,
    PendingCommand,
    Say,
)
from daz_actors.cytube.log_writer import STOP_FLUSH, LogBuffer, LogWriter, StoredHook
from daz_actors.cytube.router_params import RouterParams as RouterParams
from daz_actors.runtime.actor import Actor, ActorContext, Startable, run_actor
from daz_actors.runtime.bus import EventBus
from daz_actors.runtime.errors import ActorStopped, NoSuchActor
from daz_actors.runtime.events import FailureEvent
from daz_actors.runtime.kinds import BuildContext
from daz_actors.runtime.log_summary import RepeatedWarnings
from daz_actors.runtime.supervisor import Supervisor
from daz_actors.storage.error_classes import DEFAULT_CLASSIFIER
from daz_actors.storage.sql_messages import SqlClient

__all__ = [
    "EventRouter",
    "GetRouterStats",
    "RouterParams",
    "RouterStartable",
    "RouterStats",
    "build_router",
    "router_startable",
    "routers_in",
]

log = logging.getLogger("daz_actors.router")

SEND_FAILED_TOPIC = "cytube.send.failed"
STOP_GRACE = 2.0  # seconds running commands get to finish after an orderly stop
MAX_RANKS = 10_000  # users whose rank is kept (a CyTube channel holds far fewer at once)

# ---------------------------------------------------------------------------- messages


@attrs.frozen
class GetRouterStats:
    """Ask the router for its `RouterStats` (answered after every earlier message)."""


@attrs.define(kw_only=True)
class RouterStats:
    """Counters of one router incarnation."""

    logged: int = 0  # events written (or found already written)
    log_failures: int = 0  # writes that failed (queued for retry, or refused for good)
    log_pending: int = 0  # rows accepted and not yet written nor queued (the buffer)
    log_batches: int = 0  # batch writes tried
    log_full_waits: int = 0  # rows that waited for room in the full buffer (ever, the room's)
    history_skipped: int = 0  # history lines not stored (log_history = false)
    commands_started: int = 0
    commands_failed: int = 0  # each published command.<name>.failed
    replies: int = 0  # replies handed to the connection
    replies_failed: int = 0  # replies that found no room or no connection (queued)
    unknown_ignored: int = 0  # prefix + a name nobody registered
    rank_ignored: int = 0  # users below the command's min_rank
    cooldown_ignored: int = 0  # within the user's cooldown for that command
    busy_ignored: int = 0  # max_running_commands already running
    own_ignored: int = 0  # the bot's own lines that looked like commands
    silent_ignored: int = 0  # commands while the bot could not speak in the room
    ranks_tracked: int = 0  # users whose rank the router keeps (at most MAX_RANKS)
    cooldowns_tracked: int = 0  # (user, command) cooldowns kept (pruned, see Cooldowns)


# ---------------------------------------------------------------------------- the actor


class EventRouter(Actor):
    """One incarnation of a room's router (a fresh instance per incarnation)."""

    def __init__(
        self,
        params: RouterParams,
        *,
        commands: CommandRegistry,
        nursery: trio.Nursery,
        log_buffer: LogBuffer | None = None,
        tree_state: TreeState | None = None,
        started_at: float = PROCESS_STARTED_AT,
        clock: Callable[[], float] = time.time,
        on_stored: StoredHook | None = None,
    ) -> None:
        self.params = params
        # the room's rows waiting to be written: kept across incarnations by the Startable
        self.log_buffer = log_buffer if log_buffer is not None else LogBuffer(params.log_buffer)
        self.on_stored = on_stored
        self.writer: LogWriter | None = None  # its task, from on_start on
        self.commands = commands
        self.nursery = nursery  # where commands and replies run
        self.tree_state = tree_state
        self.started_at = started_at
        self.clock = clock  # wall-clock seconds: received_at of events
        self.cooldowns = Cooldowns(params.command_cooldown)
        self.ranks: dict[str, float] = {}  # lower-case name -> rank
        # whether the bot can speak in the room, as its connection last said (a router
        # without a connection telling it otherwise answers)
        self.can_speak = True
        self.running = 0  # commands running now
        # one warning per kind per interval during an outage, the rest at DEBUG with a count
        self.warnings = RepeatedWarnings(log)
        self.stats = RouterStats()
        self.bus: EventBus | None = None  # where channel events go, once started

    def _set_rank(self, name: str, rank: float) -> None:
        """Keep `name`'s rank; beyond MAX_RANKS users the longest-known one is forgotten
        (a user the router forgot counts as a guest until the server names it again)."""
        key = name.lower()
        self.ranks.pop(key, None)
        self.ranks[key] = rank
        while len(self.ranks) > MAX_RANKS:
            del self.ranks[next(iter(self.ranks))]

    async def on_start(self) -> None:
        self.bus = self.ctx.bus
        try:
            self.db = SqlClient(self.ctx.registry.lookup(self.params.gateway))
        except NoSuchActor:
            raise NoSuchActor(
                f"event router for {self.params.channel!r}: no SQL gateway registered as "
                f"{self.params.gateway!r} (start the storage subtree before the rooms)"
            ) from None
        self.writer = LogWriter(
            self.log_buffer, db=self.db, bus=self.ctx.bus, source=self.ctx.name,
            channel=self.params.channel, timeout=self.params.log_timeout,
            batch=self.params.log_batch, on_stored=self.on_stored,
        )  # fmt: skip
        self.nursery.start_soon(self.writer.run)

    async def on_stop(self) -> None:
        """An orderly stop: the writer gets `STOP_FLUSH` seconds to write what is left, or
        to hand it to the retry path (a crash leaves it in the buffer for the next
        incarnation; so does a stop that takes longer)."""
        writer = self.writer
        if writer is None:  # it never started
            return
        with trio.CancelScope(shield=True), trio.move_on_after(STOP_FLUSH):
            await writer.flush()
        writer.stop()
        if len(self.log_buffer):
            log.warning(
                "room %s: %d log rows not written at stop; kept for the next incarnation",
                self.params.channel, len(self.log_buffer),
            )  # fmt: skip

    async def handle(self, message: Any) -> Any:
        reply = await self._handle(message)
        topic = topic_of(message)
        if topic is not None and self.bus is not None:
            # plugins see the channel on the bus (cytube/channel_events.py)
            await self.bus.publish(topic, message)
        return reply

    async def _handle(self, message: Any) -> Any:
        received_ms = int(self.clock() * 1000)
        if isinstance(message, ChatMessage):
            await self._on_chat(message, received_ms)
        elif isinstance(message, PrivateMessage):
            await self._log(private_write(message, received_ms))
            if self.params.bot_name and message.to.lower() == self.params.bot_name.lower():
                self._dispatch(message.text, message.username, reply_to=message.username)
        elif isinstance(message, UserJoined):
            # the global rank: the channel rank follows as setUserRank
            self._set_rank(message.user.name, message.user.rank)
            await self._log(channel_event_write(message, int(message.received_at * 1000)))
        elif isinstance(message, UserRank):
            self._set_rank(message.name, message.rank)
        elif isinstance(message, UserLeft):
            self.ranks.pop(message.name.lower(), None)
            await self._log(channel_event_write(message, int(message.received_at * 1000)))
        elif isinstance(message, MediaChanged):
            await self._log(channel_event_write(message, int(message.received_at * 1000)))
        elif isinstance(message, UserList):
            self.ranks = {}
            for user in message.users:
                self._set_rank(user.name, user.rank)
        elif isinstance(message, MediaUpdate):
            pass  # every few seconds while playing: not worth a row
        elif isinstance(message, PlaylistQueued):
            pass  # not logged; published for the plugins (mediatracker: who queued what)
        elif isinstance(message, ConnectionState):
            self.can_speak = message.can_speak
        elif isinstance(message, LoginResult | ErrorMessage | Kicked):
            log.info("room %s: %r", self.params.channel, message)
        elif isinstance(
            message, OwnRank | ChannelOptions | PasswordRequest | PasswordAccepted | Cooldown
        ):
            pass  # the connection acts on these
        elif isinstance(message, GetRouterStats):
            stats = attrs.evolve(
                self.stats,
                ranks_tracked=len(self.ranks),
                cooldowns_tracked=len(self.cooldowns),
                log_pending=len(self.log_buffer),
                log_full_waits=self.log_buffer.full_waits,
            )
            if (writer := self.writer) is not None:
                stats.logged = writer.stored
                stats.log_failures = writer.handed_over + writer.refused
                stats.log_batches = writer.batches
            return stats
        elif isinstance(message, CommandRun):
            # beside logging, never in this loop: the caller waits on the pending outcome
            pending = PendingCommand()
            self.nursery.start_soon(self._rerun, message, pending)
            return pending
        else:  # a crash would restart the whole room (one_for_all): ignore it loudly
            log.warning("event router %s ignores %s", self.ctx.name, type(message).__name__)
        return None

    # ------------------------------------------------------------------ logging

    async def _log(self, row: LogRow) -> None:
        """Hand the row to the writer (see `log_writer`); waits only when the buffer is full."""
        await self.log_buffer.add(row)

    # ------------------------------------------------------------------ commands

    async def _on_chat(self, message: ChatMessage, received_ms: int) -> None:
        if message.history and not self.params.log_history:
            self.stats.history_skipped += 1
        else:
            await self._log(chat_write(message, received_ms))
        if message.history:
            return  # said before the bot joined: recorded, never answered
        self._dispatch(message.text, message.username, reply_to=None)

    def _dispatch(self, text: str, user: str, *, reply_to: str | None) -> None:
        """Start the command `text` holds, if any: its reply goes to the channel, or by
        private message to `reply_to` (a command sent to the bot by PM)."""
        parsed = parse_command(text, self.params.command_prefix)
        if parsed is None:
            return
        if self._is_me(user):
            self.stats.own_ignored += 1
            return
        if not self.can_speak:  # no answer could be said: the command is not run
            self.stats.silent_ignored += 1
            log.debug("room %s: %s: cannot speak here now, not run", self.params.channel, user)
            return
        name, args = parsed
        command = self.commands.get(name)
        if command is None:
            self.stats.unknown_ignored += 1
            log.debug("room %s: %s: unknown command %r ignored", self.params.channel, user, name)
            return
        rank = self.ranks.get(user.lower(), 0)
        if rank < command.min_rank:
            self.stats.rank_ignored += 1
            log.debug("room %s: %s (rank %g) may not run %s", self.params.channel, user, rank, name)
            return
        if not self.cooldowns.allow(user, name, trio.current_time(), seconds=command.cooldown):
            self.stats.cooldown_ignored += 1
            log.debug(
                "room %s: %s: %s within its cooldown, ignored", self.params.channel, user, name
            )
            return
        if self.running >= self.params.max_running_commands:
            self.stats.busy_ignored += 1
            log.warning(
                "room %s: %d commands running, %s ignored", self.params.channel, self.running, name
            )
            return
        self.running += 1
        self.stats.commands_started += 1
        context = self._context(command, user, rank, args)
        self.nursery.start_soon(self._run_command, command, context, self.clock(), reply_to)

    def _is_me(self, username: str) -> bool:
        return bool(self.params.bot_name) and username.lower() == self.params.bot_name.lower()

    def _context(self, command: Command, username: str, rank: float, args: str) -> CommandContext:
        return CommandContext(
            channel=self.params.channel,
            username=username,
            rank=rank,
            name=command.name,
            args=args,
            started_at=self.started_at,
            registry=self.ctx.registry,
            db=self.db,
            commands=self.commands,
            prefix=self.params.command_prefix,
            tree_state=self.tree_state,
        )

    async def _run_command(
        self, command: Command, context: CommandContext, issued: float, reply_to: str | None
    ) -> None:
        try:
            with trio.fail_after(self.params.command_timeout):
                reply = await command.fn(context)
        except Exception as exc:
            await self._command_failed(command, context, exc, issued, reply_to)
            return
        finally:
            self.running -= 1
        if reply:
            await self._say(str(reply), to=reply_to)

    async def _command_failed(
        self,
        command: Command,
        context: CommandContext,
        exc: Exception,
        issued: float,
        reply_to: str | None,
    ) -> None:
        self.stats.commands_failed += 1
        verdict = DEFAULT_CLASSIFIER.classify(exc)
        retryable, code = verdict.retryable, verdict.code
        topic = f"command.{command.name}.failed"
        log.warning(
            "room %s: %s%s for %s failed (%s): %r",
            self.params.channel, self.params.command_prefix, command.name, context.username,
            "retryable" if retryable else "permanent", exc,
        )  # fmt: skip
        await self.ctx.bus.publish(
            topic,
            FailureEvent(
                topic=topic,
                source=self.ctx.name,
                operation="plugin_request",
                event_type=COMMAND_RUN.name,
                error=f"{type(exc).__name__}: {exc}",
                error_code=code,
                retryable=retryable,
                intent=COMMAND_RUN.intent(
                    CommandRun(
                        channel=self.params.channel,
                        command=command.name,
                        username=context.username,
                        rank=float(context.rank),
                        args=context.args,
                        issued_at=issued,
                        reply_to=reply_to,
                    )
                ),
                plugin="commands",
                channel=self.params.channel,
            ),
        )

    async def _rerun(self, request: CommandRun, pending: PendingCommand) -> None:
        """Run a failed command again for the retry queue (beside logging, within the
        command timeout); the outcome goes to `pending`, also when this router stops."""
        try:
            pending.settle(await self._rerun_outcome(request))
        finally:  # cancelled with the router: the queue tries again later
            pending.settle(CommandOutcome(ok=False, error="the router stopped", retryable=True))

    async def _rerun_outcome(self, request: CommandRun) -> CommandOutcome:
        command = self.commands.get(request.command)
        if command is None:
            return CommandOutcome(ok=False, error=f"no command {request.command!r}")
        if self.clock() - request.issued_at > self.params.command_retry_window:
            return CommandOutcome(ok=True, stale=True)
        context = self._context(command, request.username, request.rank, request.args)
        try:
            with trio.fail_after(self.params.command_timeout):
                reply = await command.fn(context)
        except Exception as exc:
            verdict = DEFAULT_CLASSIFIER.classify(exc)
            return CommandOutcome(
                ok=False, error=f"{verdict.code}: {exc}", retryable=verdict.retryable
            )
        if reply:
            self.nursery.start_soon(partial(self._say, str(reply), to=request.reply_to))
        return CommandOutcome(ok=True)

    # ------------------------------------------------------------------ replies

    async def _say(self, text: str, *, to: str | None = None) -> None:
        """Tell the connection to say `text` (by private message to `to`, if given); it
        confirms by echo and queues a failure itself."""
        request: SendChat | SendPrivate = (
            SendChat(msg=text) if to is None else SendPrivate(to=to, msg=text)
        )
        ref = self.ctx.registry.get(self.params.connection_name)
        reason = f"no connection registered as {self.params.connection_name!r}"
        if ref is not None:
            try:
                with trio.move_on_after(self.params.reply_timeout):
                    await ref.send(request)
                    self.stats.replies += 1
                    return
                reason = f"the connection's mailbox stayed full for {self.params.reply_timeout:g} s"
            except ActorStopped as exc:
                reason = str(exc)
        self.stats.replies_failed += 1
        self.warnings.warning(
            "reply", "room %s: reply not handed over (%s); queued for retry",
            self.params.channel, reason,
        )  # fmt: skip
        await self.ctx.bus.publish(
            SEND_FAILED_TOPIC,
            FailureEvent(
                topic=SEND_FAILED_TOPIC,
                source=self.ctx.name,
                operation="cytube_command",
                event_type=SAY.name,
                error=reason,
                error_code="not_handed_over",
                retryable=True,
                intent=SAY.intent(
                    Say(
                        channel=self.params.channel,
                        msg=text,
                        to=to,
                        connection=self.params.connection_name,
                    )
                ),
                plugin="cytube",
                channel=self.params.channel,
                event_id=request.event_id,
                correlation_id=request.correlation_id,
            ),
        )


# ---------------------------------------------------------------------------- wiring


class RouterStartable:
    """A `Startable` running a fresh `EventRouter` per incarnation; the room's log buffer
    is its own, so rows an incarnation did not write are written by the next one (and
    metrics read it from the tree: `routers_in`)."""

    def __init__(
        self,
        params: RouterParams,
        commands: CommandRegistry,
        *,
        tree_state: TreeState | None = None,
        started_at: float = PROCESS_STARTED_AT,
        clock: Callable[[], float] = time.time,
        on_stored: StoredHook | None = None,
    ) -> None:
        self.params = params
        self.commands = commands
        self.tree_state = tree_state
        self.started_at = started_at
        self.clock = clock
        self.on_stored = on_stored
        self.log_buffer = LogBuffer(params.log_buffer)

    def __repr__(self) -> str:
        return f"event-router({self.params.channel})"

    async def __call__(
        self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            router = EventRouter(
                self.params, commands=self.commands, nursery=nursery,
                log_buffer=self.log_buffer, tree_state=self.tree_state,
                started_at=self.started_at, clock=self.clock, on_stored=self.on_stored,
            )  # fmt: skip
            await run_actor(router, ctx, task_status)
            # an orderly stop: running commands get a moment to answer
            nursery.cancel_scope.deadline = trio.current_time() + STOP_GRACE


def router_startable(
    params: RouterParams,
    *,
    commands: CommandRegistry | None = None,
    tree_state: TreeState | None = None,
    started_at: float = PROCESS_STARTED_AT,
    clock: Callable[[], float] = time.time,
    on_stored: StoredHook | None = None,
) -> RouterStartable:
    """The `RouterStartable` of a room's router.

    `commands` are added to the built-ins (a name clash is a `NameTaken` error now).
    `on_stored` is called with each batch of rows once it is stored.
    """
    registry = builtin_commands(debug_min_rank=params.debug_min_rank)
    if commands is not None:
        registry.include(commands)
    return RouterStartable(
        params, registry, tree_state=tree_state, started_at=started_at, clock=clock,
        on_stored=on_stored,
    )  # fmt: skip


def routers_in(root: Supervisor) -> list[RouterStartable]:
    """Every room's `RouterStartable` anywhere below `root` (they outlive restarts)."""
    return [s for s in root.startables() if isinstance(s, RouterStartable)]


def build_router(
    params: RouterParams, ctx: BuildContext, *, commands: CommandRegistry | None = None
) -> Startable:
    """Factory of the event router kind.

    Optional resources: ``tree_state`` (a callable returning the tree's `ChildInfo` list,
    for ``!debug``), ``started_at`` (wall-clock seconds of process start, for ``!uptime``)
    and ``commands`` (a `CommandRegistry` of extra commands, or a callable giving the one
    of a channel, as the plugins' differ per channel; if `commands` is not given).
    """
    extra = commands if commands is not None else ctx.resources.get("commands")
    if extra is not None and not isinstance(extra, CommandRegistry) and callable(extra):
        extra = extra(params.channel)
    if extra is not None and not isinstance(extra, CommandRegistry):
        raise TypeError(
            "the 'commands' resource must be a CommandRegistry (or a callable giving a "
            f"channel's), got {extra!r}"
        )
    tree_state = ctx.resources.get("tree_state")
    started_at = ctx.resources.get("started_at", PROCESS_STARTED_AT)
    return router_startable(params, commands=extra, tree_state=tree_state, started_at=started_at)
