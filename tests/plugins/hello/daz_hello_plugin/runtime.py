"""The example plugin at work: its commands, actor and intent (`setup`).

* ``[plugins.hello]`` takes ``greeting`` (a string, default "hello").
* ``!hello``: records a greeting in its own table (migration 0001) and answers with the
  count. When the database is away, the greeting is queued as the intent ``hello.record``
  (with the plugin's name) and recorded later by its retry handler.
* ``!hellolater``: queues the greeting as ``hello.record`` on purpose (the queue records it).
* an actor, ``watcher``, counts the joins it hears on the bus; ``!joins`` asks it, and
  ``!hellocrash`` makes it crash: its supervisor ``plugin:hello`` restarts it alone.
"""

from __future__ import annotations

from typing import Any

import attrs

from daz_actors import Actor, actor_factory
from daz_actors.plugins import (
    CALL_FAILED,
    AttemptContext,
    ChannelEventKind,
    CommandContext,
    IntentType,
    PluginActor,
    PluginCommand,
    PluginContext,
    PluginParts,
    Published,
    RetryPolicy,
    SqlClient,
    new_id,
)
from daz_hello_plugin import HelloParams


@attrs.frozen(kw_only=True)
class Record:
    """The intent hello.record v1: a greeting to store."""

    event_id: str
    channel: str
    username: str


INSERT = (
    "INSERT INTO hello_greetings (event_id, channel, username) VALUES ($1, $2, $3)"
    " ON CONFLICT (event_id) DO NOTHING"
)


async def _record_again(record: Record, ctx: AttemptContext) -> None:
    await ctx.db.execute(INSERT, record.event_id, record.channel, record.username)


RECORD = IntentType(
    name="hello.record", version=1, args=Record, run=_record_again,
    description="store a greeting the database missed",
)  # fmt: skip
RETRY = RetryPolicy(max_retries=20, initial=0.5, max_delay=5.0, attempt_timeout=4.0)


@attrs.frozen
class CountJoins:
    """Ask the watcher how many joins this incarnation heard."""


@attrs.frozen
class Crash:
    """Tell the watcher to crash."""


class Watcher(Actor):
    def __init__(self, ctx: PluginContext[HelloParams]) -> None:
        self.plugin = ctx
        self.joins = 0

    async def on_start(self) -> None:
        self.plugin.subscribe(self.ctx.ref, [ChannelEventKind.JOIN])

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Published):
            self.joins += 1
            return None
        if isinstance(message, CountJoins):
            return self.joins
        if isinstance(message, Crash):
            raise RuntimeError("asked to crash")
        raise TypeError(f"watcher does not handle {message!r}")


def setup(ctx: PluginContext[HelloParams]) -> PluginParts:
    """Called once per process: the plugin's commands, actors and intents."""

    async def hello(command: CommandContext) -> str:
        db = SqlClient(ctx.registry.lookup(ctx.gateway), default_timeout=5)
        record = Record(event_id=new_id(), channel=command.channel, username=command.username)
        try:
            await db.execute(INSERT, record.event_id, record.channel, record.username)
            count = await db.query_value(
                "SELECT count(*) FROM hello_greetings WHERE channel = $1", command.channel
            )
        except CALL_FAILED:  # the database is away: queue it, with the plugin's name
            await ctx.schedule(ctx.new_item(RECORD.intent(record), policy=RETRY))
            return f"{ctx.params.greeting}, {command.username}! (I will remember it later)"
        return f"{ctx.params.greeting}, {command.username}! (greeting #{count} here)"

    async def hello_later(command: CommandContext) -> str:
        record = Record(event_id=new_id(), channel=command.channel, username=command.username)
        await ctx.schedule(
            ctx.new_item(RECORD.intent(record), policy=RETRY, event_id=record.event_id)
        )
        return f"queued {record.event_id}"

    async def joins(command: CommandContext) -> str:
        count = await ctx.registry.lookup(ctx.actor_name("watcher")).ask(CountJoins(), timeout=5)
        return f"joins heard: {count}"

    async def crash(command: CommandContext) -> None:
        ctx.registry.lookup(ctx.actor_name("watcher")).try_send(Crash())
        return

    return PluginParts(
        commands=[
            PluginCommand(name="hello", fn=hello, help="say hello (and count it)", cooldown=0),
            PluginCommand(name="hellolater", fn=hello_later, help="count a hello later"),
            PluginCommand(name="joins", fn=joins, help="joins the watcher heard"),
            PluginCommand(name="hellocrash", fn=crash, help="crash the watcher", min_rank=2),
        ],
        actors=[PluginActor(name="watcher", start=actor_factory(lambda: Watcher(ctx)))],
        intents=[RECORD],
    )
