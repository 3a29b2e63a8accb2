"""The runtime of the ``greeter`` plugin (imported by its `setup`); see the package's
docstring for what it does."""

from __future__ import annotations

import logging
import random
import time
from datetime import UTC, datetime
from typing import Any

import attrs

from daz_actors.cytube.channel_events import ChannelEventKind
from daz_actors.cytube.commands import CommandContext
from daz_actors.cytube.events import UserJoined
from daz_actors.plugins.api import PluginContext
from daz_actors.plugins.declaration import PluginActor, PluginCommand, PluginParts
from daz_actors.plugins.greeter import NAME, GreeterParams
from daz_actors.plugins.writes import GATEWAY_FAILED, PluginWrite, write_or_queue
from daz_actors.runtime.actor import Actor, actor_factory
from daz_actors.runtime.bus import Published
from daz_actors.runtime.errors import DazActorsError
from daz_actors.storage.sql_messages import SqlClient

__all__ = ["GREETED", "OPTED", "Greeted", "Opted"]

log = logging.getLogger("daz_actors.plugins.greeter")


@attrs.frozen(kw_only=True)
class Greeted:
    """Intent ``greeter.greeted`` v1: `username` was greeted at `at`; not again before
    `next_at`."""

    channel: str
    username: str
    at: float
    next_at: float


@attrs.frozen(kw_only=True)
class Opted:
    """Intent ``greeter.opt`` v1: `username` said ``!greet off`` (out) or ``on`` at `at`."""

    channel: str
    username: str
    out: bool
    at: float


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


_GREETED = """
INSERT INTO daz_greeter_users AS g (channel, lname, username, last_greeted_at, next_greet_at)
VALUES ($1, lower($2), $2, $3, $4)
ON CONFLICT (channel, lname) DO UPDATE SET
    username = EXCLUDED.username,
    last_greeted_at = GREATEST(g.last_greeted_at, EXCLUDED.last_greeted_at),
    next_greet_at = GREATEST(g.next_greet_at, EXCLUDED.next_greet_at)"""
_OPTED = """
INSERT INTO daz_greeter_users AS g (channel, lname, username, opted_out, opted_at)
VALUES ($1, lower($2), $2, $3, $4)
ON CONFLICT (channel, lname) DO UPDATE SET
    username = EXCLUDED.username, opted_out = EXCLUDED.opted_out, opted_at = EXCLUDED.opted_at
WHERE g.opted_at IS NULL OR g.opted_at <= EXCLUDED.opted_at"""
_STATE = """
SELECT next_greet_at, opted_out FROM daz_greeter_users WHERE channel = $1 AND lname = lower($2)"""


async def _greeted(db: SqlClient, g: Greeted) -> None:
    await db.execute(_GREETED, g.channel, g.username, _ts(g.at), _ts(g.next_at))


async def _opted(db: SqlClient, o: Opted) -> None:
    await db.execute(_OPTED, o.channel, o.username, o.out, _ts(o.at))


GREETED = PluginWrite.of("greeter.greeted", Greeted, _greeted, description="record a greeting")
OPTED = PluginWrite.of("greeter.opt", Opted, _opted, description="record !greet off|on")


@attrs.frozen
class Remember:
    """Told to the greeter by ``!greet``: the user's choice, for when the database is away."""

    channel: str
    lname: str
    out: bool


@attrs.define
class _Known:
    """What the greeter knows of a user without the database (its last answer, and since)."""

    next_at: float = 0.0
    out: bool = False


