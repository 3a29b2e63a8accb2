"""The ``failure-log`` actor: writes every failure event on the bus to the log."""

from __future__ import annotations

import logging
from typing import Any

from daz_actors.retry.outcomes import RetryOutcome
from daz_actors.retry.params import FailureLogParams as FailureLogParams
from daz_actors.runtime.actor import Actor, Startable, actor_factory
from daz_actors.runtime.bus import Overflow, Published
from daz_actors.runtime.events import ActorFailed, FailureBatch, FailureEvent
from daz_actors.runtime.kinds import BuildContext
from daz_actors.runtime.log_summary import RepeatedWarnings

__all__ = ["FailureLog", "FailureLogParams", "build_failure_log"]

log = logging.getLogger("daz_actors.failures")
# one line per topic and error code per interval: an outage fails every call the same way
repeated = RepeatedWarnings(log)


class FailureLog(Actor):
    """Subscribes to failure topics and logs each event with its correlation id."""

    def __init__(self, params: FailureLogParams) -> None:
        self.params = params
        self.logged = 0

    async def on_start(self) -> None:
        bus = self.ctx.bus
        # Subscriptions belong to the child slot's ref, which outlives this incarnation;
        # drop any left by the previous incarnation so events are not logged twice.
        for sub in bus.subscriptions():
            if sub.ref is self.ctx.ref:
                bus.unsubscribe(sub)
        for pattern in self.params.patterns:
            bus.subscribe(pattern, self.ctx.ref, overflow=Overflow.DROP)

    async def handle(self, message: Any) -> Any:
        if not isinstance(message, Published):
            raise TypeError(f"failure-log takes bus events, not {type(message).__name__}")
        event = message.event
        if isinstance(event, RetryOutcome):  # the worker logged it already
            return self.logged
        self.logged += 1
        if isinstance(event, FailureEvent):
            repeated.warning(
                f"{message.topic} {event.error_code}",
                "%s from %s: %s (code %s, %s, correlation %s)",
                message.topic,
                event.source,
                event.error,
                event.error_code,
                "retryable" if event.retryable else "permanent",
                event.correlation_id,
                extra={
                    "actor": event.source,
                    "correlation_id": event.correlation_id,
                    "event_id": event.event_id,
                    "channel": event.channel,
                    "error": event.error,
                },
            )
        elif isinstance(event, FailureBatch) and event.events:
            first = event.events[0]
            repeated.warning(
                f"{message.topic} {first.error_code}",
                "%s from %s: %d failures: %s (code %s, %s)",
                message.topic,
                first.source,
                len(event.events),
                first.error,
                first.error_code,
                "retryable" if first.retryable else "permanent",
                extra={"actor": first.source, "channel": first.channel, "error": first.error},
            )
        elif isinstance(event, ActorFailed):
            log.warning(
                "%s: %s crashed (incarnation %d): %s",
                message.topic,
                event.actor,
                event.incarnation,
                event.error,
            )
        else:
            log.warning("%s: %r", message.topic, event)
        return self.logged


def build_failure_log(params: FailureLogParams, _ctx: BuildContext) -> Startable:
    """Factory of the ``failure-log`` kind."""
    return actor_factory(lambda: FailureLog(params))
