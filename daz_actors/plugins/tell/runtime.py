"""The ``tell`` plugin at work (its declaration and params are in ``__init__``):
``!tell <name> <message>``, said once the next time they are here.

The message waits in ``daz_tells`` (at most one per sender and target in a channel). The
plugin's ``watcher`` hears joins and chat lines on the bus; when a user with a message
waiting joins or speaks, it queues ``tell.deliver`` (with the plugin's name), and the retry
workers say each waiting message once (say_once.py): in the channel, or by PM with
``delivery = "pm"``, marked delivered only when the server echoed it. The queue keeps
trying across crashes, restarts, database outages and chat server restarts.

Config (``[plugins.tell]``): ``delivery`` ("channel" or "pm"), ``max_length`` (characters
of a message, at most 250), ``min_rank``, ``cooldown`` (seconds per user).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from daz_actors.cytube.channel_events import ChannelEventKind
from daz_actors.cytube.commands import CommandContext
from daz_actors.cytube.events import ChatMessage, UserJoined
from daz_actors.plugins.api import PluginContext, actor_with_nursery
from daz_actors.plugins.declaration import PluginActor, PluginCommand, PluginParts
from daz_actors.plugins.say_once import DELIVERY_POLICY, DELIVERY_POLICY_NAME, Compose, say_once
from daz_actors.plugins.tell import TellParams
from daz_actors.retry.handlers import AttemptContext
from daz_actors.retry.intents import IntentType
from daz_actors.runtime.actor import Actor, Startable
from daz_actors.runtime.bus import Published
from daz_actors.runtime.errors import DazActorsError
from daz_actors.storage.sql_messages import CALL_FAILED

__all__ = ["TELL_DELIVER", "setup"]

log = logging.getLogger("daz_actors.plugins.tell")

_USER = re.compile(r"@?([A-Za-z0-9_-]{1,20})")
ADDED_TIMEOUT = 2.0  # seconds the command waits for room in the watcher's mailbox


@attrs.frozen(kw_only=True)
class TellDeliver:
    """Intent ``tell.deliver`` v1: say every message waiting for `target` in `channel`."""

    channel: str
    target: str  # lower case


@attrs.frozen(kw_only=True)
class TellAdded:
    """The command stored a message (told to the watcher)."""

    channel: str
    target: str  # lower case
    tell_id: int


@attrs.frozen(kw_only=True)
class Settled:
    """A delivery attempt ended; `remaining` is the newest id still waiting, if any."""

    channel: str
    target: str  # lower case
    remaining: int | None


_INSERT = """
INSERT INTO daz_tells (channel, sender, target, message) VALUES ($1, $2, $3, $4)
ON CONFLICT (channel, lower(sender), lower(target)) WHERE delivered_at IS NULL DO NOTHING
RETURNING id"""
_PENDING = """
SELECT id FROM daz_tells
WHERE channel = $1 AND lower(target) = $2 AND delivered_at IS NULL ORDER BY id"""
_LOAD = """
SELECT channel, lower(target) AS target, max(id) AS newest FROM daz_tells
WHERE delivered_at IS NULL GROUP BY 1, 2"""

Key = tuple[str, str]  # (channel, lower-case name)


class TellWatcher(Actor):
    """Hears joins and lines; queues the delivery of a user's waiting messages."""

    def __init__(self, plugin: PluginContext[TellParams], nursery: trio.Nursery) -> None:
        self.plugin = plugin
        self.nursery = nursery
        self.pending: dict[Key, int] | None = None  # None until loaded from the table
        self.added: dict[Key, int] = {}  # stored while loading
        self.early: set[Key] = set()  # heard while loading
        self.scheduled: set[str] = set()  # event ids queued by this incarnation

    async def on_start(self) -> None:
        self.plugin.subscribe(self.ctx.ref, [ChannelEventKind.JOIN, ChannelEventKind.LINE])
        self.nursery.start_soon(self._load)

    async def _load(self) -> None:
        """Read who has messages waiting (retried until the database answers), then read it
        again every ``refresh_seconds``: a message whose `TellAdded` never reached this
        incarnation (its mailbox was full, it was restarting) is noticed all the same."""
        first = True
        while True:
            rows = await self._read_pending(first)
            pending = dict(self.pending or {})
            for row in rows:
                key = (row["channel"], row["target"])
                pending[key] = max(row["newest"], pending.get(key, 0))
            for key, tell_id in self.added.items():
                pending[key] = max(tell_id, pending.get(key, 0))
            self.pending, self.added = pending, {}
            if first:
                for key in sorted(self.early):
                    self._trigger(key)
                self.early.clear()
                first = False
            await trio.sleep(self.plugin.params.refresh_seconds)  # the refresh period

    async def _read_pending(self, first: bool) -> list[Any]:
        delay = 0.5
        while True:
            try:
                rows: list[Any] = await self.plugin.db().query(_LOAD)
                return rows
            except CALL_FAILED as exc:
                if first:
                    log.warning("tell: cannot read the waiting messages yet (%s); retrying", exc)
                await trio.sleep(delay)  # a retry's backoff, not a wait for an event
                delay = min(delay * 2, 30.0)

    def _trigger(self, key: Key) -> None:
        if self.pending is None:
            self.early.add(key)
            return
        newest = self.pending.get(key)
        if newest is None:
            return
        event_id = f"tell:{key[0]}:{key[1]}:{newest}"
        if event_id in self.scheduled:
            return
        self.scheduled.add(event_id)
        self.nursery.start_soon(self._schedule, key, event_id)

    async def _schedule(self, key: Key, event_id: str) -> None:
        intent = TELL_DELIVER.intent(TellDeliver(channel=key[0], target=key[1]))
        policy = self.plugin.policy(DELIVERY_POLICY_NAME, DELIVERY_POLICY)
        item = self.plugin.new_item(intent, policy=policy, event_id=event_id, channel=key[0])
        try:
            await self.plugin.schedule(item)
        except DazActorsError as exc:  # the next join or line tries again
            self.scheduled.discard(event_id)
            log.warning("tell: could not queue the delivery for %s (%s)", key, exc)

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Published):
            event = message.event
            if isinstance(event, UserJoined):
                self._trigger((event.channel, event.user.name.lower()))
            elif isinstance(event, ChatMessage) and (
                event.username.lower() != self.plugin.bot_name(event.channel).lower()
            ):
                self._trigger((event.channel, event.username.lower()))
        elif isinstance(message, TellAdded):
            key = (message.channel, message.target)
            store = self.pending if self.pending is not None else self.added
            store[key] = max(message.tell_id, store.get(key, 0))
        elif isinstance(message, Settled):
            key = (message.channel, message.target)
            done = f"tell:{key[0]}:{key[1]}:"  # its earlier deliveries: forgotten (bounded)
            self.scheduled = {e for e in self.scheduled if not e.startswith(done)}
            if self.pending is not None:
                if message.remaining is None:
                    self.pending.pop(key, None)
                else:
                    self.pending[key] = max(message.remaining, self.pending.get(key, 0))
        else:
            log.warning("tell watcher ignores %s", type(message).__name__)
        return None