class Greeter(Actor):
    """Greets the users who join, one at a time."""

    def __init__(self, plugin: PluginContext[GreeterParams], rng: random.Random) -> None:
        self.plugin = plugin
        self.rng = rng
        # the last state read or written per user: used only while the database is away
        self.known: dict[tuple[str, str], _Known] = {}

    async def on_start(self) -> None:
        self.plugin.subscribe(self.ctx.ref, [ChannelEventKind.JOIN])

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Remember):
            self._known(message.channel, message.lname).out = message.out
        elif isinstance(message, Published) and isinstance(message.event, UserJoined):
            await self._joined(message.event)
        else:
            log.warning("greeter ignores %s", type(message).__name__)
        return None

    def _known(self, channel: str, lname: str) -> _Known:
        key = (channel, lname)
        if key not in self.known:
            if len(self.known) >= 10_000:  # bounded: forget the oldest entry
                del self.known[next(iter(self.known))]
            self.known[key] = _Known()
        return self.known[key]

    async def _joined(self, event: UserJoined) -> None:
        params = self.plugin.params
        name, channel = event.user.name, event.channel
        if not name or name.lower() == self.plugin.bot_name(channel).lower():
            return
        if event.user.rank < 1 and not params.greet_guests:
            return
        known = self._known(channel, name.lower())
        try:
            rows = await self.plugin.db(default_timeout=params.write_timeout).query(
                _STATE, channel, name
            )
            if rows:
                next_at = rows[0]["next_greet_at"]
                if next_at is not None:  # a greeting still queued may be newer: keep it
                    known.next_at = max(known.next_at, next_at.timestamp())
                known.out = rows[0]["opted_out"]
        except GATEWAY_FAILED as exc:
            log.warning("greeter: reading %s's state failed (%s); going by memory", name, exc)
        now = time.time()
        if known.out or now < known.next_at:
            return
        text = self.rng.choice(params.greetings).format(name=name)
        try:
            await self.plugin.say(channel, text, requeue=False, timeout=15.0)
        except DazActorsError as exc:  # a greeting said late is worse than none
            log.warning("greeter: greeting %s in %s failed: %s", name, channel, exc)
            return
        known.next_at = now + self.rng.uniform(params.cooldown_min, params.cooldown_max)
        greeted = Greeted(channel=channel, username=name, at=now, next_at=known.next_at)
        await write_or_queue(
            self.plugin, GREETED, greeted, event_id=f"{NAME}:greeted:{channel}:{name}:{now}",
            channel=channel, timeout=params.write_timeout,
        )  # fmt: skip


def setup(ctx: PluginContext[GreeterParams]) -> PluginParts:
    """The greeter actor, !greet and the intents of its writes."""
    params = ctx.params

    async def greet(command: CommandContext) -> str:
        arg = command.args.strip().lower()
        if arg not in ("", "on", "off"):
            return f"usage: {command.prefix}greet off|on"
        if not arg:
            rows = await ctx.db().query(_STATE, command.channel, command.username)
            out = bool(rows and rows[0]["opted_out"])
            return (
                f"{command.username}, I {'do not greet' if out else 'greet'} you when you "
                f"join ({command.prefix}greet {'on' if out else 'off'} to change it)"
            )
        now = time.time()
        opted = Opted(channel=command.channel, username=command.username, out=arg == "off", at=now)
        await write_or_queue(
            ctx, OPTED, opted, event_id=f"{NAME}:opt:{command.channel}:{command.username}:{now}",
            channel=command.channel, timeout=params.write_timeout,
        )  # fmt: skip
        greeter = ctx.registry.get(ctx.actor_name("greeter"))
        if greeter is not None:
            greeter.try_send(Remember(command.channel, command.username.lower(), opted.out))
        if opted.out:
            return f"ok {command.username}, I will not greet you any more"
        return f"ok {command.username}, I will greet you again"

    rng = random.Random()
    return PluginParts(
        commands=[
            PluginCommand(
                name="greet",
                fn=greet,
                help="greetings when you join: !greet off|on",
                cooldown=params.command_cooldown,
            )
        ],
        actors=[PluginActor(name="greeter", start=actor_factory(lambda: Greeter(ctx, rng)))],
        intents=[GREETED.intent, OPTED.intent],
    )
