"""The public API of a plugin: what it is given, and what it declares (declaration.py).

A plugin is a `Plugin` object that an installed distribution names under the entry point
group ``daz_actors.plugins`` (discovery.py). It declares its name, its params class (read
from ``[plugins.<name>]``, strictly, like an actor kind's), the folder of its migrations
(their own version sequence), and a `setup` function. `setup` is called once per process
with the plugin's `PluginContext` and returns its `PluginParts`: chat commands, actors
(run in the plugin's own supervisor under the ``plugins`` subtree) and retry intents
(queued with the plugin's name). docs/plugins.md walks through an example.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

import attrs
import trio

from daz_actors.cytube.channel_events import ChannelEventKind, channel_pattern, channel_topic
from daz_actors.cytube.elsewhere import Elsewhere
from daz_actors.cytube.events import Delivered, SendChat, SendPrivate
from daz_actors.cytube.names import connection_name
from daz_actors.plugins.names import plugin_actor_name
from daz_actors.retry.capture import CAPTURE_NAME, ScheduleRetry
from daz_actors.retry.intents import intent_data
from daz_actors.retry.policies import RetryPolicy
from daz_actors.runtime.actor import Actor, ActorContext, Startable, run_actor
from daz_actors.runtime.bus import EventBus, Overflow, Subscription
from daz_actors.runtime.errors import DazActorsError
from daz_actors.runtime.events import Intent, new_id
from daz_actors.runtime.ref import ActorRef
from daz_actors.runtime.registry import Registry
from daz_actors.storage.queue_types import NewItem
from daz_actors.storage.sql_gateway import GATEWAY_NAME
from daz_actors.storage.sql_messages import SqlClient

__all__ = ["NotConnected", "PluginContext", "actor_with_nursery"]

P = TypeVar("P")


def actor_with_nursery(factory: Callable[[trio.Nursery], Actor]) -> Startable:
    """A Startable running a fresh ``factory(nursery)`` per incarnation, with a nursery of
    its own for background work (a loader, a timer, a slow call); the nursery ends with the
    incarnation, so a restart never leaves a task behind."""

    async def start(
        ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            await run_actor(factory(nursery), ctx, task_status)
            nursery.cancel_scope.cancel()

    start.__qualname__ = f"actor_with_nursery({getattr(factory, '__qualname__', factory)!s})"
    return start


class NotConnected(DazActorsError, RuntimeError):
    """The plugin asked to speak in a channel this process has no connection for."""

    retryable = True
    code = "not_connected"


@attrs.frozen(kw_only=True)
class PluginContext(Generic[P]):
    """What a plugin is given: its settings, and the process's services."""

    name: str  # the plugin's name
    params: P  # its [plugins.<name>] table, validated
    channels: frozenset[str] | None  # where it is enabled; None: every channel
    registry: Registry  # to reach actors (the gateway, the rooms' connections, ...)
    bus: EventBus  # channel events (cytube/channel_events.py), failure events
    bot_names: Mapping[str, str] = attrs.field(factory=dict)  # channel -> the bot's account
    retry_policies: Mapping[str, RetryPolicy] = attrs.field(factory=dict)  # [retry_policies]
    gateway: str = GATEWAY_NAME  # the SQL gateway's registered name
    # on a cluster node: hands a delivery for a channel another node holds over to it
    elsewhere: Elsewhere | None = None

    def active_in(self, channel: str) -> bool:
        """Whether the plugin is enabled in `channel`."""
        return self.channels is None or channel in self.channels

    def bot_name(self, channel: str) -> str:
        """The bot's account in `channel` ("" when it reads only, or is unknown)."""
        return self.bot_names.get(channel, "")

    def actor_name(self, actor: str) -> str:
        """The registered name of this plugin's actor `actor`."""
        return plugin_actor_name(self.name, actor)

    def db(self, *, default_timeout: float = 10.0) -> SqlClient:
        """A client of the SQL gateway (look it up when needed: it may restart)."""
        return SqlClient(self.registry.lookup(self.gateway), default_timeout=default_timeout)

    def subscribe(
        self,
        ref: ActorRef,
        kinds: Iterable[ChannelEventKind],
        *,
        overflow: Overflow = Overflow.DROP,
    ) -> list[Subscription]:
        """Deliver the channel events of `kinds` in this plugin's channels to `ref` (as
        `Published` messages). DROP by default: a plugin that falls behind loses events
        (counted) rather than stalling a room's router."""
        subs = []
        for kind in kinds:
            if self.channels is None:
                subs.append(self.bus.subscribe(channel_pattern(kind), ref, overflow=overflow))
            else:
                for channel in sorted(self.channels):
                    topic = channel_topic(channel, kind)
                    subs.append(self.bus.subscribe(topic, ref, overflow=overflow))
        return subs

    def policy(self, name: str, default: RetryPolicy) -> RetryPolicy:
        """``[retry_policies.<name>]`` if the config has it, else `default`."""
        return self.retry_policies.get(name) or default

    def new_item(
        self,
        intent: Intent,
        *,
        policy: RetryPolicy,
        event_id: str | None = None,
        channel: str | None = None,
        not_before: datetime | None = None,
        operation: str = "plugin_request",
    ) -> NewItem:
        """A queue item carrying `intent` out under `policy`, queued with this plugin's
        name (its ``plugin_name`` column): at once, or not before `not_before`."""
        if not intent.name.startswith(f"{self.name}."):
            raise ValueError(
                f"plugin {self.name!r} queues only its own intents ({self.name}.*), "
                f"got {intent.name!r}"
            )
        return NewItem(
            event_id=event_id or new_id(),
            event_type=intent.name,
            event_data=intent_data(intent),
            channel=channel,
            plugin=self.name,
            operation_type=operation,
            priority=policy.priority,
            tags=policy.tags,
            max_retries=policy.max_retries,
            retry_delay=policy.initial,
            backoff_multiplier=policy.multiplier,
            max_delay=policy.max_delay,
            jitter=policy.jitter,
            attempt_timeout=policy.attempt_timeout,
            not_before=not_before,
        )

    async def schedule(self, item: NewItem, *, timeout: float = 30.0) -> bool:
        """Queue `item` through the retry capture: durable before it returns (in the
        queue, or in the local spool while PostgreSQL is away). True if it is new."""
        capture = self.registry.lookup(CAPTURE_NAME)
        is_new: bool = await capture.ask(ScheduleRetry(item=item), timeout=timeout)
        return is_new

    async def say(
        self,
        channel: str,
        text: str,
        *,
        to: str | None = None,
        requeue: bool = True,
        hold: float | None = None,
        timeout: float = 30.0,
        event_id: str | None = None,
    ) -> Delivered:
        """Say `text` in `channel` (by PM to `to`) through the room's connection, paced like
        every line of the bot; returns once the server echoed it.

        Raises `NotConnected` (no room for `channel` here), `SendFailed` (no echo, refused;
        `CannotSpeak` when the bot cannot speak there) or `AskTimeout`. With `requeue` the
        connection queues a failed send for a retry (``cytube.say``); a plugin that records
        the delivery itself passes False and retries on its own.
        """
        ref = self.registry.get(connection_name(channel))
        if ref is None:
            raise NotConnected(f"plugin {self.name}: no connection for channel {channel!r}")
        ids: dict[str, Any] = {"requeue": requeue, "hold": hold}
        if event_id is not None:
            ids["event_id"] = event_id
        request: SendChat | SendPrivate = (
            SendChat(msg=text, **ids) if to is None else SendPrivate(to=to, msg=text, **ids)
        )
        delivered: Delivered = await ref.ask(request, timeout=timeout)
        return delivered
