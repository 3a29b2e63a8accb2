"""Every event from the chat server checked at the protocol boundary, before it is typed.

`check_event` takes a decoded event's name and arguments and returns them in the shape
`protocol.to_typed_event` reads, or raises `MalformedEvent` naming what was wrong:

- a missing or wrong-typed required field drops the event (the connection counts it by
  event and reason and logs a warning);
- every string (keys included) is made storable: NUL and lone surrogates become U+FFFD;
- names, lines, titles and meta are cut at the limits below;
- a chat or PM time outside a sane window is replaced by the receive time.

Whatever was changed is reported as flags (counted by the connection); a chat line's
flags are also kept in its stored meta under ``daz_flags``. See docs/chat-log.md.
"""

from __future__ import annotations

import json
import math
from typing import Any

import attrs

from daz_actors.cytube.chat_text import storable_text, unstorable
from daz_actors.runtime.errors import DazActorsError

__all__ = [
    "CHAT_STORE_LIMIT",
    "EARLIEST_MS",
    "FLAGS_KEY",
    "FUTURE_SLACK_MS",
    "META_LIMIT",
    "NAME_LIMIT",
    "TITLE_LIMIT",
    "Checked",
    "MalformedEvent",
    "check_event",
]

NAME_LIMIT = 20  # characters of a user name: CyTube's are 1-20 of [A-Za-z0-9_-]
# characters of a chat line or PM: CyTube cuts lines at 320 characters, then HTML-escapes
# them (an escaped character takes up to 6) and turns links into <a> tags
CHAT_STORE_LIMIT = 2048
TITLE_LIMIT = 1000  # characters of a media title or media id
META_LIMIT = 4096  # characters of a chat line's meta object written as JSON
EARLIEST_MS = 946_684_800_000  # 2000-01-01 UTC: no CyTube server is older
FUTURE_SLACK_MS = 86_400_000  # a server clock up to a day ahead of ours is believed
FLAGS_KEY = "daz_flags"  # where a stored chat line's meta keeps what was changed


class MalformedEvent(DazActorsError, ValueError):
    """An event from the server lacks a required field or has one of the wrong type."""

    def __init__(self, event: str, reason: str) -> None:
        super().__init__(f"{event}: {reason}")
        self.event = event  # the event name
        self.reason = reason  # e.g. "missing_username", "wrong_type_time", "not_an_object"


@attrs.frozen(kw_only=True)
class Checked:
    """An event's arguments, made safe, and what had to be changed in them."""

    args: tuple[Any, ...]
    flags: tuple[str, ...] = ()  # e.g. "text_replaced", "msg_cut", "time_replaced"


def _scrub(value: Any, flags: set[str]) -> Any:
    """`value` with every string storable (depth is bounded by the codec's MAX_DEPTH)."""
    if isinstance(value, str):
        if unstorable(value):
            flags.add("text_replaced")
            return storable_text(value)
        return value
    if isinstance(value, dict):
        return {_scrub(k, flags): _scrub(v, flags) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, flags) for v in value]
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _Fields:
    """Reads one event's object, raising `MalformedEvent` for what it must have."""

    def __init__(self, event: str, data: object, flags: set[str]) -> None:
        if not isinstance(data, dict):
            raise MalformedEvent(event, "not_an_object")
        self.event, self.data, self.flags = event, dict(data), flags

    def _get(self, key: str, kind: str, *, required: bool = True) -> Any:
        if key not in self.data:
            if required:
                raise MalformedEvent(self.event, f"missing_{key}")
            return None
        value = self.data[key]
        ok = {
            "str": isinstance(value, str),
            "name": isinstance(value, str) and value != "",
            "number": _is_number(value),
            "bool": isinstance(value, bool),
        }[kind]
        if not ok:
            raise MalformedEvent(self.event, f"wrong_type_{key}")
        return value

    def text(self, key: str, limit: int, *, name: bool = False, flag: str = "") -> None:
        value: str = self._get(key, "name" if name else "str")
        if len(value) > limit:
            self.flags.add(flag or f"{key}_cut")
            self.data[key] = value[:limit]

    def number(self, key: str, *, required: bool = True) -> None:
        self._get(key, "number", required=required)

    def flag(self, key: str) -> None:
        self._get(key, "bool")

    def time(self, received_ms: int) -> None:
        value = self._get("time", "number")
        if not EARLIEST_MS <= value <= received_ms + FUTURE_SLACK_MS:
            self.flags.add("time_replaced")
            value = received_ms
        self.data["time"] = int(value)

    def meta(self) -> None:
        meta = self.data.get("meta", {})
        if not isinstance(meta, dict) or len(json.dumps(meta, ensure_ascii=False)) > META_LIMIT:
            self.flags.add("meta_dropped")
            meta = {}
        self.data["meta"] = meta


