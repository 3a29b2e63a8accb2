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

from daz_actors.cytube.text import reader_text
from daz_actors.runtime.events import new_id

__all__ = [
    "ON_PURPOSE",
    "ChannelOptions",
    "ChatMessage",
    "ConnectionState",
    "ConnectionStatus",
    "Cooldown",
    "Delivered",
    "ErrorMessage",
    "Kicked",
    "LoginResult",
    "MediaChanged",
    "MediaUpdate",
    "OwnRank",
    "PasswordAccepted",
    "PasswordRequest",
    "PlaylistQueued",
    "PrivateMessage",
    "QueuedMedia",
    "SendChat",
    "SendPrivate",
    "User",
    "UserJoined",
    "UserLeft",
    "UserList",
    "UserRank",
]

CHAT_LIMIT = 320  # characters: CyTube cuts longer messages


@attrs.frozen(kw_only=True)
class User:
    """A user in the channel."""

    name: str
    rank: float = 0  # CyTube ranks: -1 anonymous, 0 guest, 1 registered, 2 moderator, ...


def _reader(self: Any) -> str:
    return reader_text(self.msg)


@attrs.frozen(kw_only=True)
class ChatMessage:
    """``chatMsg``: a line in the channel chat."""

    channel: str
    username: str
    msg: str  # the server's raw text: HTML-escaped, filtered (links as <a> tags)
    time: int  # server time, milliseconds since the epoch
    history: bool = False  # replayed by the server on join: record it, do not answer it
    meta: dict[str, Any] = attrs.field(factory=dict)
    # the same (user, time, text) seen before in this session's live lines (or in this
    # join's history): 0 for the first. Two identical lines in one millisecond are 1 and 2.
    seq: int = 0
    text: str = attrs.field(default=attrs.Factory(_reader, takes_self=True))  # as read

    def poison_key(self) -> tuple[object, ...]:
        """The same for the live line and its replays (see runtime/poison.py)."""
        return ("chatMsg", self.channel, self.username, self.time, self.msg)


@attrs.frozen(kw_only=True)
class PrivateMessage:
    """``pm``: a private message to (or echoed from) the bot."""

    channel: str
    username: str  # the sender
    to: str  # the recipient
    msg: str  # the server's raw text
    time: int
    seq: int = 0  # as ChatMessage's
    text: str = attrs.field(default=attrs.Factory(_reader, takes_self=True))  # as read

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
class UserRank:
    """``setUserRank``: a user's channel rank (after ``addUser``, and on every promotion or
    demotion)."""

    channel: str
    name: str
    rank: float


@attrs.frozen(kw_only=True)
class OwnRank:
    """``rank``: the bot's own effective rank (on connect, after login, on join, on a
    promotion or demotion)."""

    channel: str
    rank: float


@attrs.frozen(kw_only=True)
class ChannelOptions:
    """``channelOpts``: the channel's options (on join and on every change); the bot uses
    ``chat_antiflood`` and ``chat_antiflood_params``."""

    channel: str
    options: dict[str, Any]


@attrs.frozen(kw_only=True)
class PasswordRequest:
    """``needPassword``: the channel has a password and has not let the bot in."""

    channel: str
    wrong: bool  # true when a password was given and refused


@attrs.frozen(kw_only=True)
class PasswordAccepted:
    """``cancelNeedPassword``: the channel password (or the bot's rank) was accepted."""

    channel: str


@attrs.frozen(kw_only=True)
class Cooldown:
    """``cooldown``: the server refused one of our lines (its rate limiter); the payload is
    only the wait in ms (1000 / sustained), nothing says which line."""

    channel: str
    wait_ms: float


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
class QueuedMedia:
    """One item of the channel's playlist (``playlist`` and ``queue`` carry them)."""

    uid: int  # the playlist item's id in the server
    media_id: str
    media_type: str
    title: str
    seconds: float
    queued_by: str  # "" when the server does not say


@attrs.frozen(kw_only=True)
class PlaylistQueued:
    """``playlist`` (the whole playlist, when the bot joins: `full`) or ``queue`` (one item
    added): who queued what, for the plugins that want to know (mediatracker)."""

    channel: str
    items: tuple[QueuedMedia, ...]
    full: bool


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

    CONNECTING = "connecting"  # until the server has let the bot in (its userlist came)
    JOINED = "joined"  # let in (userlist received), logged in if a name is configured
    LOGIN_FAILED = "login_failed"  # in the channel, login refused for good: read only
    LOGIN_RETRY = "login_retry"  # in the channel, login refused for now: tried again later
    PASSWORD_REFUSED = "password_refused"  # channel password wrong or missing: retried rarely
    DUPLICATE_LOGIN = "duplicate_login"  # kicked: our account joined from elsewhere
    DISCONNECTED = "disconnected"  # waiting out the reconnect backoff


# states a room stays in on purpose until its own timer ends: restarting it changes nothing
ON_PURPOSE = frozenset(
    {
        ConnectionStatus.LOGIN_FAILED,
        ConnectionStatus.LOGIN_RETRY,
        ConnectionStatus.PASSWORD_REFUSED,
        ConnectionStatus.DUPLICATE_LOGIN,
    }
)


@attrs.frozen(kw_only=True)
class ConnectionState:
    """Published on ``cytube.<channel>.state`` when a connection's status changes."""

    channel: str
    status: ConnectionStatus
    reason: str = ""
    can_speak: bool = False  # joined and logged in: chat lines and PMs can be sent


@attrs.frozen(kw_only=True)
class SendChat:
    """Ask the connection to say `msg` in the channel (split at 320 characters).

    The reply is `Delivered` once the server echoed every part; otherwise the send fails,
    a ``cytube.send.failed`` event is published and the queue retries it.
    """

    msg: str
    event_id: str = attrs.field(factory=new_id)  # idempotency key if it is retried
    correlation_id: str = attrs.field(factory=new_id)
    hold: float | None = None  # seconds it may wait for the bot to be able to speak
    delivered_parts: int = 0  # leading parts already delivered (a retry): not sent again
    # a failed send is queued (``cytube.say``); False: the asker retries it itself (a
    # plugin that records the delivery, see docs/plugins.md)
    requeue: bool = True


@attrs.frozen(kw_only=True)
class SendPrivate:
    """Ask the connection to send a private message."""

    to: str
    msg: str
    event_id: str = attrs.field(factory=new_id)
    correlation_id: str = attrs.field(factory=new_id)
    hold: float | None = None  # as SendChat's
    delivered_parts: int = 0  # leading parts already delivered (a retry): not sent again
    requeue: bool = True  # as SendChat's


@attrs.frozen(kw_only=True)
class Delivered:
    """The reply to a `SendChat`/`SendPrivate` whose every part the server echoed."""

    parts: int
