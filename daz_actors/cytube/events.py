"""Typed CyTube events and requests, shared by the connection actor and the event router.

Incoming events are what the connection actor turns server frames into; it sends each to
its room's event router (registered as ``room:<channel>/event-router``). Outgoing
requests go to the connection actor (``room:<channel>/connection``) by `ask`.
"""

from __future__ import annotations

import enum
import time
from typing import Any

import attrs

from daz_actors.runtime.events import new_id

__all__ = [
    "ChatMessage",
    "ConnectionState",
    "ConnectionStatus",
    "Delivered",
    "ErrorMessage",
    "Kicked",
    "LoginResult",
    "MediaChanged",
    "MediaUpdate",
    "PrivateMessage",
    "SendChat",
    "SendPrivate",
    "User",
    "UserJoined",
    "UserLeft",
    "UserList",
]

CHAT_LIMIT = 320  # characters: CyTube cuts longer messages


@attrs.frozen(kw_only=True)
class User:
    """A user in the channel."""

    name: str
    rank: float = 0  # CyTube ranks: -1 anonymous, 0 guest, 1 registered, 2 moderator, ...


@attrs.frozen(kw_only=True)
class ChatMessage:
    """``chatMsg``: a line in the channel chat."""

    channel: str
    username: str
    msg: str
    time: int  # server time, milliseconds since the epoch
    history: bool = False  # replayed by the server on join: record it, do not answer it
    meta: dict[str, Any] = attrs.field(factory=dict)

    def poison_key(self) -> tuple[object, ...]:
        """The same for the live line and its replays (see runtime/poison.py)."""
        return ("chatMsg", self.channel, self.username, self.time, self.msg)


@attrs.frozen(kw_only=True)
class PrivateMessage:
    """``pm``: a private message to (or echoed from) the bot."""

    channel: str
    username: str  # the sender
    to: str  # the recipient
    msg: str
    time: int

    def poison_key(self) -> tuple[object, ...]:
        """The same for every copy of this message (see runtime/poison.py)."""
        return ("pm", self.channel, self.username, self.to, self.time, self.msg)


@attrs.frozen(kw_only=True)
class UserJoined:
    """``addUser``."""

    channel: str
    user: User
    # wall-clock seconds the bot received it: part of its log row's id (it carries no
    # server time), stamped once so a redelivered event is still the same row
    received_at: float = attrs.field(factory=time.time, eq=False)


@attrs.frozen(kw_only=True)
class UserLeft:
    """``userLeave``."""

    channel: str
    name: str
    received_at: float = attrs.field(factory=time.time, eq=False)  # as UserJoined's


@attrs.frozen(kw_only=True)
class UserList:
    """``userlist``: everyone in the channel, sent after joining."""

    channel: str
    users: tuple[User, ...]


@attrs.frozen(kw_only=True)
class MediaChanged:
    """``changeMedia``: something new is playing."""

    channel: str
    title: str
    media_id: str
    media_type: str
    seconds: float
    received_at: float = attrs.field(factory=time.time, eq=False)  # as UserJoined's


@attrs.frozen(kw_only=True)
class MediaUpdate:
    """``mediaUpdate``: the playback position (sent every few seconds while playing)."""

    channel: str
    current_time: float
    paused: bool


@attrs.frozen(kw_only=True)
class LoginResult:
    """``login``: whether the bot's login worked (a failed one means chat is dropped)."""

    channel: str
    success: bool
    name: str | None = None
    error: str | None = None


@attrs.frozen(kw_only=True)
class ErrorMessage:
    """``errorMsg``, ``cooldown``, ``spamFiltered`` and other complaints from the server."""

    channel: str
    kind: str  # the event name
    msg: str


@attrs.frozen(kw_only=True)
class Kicked:
    """``kick``: the server removed the bot."""

    channel: str
    reason: str


class ConnectionStatus(enum.Enum):
    """Where a room's connection is."""

    CONNECTING = "connecting"
    JOINED = "joined"  # joined, logged in if a name is configured
    LOGIN_FAILED = "login_failed"  # connected but the login was refused: chat is dropped
    DISCONNECTED = "disconnected"  # waiting out the reconnect backoff


@attrs.frozen(kw_only=True)
class ConnectionState:
    """Published on ``cytube.<channel>.state`` when a connection's status changes."""

    channel: str
    status: ConnectionStatus
    reason: str = ""


@attrs.frozen(kw_only=True)
class SendChat:
    """Ask the connection to say `msg` in the channel (split at 320 characters).

    The reply is `Delivered` once the server echoed every part; otherwise the send fails,
    a ``cytube.send.failed`` event is published and the queue retries it.
    """

    msg: str
    event_id: str = attrs.field(factory=new_id)  # idempotency key if it is retried
    correlation_id: str = attrs.field(factory=new_id)
    delivered_parts: int = 0  # leading parts already delivered (a retry): not sent again


@attrs.frozen(kw_only=True)
class SendPrivate:
    """Ask the connection to send a private message."""

    to: str
    msg: str
    event_id: str = attrs.field(factory=new_id)
    correlation_id: str = attrs.field(factory=new_id)
    delivered_parts: int = 0  # leading parts already delivered (a retry): not sent again


@attrs.frozen(kw_only=True)
class Delivered:
    """The reply to a `SendChat`/`SendPrivate` whose every part the server echoed."""

    parts: int
