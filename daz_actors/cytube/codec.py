"""Engine.IO v4 / Socket.IO v4 text frames, as a CyTube client sees them over a websocket.

Pure: no I/O. One websocket text message holds one Engine.IO packet, a type digit and
its data:

- ``0{json}`` open (the handshake, `OpenPacket`), ``1`` close, ``2`` ping, ``3`` pong
  (both may carry data such as ``probe``), ``5`` upgrade, ``6`` noop;
- ``4`` message, whose data is one Socket.IO packet:
  ``<type>[<namespace>,][<ack id>][<json>]`` with types ``0`` connect, ``1`` disconnect,
  ``2`` event (``42["chatMsg",{...}]``, ``42/ns,7["x"]``), ``3`` ack, ``4`` connect error.
  Binary events and acks (``5``, ``6``) are rejected: CyTube sends none.

`decode` turns a frame into a frozen packet and `encode` does the reverse. Any input that
is not a valid frame raises `FrameError`, never anything else. Sizes count characters, not
the UTF-8 bytes Engine.IO's ``maxPayload`` counts. JSON nested deeper than `MAX_DEPTH`
arrays and objects is refused where it is decoded (no consumer ever recurses that deep).

Every encoded frame is valid UTF-8: JSON strings holding a lone surrogate (which a
peer's ``"\\ud800"`` escape can produce) are written with JSON escapes, as
``JSON.stringify`` does, and text written raw (namespaces, ping data) may not hold one:
such a packet cannot be built (`FrameError`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, TypeAlias

import attrs

from daz_actors.runtime.errors import DazActorsError

DEFAULT_MAX_PAYLOAD = 1_048_576  # characters; what CyTube's servers announce, in bytes
MAX_ACK_ID = 2**53 - 1  # JavaScript's largest safe integer
MAX_DEPTH = 32  # arrays and objects nested in one payload; CyTube's frames use under 8
_EXCERPT = 40  # characters of a bad frame quoted in its error message
_ACK_DIGITS = re.compile(r"[0-9]+")
_SURROGATE = re.compile("[\ud800-\udfff]")  # a lone UTF-16 half, from a JSON "\udxxx" escape


class FrameError(DazActorsError, ValueError):
    """A frame is not a valid Engine.IO v4 / Socket.IO v4 packet, or a packet cannot be one."""


# Field validators raise TypeError or ValueError; `decode` turns those into FrameError.
_Validator: TypeAlias = Callable[[object, "attrs.Attribute[Any]", object], None]


def _integer(upper: int, *, optional: bool = False) -> _Validator:
    def check(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= upper:
            raise ValueError(f"{attr.name} must be an integer in 0..{upper}, got {value!r:.40}")

    return check


def _namespace(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value.startswith("/") or "," in value:
        raise ValueError(f"namespace must start with '/' and hold no ',', got {value!r:.40}")
    _raw_text(_inst, _attr, value)


def _raw_text(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    """Text written into a frame as it is: a lone surrogate would make it invalid UTF-8."""
    if not isinstance(value, str):
        raise TypeError(f"{attr.name} must be str, got {type(value).__name__}")
    if _SURROGATE.search(value):
        raise FrameError(f"{attr.name} holds a lone surrogate (not UTF-8): {value!r:.40}")


_MS = _integer(2**63 - 1)  # milliseconds or bytes
_ACK_ID = _integer(MAX_ACK_ID)
_OPTIONAL_ACK_ID = _integer(MAX_ACK_ID, optional=True)
_STR = attrs.validators.instance_of(str)
_OPTIONAL_DICT = attrs.validators.optional(attrs.validators.instance_of(dict))


def _to_args(value: list[Any] | tuple[Any, ...]) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"args must be a list or tuple, got {type(value).__name__}")
    return tuple(value)


def _to_upgrades(value: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"upgrades must be a list of str, got {value!r:.40}")
    return tuple(value)


# -- Engine.IO packets --
@attrs.frozen(kw_only=True)
class OpenPacket:
    """Engine.IO ``0``: the server's handshake, the first frame on a new websocket."""

    sid: str = attrs.field(validator=_STR)  # Engine.IO session id
    upgrades: tuple[str, ...] = attrs.field(default=(), converter=_to_upgrades)  # transports
    ping_interval_ms: int = attrs.field(validator=_MS)  # the server pings this often
    ping_timeout_ms: int = attrs.field(validator=_MS)  # grace after a ping before close
    max_payload: int = attrs.field(default=1_000_000, validator=_MS)  # bytes