def _user_entry(event: str, entry: object, flags: set[str]) -> dict[str, Any]:
    user = _Fields(event, entry, flags)
    user.text("name", NAME_LIMIT, name=True)
    user.number("rank", required=False)
    return user.data


def _playlist_item(event: str, entry: object, flags: set[str]) -> dict[str, Any]:
    """``{media: {id, title, seconds, type}, uid, queueby}``: media id and type required."""
    item = _Fields(event, entry, flags)
    media = _Fields(event, item.data.get("media"), flags)
    media.text("id", TITLE_LIMIT)
    media.text("type", NAME_LIMIT)
    if "title" in media.data:
        media.text("title", TITLE_LIMIT)
    media.number("seconds", required=False)
    item.number("uid", required=False)
    if "queueby" in item.data:
        item.text("queueby", NAME_LIMIT)
    return {**item.data, "media": media.data}


def check_event(name: str, args: tuple[Any, ...], *, received_ms: int) -> Checked:
    """`args` of event `name` checked and made safe; `MalformedEvent` if unusable."""
    flags: set[str] = set()
    args = tuple(_scrub(arg, flags) for arg in args)
    first = args[0] if args else None
    rest = args[1:]
    if name in ("chatMsg", "pm"):
        fields = _Fields(name, first, flags)
        fields.text("username", NAME_LIMIT, name=True)
        if name == "pm":
            fields.text("to", NAME_LIMIT, name=True)
        fields.text("msg", CHAT_STORE_LIMIT)
        fields.time(received_ms)
        if name == "chatMsg":
            fields.meta()
            if flags:
                fields.data["meta"] = {**fields.data["meta"], FLAGS_KEY: sorted(flags)}
        first = fields.data
    elif name == "addUser":
        first = _user_entry(name, first, flags)
    elif name == "userLeave":
        fields = _Fields(name, first, flags)
        fields.text("name", NAME_LIMIT, name=True)
        first = fields.data
    elif name == "userlist":
        if not isinstance(first, list):
            raise MalformedEvent(name, "not_an_array")
        first = [_user_entry(name, entry, flags) for entry in first]
    elif name == "changeMedia":
        fields = _Fields(name, first, flags)
        fields.text("title", TITLE_LIMIT)
        fields.text("id", TITLE_LIMIT)
        fields.text("type", NAME_LIMIT)
        fields.number("seconds")
        first = fields.data
    elif name == "playlist":
        if not isinstance(first, list):
            raise MalformedEvent(name, "not_an_array")
        first = [_playlist_item(name, item, flags) for item in first]
    elif name == "queue":
        fields = _Fields(name, first, flags)
        fields.data["item"] = _playlist_item(name, fields.data.get("item"), flags)
        first = fields.data
    elif name == "mediaUpdate":
        fields = _Fields(name, first, flags)
        fields.number("currentTime")
        fields.flag("paused")
        first = fields.data
    elif name == "login":
        _Fields(name, first, flags).flag("success")
    else:
        return Checked(args=args, flags=tuple(sorted(flags)))
    return Checked(args=(first, *rest), flags=tuple(sorted(flags)))