def _watcher(plugin: PluginContext[TellParams]) -> Startable:
    return actor_with_nursery(lambda nursery: TellWatcher(plugin, nursery))


def _compose(params: TellParams) -> Compose:
    def compose(row: Mapping[str, Any]) -> tuple[str, str | None]:
        text = f"{row['target']}, {row['sender']} asked me to tell you: {row['message']}"
        return text, (row["target"] if params.delivery == "pm" else None)

    return compose


async def _unused(_args: TellDeliver, _ctx: AttemptContext) -> None:  # replaced in setup
    raise RuntimeError("the tell plugin is not set up")


TELL_DELIVER = IntentType(
    name="tell.deliver",
    version=1,
    args=TellDeliver,
    run=_unused,
    description="say the messages waiting for a user, once each",
)


def setup(ctx: PluginContext[TellParams]) -> PluginParts:
    """The tell command, its watcher, and its delivery intent."""
    said: set[int] = set()  # echoed but not yet marked (say_once)
    compose = _compose(ctx.params)

    async def deliver(args: TellDeliver, attempt: AttemptContext) -> None:
        rows = await attempt.db.query(_PENDING, args.channel, args.target)
        for row in rows:
            outcome = await say_once(
                ctx, attempt, table="daz_tells", row_id=row["id"], compose=compose, said=said
            )
            log.info("tell %d for %s: %s", row["id"], args.target, outcome.state)
        remaining = await attempt.db.query_value(
            "SELECT max(id) FROM daz_tells WHERE channel = $1 AND lower(target) = $2"
            " AND delivered_at IS NULL",
            args.channel, args.target,
        )  # fmt: skip
        watcher = ctx.registry.get(ctx.actor_name("watcher"))
        if watcher is not None:
            watcher.try_send(Settled(channel=args.channel, target=args.target, remaining=remaining))

    async def tell(command: CommandContext) -> str:
        parts = command.args.split(maxsplit=1)
        usage = f"usage: {command.prefix}tell <name> <message>"
        if len(parts) < 2:
            return usage
        match = _USER.fullmatch(parts[0])
        if match is None:
            return f"{parts[0]!r} is not a user name; {usage}"
        target, message = match.group(1), parts[1].strip()
        if target.lower() == command.username.lower():
            return f"{command.username}, you can tell yourself that"
        if target.lower() == ctx.bot_name(command.channel).lower():
            return f"{command.username}, I am listening already"
        if len(message) > ctx.params.max_length:
            return (
                f"{command.username}, that message is too long ({len(message)} characters, "
                f"at most {ctx.params.max_length})"
            )
        tell_id = await command.db.query_value(
            _INSERT, command.channel, command.username, target, message
        )
        if tell_id is None:
            return f"{command.username}, you already have a message waiting for {target}"
        watcher = ctx.registry.get(ctx.actor_name("watcher"))
        if watcher is not None:  # missed (full, stopping)? its next refresh finds the row
            with trio.move_on_after(ADDED_TIMEOUT), contextlib.suppress(DazActorsError):
                await watcher.send(
                    TellAdded(channel=command.channel, target=target.lower(), tell_id=tell_id)
                )
        return f"ok {command.username}, I will tell {target} when they are next here"

    return PluginParts(
        commands=[
            PluginCommand(
                name="tell",
                fn=tell,
                help="leave a message: !tell <name> <message>",
                min_rank=ctx.params.min_rank,
                cooldown=ctx.params.cooldown,
            )
        ],
        actors=[PluginActor(name="watcher", start=_watcher(ctx))],
        intents=[attrs.evolve(TELL_DELIVER, run=deliver)],
    )
