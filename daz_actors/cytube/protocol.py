"""CyTube's Socket.IO events turned into typed events, and outgoing text into parts.

Pure functions, no I/O: the connection actor feeds them decoded `Event` packets.
"""

from __future__ import annotations

from typing import Any

from daz_actors.cytube.events import (
    CHAT_LIMIT,
    ChannelOptions,
    ChatMessage,
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
    QueuedMedia,
    User,
    UserJoined,
    UserLeft,
    UserList,
    UserRank,
)

__all__ = ["split_message", "to_typed_event"]

ERROR_EVENTS = ("errorMsg", "spamFiltered", "noflood", "errorMessage")


SEPARATOR = " | "  # a list's separator (`!help`): a long list is cut there first


def split_message(msg: str, limit: int = CHAT_LIMIT) -> list[str]:
    """Cut `msg` into parts of at most `limit` characters: at a `` | `` separator in the
    second half of a part where there is one (the separator is dropped), else at spaces
    where possible."""
    text = msg.strip()
    if not text:
        raise ValueError("a chat message must not be empty")
    parts: list[str] = []
    while len(text) > limit:
        cut = text.rfind(SEPARATOR, 0, limit + 1 - len(SEPARATOR))
        skip = len(SEPARATOR)
        if cut <= limit // 2:
            cut, skip = text.rfind(" ", 0, limit + 1), 1
        if cut <= limit // 2:  # no good space: cut hard
            cut, skip = limit, 0
        parts.append(text[:cut].rstrip())
        text = text[cut + skip :].lstrip()
    if text:
        parts.append(text)
    return parts


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _num(value: Any, default: float = 0) -> float:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
    )


def _user(data: dict[str, Any]) -> User:
    return User(name=_str(data.get("name")), rank=_num(data.get("rank")))


def _queued(item: Any) -> QueuedMedia:
    """A playlist item ``{media: {id, title, seconds, type}, uid, queueby}``."""
    d = _dict(item)
    media = _dict(d.get("media"))
    return QueuedMedia(
        uid=int(_num(d.get("uid"))),
        media_id=_str(media.get("id")),
        media_type=_str(media.get("type")),
        title=_str(media.get("title")),
        seconds=_num(media.get("seconds")),
        queued_by=_str(d.get("queueby")),
    )


def to_typed_event(channel: str, name: str, args: tuple[Any, ...], *, history: bool) -> object:
    """The typed event for Socket.IO event `name`, or None for events the bot ignores."""
    data = args[0] if args else None
    d = _dict(data)
    if name == "chatMsg":
        return ChatMessage(
            channel=channel,
            username=_str(d.get("username")),
            msg=_str(d.get("msg")),
            time=int(_num(d.get("time"))),
            history=history,
            meta=_dict(d.get("meta")),
        )
    if name == "pm":
        return PrivateMessage(
            channel=channel,
            username=_str(d.get("username")),
            to=_str(d.get("to")),
            msg=_str(d.get("msg")),
            time=int(_num(d.get("time"))),
        )
    if name == "addUser":
        return UserJoined(channel=channel, user=_user(d))
    if name == "userLeave":
        return UserLeft(channel=channel, name=_str(d.get("name")))
    if name == "userlist":
        users = data if isinstance(data, list) else []
        return UserList(channel=channel, users=tuple(_user(_dict(u)) for u in users))
    if name == "changeMedia":
        return MediaChanged(
            channel=channel,
            title=_str(d.get("title")),
            media_id=_str(d.get("id")),
            media_type=_str(d.get("type")),
            seconds=_num(d.get("seconds")),
        )
    if name == "playlist":
        items = data if isinstance(data, list) else []
        return PlaylistQueued(channel=channel, items=tuple(_queued(i) for i in items), full=True)
    if name == "queue":
        return PlaylistQueued(channel=channel, items=(_queued(d.get("item")),), full=False)
    if name == "mediaUpdate":
        return MediaUpdate(
            channel=channel,
            current_time=_num(d.get("currentTime")),
            paused=bool(d.get("paused", False)),
        )
    if name == "login":
        return LoginResult(
            channel=channel,
            success=d.get("success") is True,
            name=d.get("name") if isinstance(d.get("name"), str) else None,
            error=d.get("error") if isinstance(d.get("error"), str) else None,
        )
    if name == "setUserRank":
        return UserRank(channel=channel, name=_str(d.get("name")), rank=_num(d.get("rank")))
    if name == "rank":
        return OwnRank(channel=channel, rank=_num(data, -1))
    if name == "channelOpts":
        return ChannelOptions(channel=channel, options=d)
    if name == "needPassword":
        return PasswordRequest(channel=channel, wrong=data is True)
    if name == "cancelNeedPassword":
        return PasswordAccepted(channel=channel)
    if name == "cooldown":  # a bare number of ms (1000 / sustained)
        return Cooldown(channel=channel, wait_ms=_num(data, _num(d.get("time"), 1000)))
    if name in ERROR_EVENTS:
        text = _str(d.get("msg")) or _str(data) or name
        return ErrorMessage(channel=channel, kind=name, msg=text)
    if name == "kick":
        return Kicked(channel=channel, reason=_str(d.get("reason")) or _str(data))
    return None