@attrs.frozen(kw_only=True)
class Close:
    """Engine.IO ``1``: the peer closes the session."""


@attrs.frozen(kw_only=True)
class Ping:
    """Engine.IO ``2``: sent by a v4 server; the client answers with a `Pong`."""

    data: str = attrs.field(default="", validator=_raw_text)  # "" or "probe" during upgrade


@attrs.frozen(kw_only=True)
class Pong:
    """Engine.IO ``3``: the answer to a `Ping`."""

    data: str = attrs.field(default="", validator=_raw_text)  # echoes the ping's data


@attrs.frozen(kw_only=True)
class Upgrade:
    """Engine.IO ``5``: finishes a transport upgrade (not used on a direct websocket)."""


@attrs.frozen(kw_only=True)
class Noop:
    """Engine.IO ``6``: does nothing; flushes a polling transport during an upgrade."""


# -- Socket.IO packets (inside an Engine.IO message) --
@attrs.frozen(kw_only=True)
class Connect:
    """Socket.IO ``40``: a client joins a namespace, or the server confirms with its sid."""

    namespace: str = attrs.field(default="/", validator=_namespace)  # "/" is the main one
    # auth from a client, {"sid": ...} from a server
    data: dict[str, Any] | None = attrs.field(default=None, validator=_OPTIONAL_DICT)

    @property
    def sid(self) -> str | None:
        """The Socket.IO session id in a server's connect answer, if there is one."""
        sid = (self.data or {}).get("sid")
        return sid if isinstance(sid, str) else None


@attrs.frozen(kw_only=True)
class Disconnect:
    """Socket.IO ``41``: leave (or be removed from) a namespace."""

    namespace: str = attrs.field(default="/", validator=_namespace)


@attrs.frozen(kw_only=True)
class Event:
    """Socket.IO ``42``: a named event with JSON arguments, such as ``42["chatMsg",{...}]``."""

    name: str = attrs.field(validator=_STR)  # the event name, first array element
    args: tuple[Any, ...] = attrs.field(default=(), converter=_to_args)  # JSON values after it
    # set when the sender wants an `Ack` back
    ack_id: int | None = attrs.field(default=None, validator=_OPTIONAL_ACK_ID)
    namespace: str = attrs.field(default="/", validator=_namespace)


@attrs.frozen(kw_only=True)
class Ack:
    """Socket.IO ``43``: the answer to an `Event` that carried an ack id."""

    ack_id: int = attrs.field(validator=_ACK_ID)  # the id of the event being answered
    args: tuple[Any, ...] = attrs.field(default=(), converter=_to_args)  # JSON values
    namespace: str = attrs.field(default="/", validator=_namespace)


@attrs.frozen(kw_only=True)
class ConnectError:
    """Socket.IO ``44``: the server refused a `Connect`."""

    # the reason, usually {"message": ...}
    data: str | dict[str, Any] = attrs.field(validator=attrs.validators.instance_of((str, dict)))
    namespace: str = attrs.field(default="/", validator=_namespace)

    @property
    def message(self) -> str:
        """The server's reason, as text."""
        if isinstance(self.data, str):
            return self.data
        message = self.data.get("message")
        return message if isinstance(message, str) else json.dumps(self.data)


Packet: TypeAlias = (
    OpenPacket | Close | Ping | Pong | Upgrade | Noop
    | Connect | Disconnect | Event | Ack | ConnectError
)  # fmt: skip

# Engine.IO packets without data
_BARE: dict[str, type[Close | Upgrade | Noop]] = {"1": Close, "5": Upgrade, "6": Noop}
# Socket.IO packet types 0-4: their names, and the JSON their payload may be
_SOCKET_NAMES = ("connect", "disconnect", "event", "ack", "connect_error")
_SOCKET_PAYLOADS = ("object", "", "array", "array", "string or object")
# handshake JSON key -> OpenPacket field
_OPEN_FIELDS = {
    "sid": "sid",
    "upgrades": "upgrades",
    "pingInterval": "ping_interval_ms",
    "pingTimeout": "ping_timeout_ms",
    "maxPayload": "max_payload",
}


