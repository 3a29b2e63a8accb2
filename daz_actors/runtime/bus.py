"""The event bus: dotted topics, glob patterns, bounded delivery into subscriber mailboxes.

Topics are dotted names (``sql.exec.failed``). Patterns use shell-style globs matched
against the whole topic, so ``*`` may span dots: ``*.failed`` matches
``sql.exec.failed`` and ``sql.*`` matches every topic under ``sql.``.

Delivery policy when a subscriber's mailbox is full is chosen per subscription:

- `Overflow.BLOCK`: the publisher waits for room (backpressure; nothing is lost). For
  subscribers that must see every event, such as the retry subsystem.
- `Overflow.DROP`: the event is not delivered to that subscriber; the drop is counted on
  the subscription and on the bus, and logged (at most once per subscription per
  `DROP_LOG_INTERVAL` seconds). For observers that can miss an event.

A subscriber whose actor was stopped for good is unsubscribed on the next publish.
"""

from __future__ import annotations

import enum
import fnmatch
import logging
import re
from typing import Any

import attrs
import trio

from daz_actors.runtime.errors import ActorStopped
from daz_actors.runtime.ref import ActorRef

__all__ = ["EventBus", "Overflow", "Published", "Subscription"]

log = logging.getLogger("daz_actors.bus")

DROP_LOG_INTERVAL = 10.0
_MAX_CACHED_ROUTES = 4096
_TOPIC = re.compile(r"^[A-Za-z0-9_:\-]+(\.[A-Za-z0-9_:\-]+)*$")


class Overflow(enum.Enum):
    """What publishing does when a subscriber's mailbox is full."""

    BLOCK = "block"
    DROP = "drop"


@attrs.frozen(kw_only=True)
class Published:
    """What a subscriber receives: the topic an event was published on, and the event."""

    topic: str  # the concrete topic, e.g. "sql.exec.failed"
    event: Any  # the event object (an attrs instance)


@attrs.define(kw_only=True, eq=False)
class Subscription:
    """One subscriber's interest in a pattern."""

    pattern: str  # glob over the whole topic
    ref: ActorRef  # where matching events are delivered
    overflow: Overflow  # policy when the subscriber's mailbox is full
    dropped: int = 0  # events not delivered because the mailbox was full
    delivered: int = 0  # events delivered
    _matcher: re.Pattern[str] = attrs.field(init=False, repr=False)
    _last_drop_log: float = attrs.field(init=False, default=float("-inf"), repr=False)

    def __attrs_post_init__(self) -> None:
        self._matcher = re.compile(fnmatch.translate(self.pattern))

    def matches(self, topic: str) -> bool:
        """True if `topic` matches this subscription's pattern."""
        return self._matcher.match(topic) is not None


def validate_topic(topic: str) -> None:
    """Raise ValueError unless `topic` is a dotted name."""
    if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):  # "$" allows a final \n
        raise ValueError(f"invalid topic {topic!r}: expected dotted names like 'sql.exec.failed'")


class EventBus:
    """Publish/subscribe between actors by topic pattern."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._routes: dict[str, tuple[Subscription, ...]] = {}
        self.published = 0  # events published
        self.dropped = 0  # deliveries dropped by DROP subscriptions, all together

    def subscribe(
        self, pattern: str, ref: ActorRef, *, overflow: Overflow = Overflow.DROP
    ) -> Subscription:
        """Deliver events whose topic matches `pattern` to `ref` as `Published` messages."""
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"invalid topic pattern {pattern!r}")
        sub = Subscription(pattern=pattern, ref=ref, overflow=overflow)
        self._subscriptions.append(sub)
        self._routes.clear()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering to `sub` (no error if already gone)."""
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)
            self._routes.clear()

    def subscriptions(self) -> list[Subscription]:
        """The current subscriptions."""
        return list(self._subscriptions)

    def _route(self, topic: str) -> tuple[Subscription, ...]:
        route = self._routes.get(topic)
        if route is None:
            validate_topic(topic)
            route = tuple(s for s in self._subscriptions if s.matches(topic))
            if len(self._routes) >= _MAX_CACHED_ROUTES:
                self._routes.clear()
            self._routes[topic] = route
        return route

    async def publish(self, topic: str, event: Any) -> int:
        """Deliver `event` to every matching subscriber; returns how many got it."""
        route = self._route(topic)  # validates the topic before anything is counted
        self.published += 1
        message = Published(topic=topic, event=event)
        delivered = 0
        for sub in route:
            try:
                if sub.overflow is Overflow.BLOCK:
                    await sub.ref.send(message)
                elif not sub.ref.try_send(message):
                    self._count_drop(sub, topic)
                    continue
            except ActorStopped:
                self.unsubscribe(sub)
                continue
            sub.delivered += 1
            delivered += 1
        return delivered

    def _count_drop(self, sub: Subscription, topic: str) -> None:
        sub.dropped += 1
        self.dropped += 1
        now = trio.current_time()
        if now - sub._last_drop_log >= DROP_LOG_INTERVAL:
            sub._last_drop_log = now
            log.warning(
                "subscriber %r is slow: dropped event on %r (%d dropped so far)",
                sub.ref.name,
                topic,
                sub.dropped,
            )
