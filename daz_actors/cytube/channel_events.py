"""What happens in a channel, on the bus: the typed events plugins (and anyone) subscribe to.

The event router publishes each live event of its room once it has handled it, on a topic
``channel.<channel>.<kind>``:

======== ================ ===============================================================
kind     event            when
======== ================ ===============================================================
join     `UserJoined`     a user joined (``addUser``; its rank is the global one)
leave    `UserLeft`       a user left
line     `ChatMessage`    a live chat line (never a line the server replays on join); the
                          bot's own lines too (``username`` is then the bot's name)
media    `MediaChanged`   something new plays
rank     `UserRank`       a user's channel rank (after ``addUser``, on promotion/demotion)
users    `UserList`       everyone present, when the bot (re)joins
queue    `PlaylistQueued` the playlist when the bot (re)joins (``full``), or one item added:
                          who queued what
======== ================ ===============================================================

Subscribe with ``bus.subscribe(channel_topic("lobby", ChannelEventKind.JOIN), ref)`` or,
for every channel, ``bus.subscribe(channel_pattern(ChannelEventKind.LINE), ref)``. The
subscriber gets `Published` messages whose ``event`` is the typed event.
"""

from __future__ import annotations

import enum

from daz_actors.cytube.events import (
    ChatMessage,
    MediaChanged,
    PlaylistQueued,
    UserJoined,
    UserLeft,
    UserList,
    UserRank,
)

__all__ = [
    "ChannelEvent",
    "ChannelEventKind",
    "channel_pattern",
    "channel_topic",
    "topic_of",
]

ChannelEvent = (
    UserJoined | UserLeft | ChatMessage | MediaChanged | UserRank | UserList | PlaylistQueued
)


class ChannelEventKind(enum.Enum):
    """The last part of a channel event's topic."""

    JOIN = "join"
    LEAVE = "leave"
    LINE = "line"
    MEDIA = "media"
    RANK = "rank"
    USERS = "users"
    QUEUE = "queue"


_KINDS: dict[type, ChannelEventKind] = {
    UserJoined: ChannelEventKind.JOIN,
    UserLeft: ChannelEventKind.LEAVE,
    ChatMessage: ChannelEventKind.LINE,
    MediaChanged: ChannelEventKind.MEDIA,
    UserRank: ChannelEventKind.RANK,
    UserList: ChannelEventKind.USERS,
    PlaylistQueued: ChannelEventKind.QUEUE,
}


def channel_topic(channel: str, kind: ChannelEventKind) -> str:
    """``channel.<channel>.<kind>``."""
    return f"channel.{channel}.{kind.value}"


def channel_pattern(kind: ChannelEventKind) -> str:
    """The pattern matching `kind` in every channel."""
    return f"channel.*.{kind.value}"


def topic_of(event: object) -> str | None:
    """The topic `event` is published on, or None (not a channel event, or a chat line the
    server replayed on join)."""
    kind = _KINDS.get(type(event))
    if kind is None or (isinstance(event, ChatMessage) and event.history):
        return None
    channel: str = event.channel  # type: ignore[attr-defined]
    return channel_topic(channel, kind)