# -- decoding --
def _check_limit(max_payload: int) -> None:
    if isinstance(max_payload, bool) or not isinstance(max_payload, int) or max_payload < 1:
        raise ValueError(f"max_payload must be a positive integer, got {max_payload!r}")


def decode(frame: str, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> Packet:
    """Decode one websocket text frame; raise `FrameError` saying what is wrong with it."""
    _check_limit(max_payload)
    if not isinstance(frame, str):
        binary = " (a binary frame)" if isinstance(frame, bytes | bytearray | memoryview) else ""
        raise FrameError(f"frame must be str, got {type(frame).__name__}{binary}")
    if not frame:
        raise FrameError("empty frame")
    if len(frame) > max_payload:
        raise FrameError(f"oversized frame: {len(frame)} characters > max_payload {max_payload}")
    try:
        return _decode(frame)
    except FrameError as exc:
        excerpt = frame if len(frame) <= _EXCERPT else frame[:_EXCERPT] + "..."
        raise FrameError(f"{exc} (frame {excerpt!r})") from exc.__cause__


def _decode(frame: str) -> Packet:
    kind, body = frame[0], frame[1:]
    if kind == "4":
        return _decode_message(body)
    if kind in ("2", "3"):
        return (Ping if kind == "2" else Pong)(data=body)
    if kind == "0":
        return _decode_open(body)
    if kind not in _BARE:
        raise FrameError(f"unknown Engine.IO packet type {kind!r} (expected a digit 0-6)")
    if body:
        raise FrameError(f"unexpected data after {_BARE[kind].__name__.lower()} packet")
    return _BARE[kind]()


def _decode_open(body: str) -> OpenPacket:
    if not body:
        raise FrameError("truncated open packet: no handshake JSON")
    data = _parse_json(body, "open packet")
    if not isinstance(data, dict):
        raise FrameError(f"open packet must hold a JSON object, got {_json_kind(data)}")
    missing = [key for key in ("sid", "pingInterval", "pingTimeout") if key not in data]
    if missing:
        raise FrameError(f"open packet lacks {', '.join(missing)}")
    try:
        return OpenPacket(
            **{field: data[key] for key, field in _OPEN_FIELDS.items() if key in data}
        )
    except (TypeError, ValueError) as exc:
        raise FrameError(f"bad open packet: {exc.args[0]}") from None


def _decode_message(body: str) -> Packet:
    if not body:
        raise FrameError("truncated message packet: no Socket.IO packet type")
    kind = body[0]
    if kind in ("5", "6"):
        raise FrameError("binary Socket.IO packets (BINARY_EVENT, BINARY_ACK) are not supported")
    if kind not in ("0", "1", "2", "3", "4"):
        raise FrameError(f"unknown Socket.IO packet type {kind!r} (expected a digit 0-4)")
    name, allowed = _SOCKET_NAMES[int(kind)], _SOCKET_PAYLOADS[int(kind)]
    pos, namespace, ack_id = 1, "/", None
    if body.startswith("/", pos):
        comma = body.find(",", pos)
        end = len(body) if comma == -1 else comma
        namespace, pos = body[pos:end], end + 1
    if digits := _ACK_DIGITS.match(body, pos):
        text = digits.group()
        if len(text) > 16 or int(text) > MAX_ACK_ID:
            raise FrameError(f"bad ack id: {text[:20]} is larger than {MAX_ACK_ID}")
        if kind not in ("2", "3"):
            raise FrameError(f"bad ack id: a {name} packet cannot carry one")
        ack_id, pos = int(text), digits.end()
    elif kind == "3":
        raise FrameError("bad ack id: ack packet without one")
    payload = body[pos:]
    if kind == "1" and payload:
        raise FrameError("disconnect packet takes no payload")
    if kind == "1" or (kind == "0" and not payload):
        return (Disconnect if kind == "1" else Connect)(namespace=namespace)
    if not payload:
        raise FrameError(f"truncated {name} packet: no JSON payload")
    data = _parse_json(payload, f"{name} payload")
    if _json_kind(data) not in allowed.split(" or "):
        raise FrameError(f"{name} payload must be a JSON {allowed}, got {_json_kind(data)}")
    if kind == "0":
        return Connect(namespace=namespace, data=data)
    if kind == "4":
        return ConnectError(namespace=namespace, data=data)
    if kind == "3":
        assert ack_id is not None  # checked above
        return Ack(ack_id=ack_id, args=data, namespace=namespace)
    if not data:
        raise FrameError("event payload is an empty array: no event name")
    if not isinstance(data[0], str):
        raise FrameError(f"event name must be a string, got {_json_kind(data[0])}")
    return Event(name=data[0], args=data[1:], ack_id=ack_id, namespace=namespace)


def _finite_float(text: str) -> float:  # also sees NaN and Infinity, which JSON lacks
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is not a finite number")
    return value


def _parse_json(text: str, what: str) -> Any:
    try:
        value = json.loads(text, parse_float=_finite_float, parse_constant=_finite_float)
    except json.JSONDecodeError as exc:
        raise FrameError(f"bad JSON in {what}: {exc.msg} at payload character {exc.pos}") from exc
    except ValueError as exc:  # from the hooks, or an integer with too many digits
        raise FrameError(f"bad JSON in {what}: {exc}") from exc
    except RecursionError as exc:
        raise FrameError(f"bad JSON in {what}: nested too deeply") from exc
    if _nesting(value) > MAX_DEPTH:
        raise FrameError(f"bad JSON in {what}: nested deeper than {MAX_DEPTH} levels")
    return value


def _nesting(value: Any) -> int:
    """How deeply arrays and objects nest in `value` (0 for a scalar); no recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict | list):
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_DEPTH:  # past the limit the answer is known
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _json_kind(value: object) -> str:
    kinds = [(bool, "boolean"), (int | float, "number"), (str, "string"), (list, "array")]
    default = "null" if value is None else "object"
    return next((kind for t, kind in kinds if isinstance(value, t)), default)


# -- encoding --
def encode(packet: Packet, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> str:
    """Encode a packet as one websocket text frame; `FrameError` if it cannot be one."""
    _check_limit(max_payload)
    frame = _encode(packet)
    if len(frame) > max_payload:
        raise FrameError(f"oversized frame: {len(frame)} characters > max_payload {max_payload}")
    return frame


def encode_event(name: str, *args: Any, ack_id: int | None = None, namespace: str = "/") -> str:
    """Encode ``42["name",args...]``, the frame for ``socket.emit(name, *args)``."""
    return encode(Event(name=name, args=args, ack_id=ack_id, namespace=namespace))


def _encode(packet: Packet) -> str:
    match packet:
        case OpenPacket():
            handshake = {key: getattr(packet, field) for key, field in _OPEN_FIELDS.items()}
            return "0" + _dump(handshake, "open packet")
        case Ping() | Pong():
            return ("2" if isinstance(packet, Ping) else "3") + packet.data
        case Close() | Upgrade() | Noop():
            return {Close: "1", Upgrade: "5", Noop: "6"}[type(packet)]
        case Connect():
            data = "" if packet.data is None else _dump(packet.data, "connect data")
            return "40" + _prefix(packet.namespace) + data
        case Disconnect():
            return "41" + _prefix(packet.namespace)
        case Event():
            ack = "" if packet.ack_id is None else str(packet.ack_id)
            args = _dump([packet.name, *packet.args], "event arguments")
            return "42" + _prefix(packet.namespace) + ack + args
        case Ack():
            args = _dump(list(packet.args), "ack arguments")
            return "43" + _prefix(packet.namespace) + str(packet.ack_id) + args
        case ConnectError():
            return "44" + _prefix(packet.namespace) + _dump(packet.data, "connect_error data")
        case _:
            raise TypeError(f"not a packet: {type(packet).__name__}")


def _prefix(namespace: str) -> str:
    return "" if namespace == "/" else namespace + ","


def _dump(value: object, what: str) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        if _SURROGATE.search(text):  # not valid UTF-8 on the wire: escape as JSON.stringify does
            text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:  # never quotes the value itself
        raise FrameError(f"cannot encode {what} as JSON: {exc}") from exc
    return text
