"""The Engine.IO v4 / Socket.IO v4 frame codec: round trips, malformed frames, fuzzing."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from socketio import packet as socketio_packet

from daz_actors.cytube.codec import (
    DEFAULT_MAX_PAYLOAD,
    MAX_ACK_ID,
    MAX_DEPTH,
    Ack,
    Close,
    Connect,
    ConnectError,
    Disconnect,
    Event,
    FrameError,
    Noop,
    OpenPacket,
    Packet,
    Ping,
    Pong,
    Upgrade,
    decode,
    encode,
    encode_event,
)
from daz_actors.runtime.errors import DazActorsError

# -- strategies (kept here: tests/strategies.py belongs to others) --

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters())  # any code point, lone surrogates included
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=4)
# text a frame carries raw (namespaces, ping data) is UTF-8: no lone surrogate
wire_chars = st.characters(exclude_categories=["Cs"])
namespaces = st.just("/") | st.text(
    st.characters(exclude_characters=",", exclude_categories=["Cs"]), max_size=8
).map(lambda rest: "/" + rest)
ack_ids = st.integers(0, MAX_ACK_ID)
arg_lists = st.lists(json_values, max_size=4)

open_packets = st.builds(
    OpenPacket,
    sid=st.text(),
    upgrades=st.lists(st.text(), max_size=3),
    ping_interval_ms=st.integers(0, 2**31),
    ping_timeout_ms=st.integers(0, 2**31),
    max_payload=st.integers(0, 2**31),
)
bare_packets = st.sampled_from([Close(), Upgrade(), Noop()])
pings = st.builds(Ping, data=st.text(wire_chars))
pongs = st.builds(Pong, data=st.text(wire_chars))
connects = st.builds(Connect, namespace=namespaces, data=st.none() | json_objects)
disconnects = st.builds(Disconnect, namespace=namespaces)
events = st.builds(
    Event, name=st.text(), args=arg_lists, ack_id=st.none() | ack_ids, namespace=namespaces
)
acks = st.builds(Ack, ack_id=ack_ids, args=arg_lists, namespace=namespaces)
connect_errors = st.builds(ConnectError, data=st.text() | json_objects, namespace=namespaces)

KINDS: dict[str, st.SearchStrategy[Any]] = {
    "open": open_packets,
    "close-upgrade-noop": bare_packets,
    "ping": pings,
    "pong": pongs,
    "connect": connects,
    "disconnect": disconnects,
    "event": events,
    "ack": acks,
    "connect_error": connect_errors,
}
packets: st.SearchStrategy[Packet] = st.one_of(*KINDS.values())
frame_alphabet = st.sampled_from('0123456789/,[]{}":-.eEtrufalsn \\x')


@st.composite
def mutated_frames(draw: st.DrawFn) -> str:
    """A valid frame with one random cut, insertion or replacement."""
    frame = encode(draw(packets))
    pos = draw(st.integers(0, len(frame)))
    end = draw(st.integers(pos, len(frame)))
    inserted = draw(st.text(frame_alphabet, max_size=4) | st.text(max_size=2))
    return frame[:pos] + inserted + frame[end:]


# -- round trips --


@pytest.mark.parametrize("kind", list(KINDS))
@given(data=st.data())
def test_encode_then_decode_gives_the_same_packet(kind: str, data: st.DataObject) -> None:
    """Every frame kind survives encode followed by decode unchanged."""
    packet = data.draw(KINDS[kind])
    assert decode(encode(packet)) == packet


@given(name=st.text(), args=arg_lists, ack_id=st.none() | ack_ids, namespace=namespaces)
def test_encode_event_matches_encoding_an_event(
    name: str, args: list[Any], ack_id: int | None, namespace: str
) -> None:
    """`encode_event` writes the same frame as encoding the `Event` by hand."""
    event = Event(name=name, args=args, ack_id=ack_id, namespace=namespace)
    assert encode_event(name, *args, ack_id=ack_id, namespace=namespace) == encode(event)


@given(packets)
def test_encoded_frames_are_valid_utf8(packet: Packet) -> None:
    """No encoded frame carries a lone surrogate, so the websocket can send it as UTF-8."""
    encode(packet).encode("utf-8")


@pytest.mark.parametrize(
    "build",
    [
        lambda: Disconnect(namespace="/\ud800"),
        lambda: Connect(namespace="/a\udfff"),
        lambda: Event(name="x", namespace="/\udc00"),
        lambda: Ping(data="\ud800"),
        lambda: Pong(data="a\udbff"),
    ],
)
def test_raw_text_with_a_lone_surrogate_cannot_become_a_packet(build: Any) -> None:
    """A namespace or ping data that is not UTF-8 is refused when the packet is built."""
    with pytest.raises(FrameError, match="lone surrogate"):
        build()


@given(st.text(st.characters(), max_size=6), st.integers(0, 0xDFFF - 0xD800))
def test_json_text_with_a_lone_surrogate_is_escaped(text: str, offset: int) -> None:
    """A string argument holding a lone surrogate is sent as a JSON escape and read back."""
    odd = text + chr(0xD800 + offset) + text
    frame = encode_event("chatMsg", {"msg": odd})
    frame.encode("utf-8")
    assert decode(frame) == Event(name="chatMsg", args=({"msg": odd},))


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 900, 5000])
def test_payload_nested_past_the_limit_is_a_frame_error(depth: int) -> None:
    """Deep nesting is refused where the frame is decoded, with a clear FrameError."""
    with pytest.raises(FrameError, match=f"nested deeper than {MAX_DEPTH}|nested too deeply"):
        decode('42["chatMsg",{"meta":' + _nested(depth) + "}]")


def test_payload_nested_to_the_limit_decodes() -> None:
    """Nesting up to MAX_DEPTH levels (the event array counts as one) is accepted."""
    packet = decode('42["chatMsg",' + _nested(MAX_DEPTH - 1) + "]")
    assert packet == Event(name="chatMsg", args=(json.loads(_nested(MAX_DEPTH - 1)),))


@given(
    name=st.text(),
    args=arg_lists,
    ack_id=st.none() | ack_ids,
    namespace=namespaces.filter(lambda ns: "?" not in ns),  # python-socketio cuts "?query"
)
def test_events_interoperate_with_python_socketio(
    name: str, args: list[Any], ack_id: int | None, namespace: str
) -> None:
    """python-socketio, the test peer's library, reads our event frames and writes ones we read."""
    event = Event(name=name, args=args, ack_id=ack_id, namespace=namespace)
    theirs = socketio_packet.Packet(encoded_packet=encode(event)[1:])
    assert (theirs.packet_type, theirs.namespace or "/", theirs.id) == (2, namespace, ack_id)
    assert theirs.data == [name, *args]
    ours = socketio_packet.Packet(data=[name, *args], namespace=namespace, id=ack_id)
    assert decode("4" + ours.encode()) == event


# -- real CyTube frames (DESIGN section 8) --

CYTUBE_FRAMES = [
    (
        '0{"sid":"Xy_1","upgrades":[],"pingInterval":25000,"pingTimeout":120000,'
        '"maxPayload":1048576}',
        OpenPacket(
            sid="Xy_1",
            upgrades=(),
            ping_interval_ms=25000,
            ping_timeout_ms=120000,
            max_payload=1048576,
        ),
    ),
    ("40", Connect()),
    ('40{"sid":"abc"}', Connect(data={"sid": "abc"})),
    ('42["rank",-1]', Event(name="rank", args=(-1,))),
    (
        '42["chatMsg",{"username":"u","msg":"hi","time":1}]',
        Event(name="chatMsg", args=({"username": "u", "msg": "hi", "time": 1},)),
    ),
    ('42["joinChannel",{"name":"room"}]', Event(name="joinChannel", args=({"name": "room"},))),
    ("2", Ping()),
    ("3", Pong()),
    ("2probe", Ping(data="probe")),
    ("1", Close()),
    ("6", Noop()),
    ("41", Disconnect()),
    ('44{"message":"Rate limit exceeded"}', ConnectError(data={"message": "Rate limit exceeded"})),
    ('42/chat,7["x",1]', Event(name="x", args=(1,), ack_id=7, namespace="/chat")),
    ('43/chat,7["ok"]', Ack(ack_id=7, args=("ok",), namespace="/chat")),
]


@pytest.mark.parametrize(("frame", "expected"), CYTUBE_FRAMES)
def test_real_frames_decode_and_encode_back(frame: str, expected: Packet) -> None:
    """Frames as a CyTube server writes them decode to the expected packet and encode back."""
    assert decode(frame) == expected
    assert encode(expected) == frame


def test_open_packet_from_an_older_server_uses_defaults() -> None:
    """An open packet without upgrades or maxPayload still decodes, with the defaults."""
    packet = decode('0{"sid":"s","pingInterval":1,"pingTimeout":2,"extra":true}')
    assert packet == OpenPacket(sid="s", ping_interval_ms=1, ping_timeout_ms=2)


def test_namespace_without_comma_runs_to_the_end_of_the_frame() -> None:
    """``40/chat`` names the namespace without a trailing comma, as socket.io-parser allows."""
    assert decode("40/chat") == Connect(namespace="/chat")


def test_connect_sid_and_connect_error_message() -> None:
    """The convenience properties read the sid and the refusal reason."""
    assert Connect(data={"sid": "abc"}).sid == "abc"
    assert Connect().sid is None
    assert ConnectError(data={"message": "no"}).message == "no"
    assert ConnectError(data="plain").message == "plain"
    assert ConnectError(data={"code": 1}).message == '{"code": 1}'


# -- malformed frames --

MALFORMED = [
    ("", "empty frame"),
    ("7", r"unknown Engine\.IO packet type '7'"),
    ("x42", r"unknown Engine\.IO packet type 'x'"),
    ("0", "truncated open packet"),
    ('0{"sid":', "bad JSON in open packet"),
    ("0[]", "open packet must hold a JSON object, got array"),
    ('0{"sid":"a"}', "open packet lacks pingInterval, pingTimeout"),
    ('0{"sid":1,"pingInterval":1,"pingTimeout":1}', "bad open packet: 'sid' must be <class 'str'>"),
    ('0{"sid":"a","pingInterval":-1,"pingTimeout":1}', "bad open packet: ping_interval_ms"),
    ('0{"sid":"a","pingInterval":true,"pingTimeout":1}', "bad open packet: ping_interval_ms"),
    ('0{"sid":"a","pingInterval":1,"pingTimeout":1.5}', "bad open packet: ping_timeout_ms"),
    ('0{"sid":"a","pingInterval":1,"pingTimeout":1,"upgrades":"ws"}', "bad open packet: upgrades"),
    ('0{"sid":"a","pingInterval":1,"pingTimeout":1,"maxPayload":null}', "bad open .*max_payload"),
    ("1x", "unexpected data after close packet"),
    ("5x", "unexpected data after upgrade packet"),
    ("6 ", "unexpected data after noop packet"),
    ("4", "truncated message packet"),
    ("47", r"unknown Socket\.IO packet type '7'"),
    ("4x", r"unknown Socket\.IO packet type 'x'"),
    ('451-["up",{"_placeholder":true,"num":0}]', "binary Socket.IO packets .* not supported"),
    ("461-[]", "binary Socket.IO packets .* not supported"),
    ("42", "truncated event packet: no JSON payload"),
    ("421", "truncated event packet"),
    ('42/chat["x"]', "truncated event packet"),
    ("42[", "bad JSON in event payload"),
    ('42["chatMsg",{"msg":"hi"', "bad JSON in event payload"),
    ('42["x"]junk', "bad JSON in event payload: Extra data"),
    ("42 ", "bad JSON in event payload"),
    ("42'x'", "bad JSON in event payload"),
    ('42["x",NaN]', "NaN is not a finite number"),
    ('42["x",-Infinity]', "-Infinity is not a finite number"),
    ('42["x",1e400]', "1e400 is not a finite number"),
    ('42["x",' + "1" * 5000 + "]", "bad JSON in event payload"),
    ("42" + "[" * 100_000, "bad JSON in event payload: nested too deeply"),
    ('42{"name":"x"}', "event payload must be a JSON array, got object"),
    ('42"chatMsg"', "event payload must be a JSON array, got string"),
    ("42null", "event payload must be a JSON array, got null"),
    ("42[]", "event payload is an empty array: no event name"),
    ("42[1]", "event name must be a string, got number"),
    ("42[null,1]", "event name must be a string, got null"),
    ('42[["x"]]', "event name must be a string, got array"),
    ('43["x"]', "bad ack id: ack packet without one"),
    ("43", "bad ack id: ack packet without one"),
    ('4299999999999999999["x"]', "bad ack id: 99999999999999999 is larger than"),
    ("42" + "9" * 5000 + '["x"]', "bad ack id: 9+ is larger than"),
    ("401{}", "bad ack id: a connect packet cannot carry one"),
    ("411", "bad ack id: a disconnect packet cannot carry one"),
    ('441"no"', "bad ack id: a connect_error packet cannot carry one"),
    ("431", "truncated ack packet"),
    ("431{}", "ack payload must be a JSON array, got object"),
    ('41["x"]', "disconnect packet takes no payload"),
    ("41/chat,junk", "disconnect packet takes no payload"),
    ("40[]", "connect payload must be a JSON object, got array"),
    ('40"token"', "connect payload must be a JSON object, got string"),
    ("40/chat,{", "bad JSON in connect payload"),
    ("44", "truncated connect_error packet"),
    ("44[1]", "connect_error payload must be a JSON string or object, got array"),
    ("44true", "connect_error payload must be a JSON string or object, got boolean"),
]


@pytest.mark.parametrize(("frame", "reason"), MALFORMED, ids=[f[:24] for f, _ in MALFORMED])
def test_malformed_frame_raises_frame_error_saying_why(frame: str, reason: str) -> None:
    """Each malformed frame raises FrameError whose message names what is wrong."""
    with pytest.raises(FrameError, match=reason):
        decode(frame)


def test_frame_error_quotes_a_short_excerpt_of_the_frame() -> None:
    """The message quotes the start of the bad frame, cut to a short excerpt."""
    with pytest.raises(FrameError, match=re.escape('(frame \'42["x",') + r".*\.\.\.'\)$"):
        decode('42["x",' + "1," * 100 + "]")


def test_oversized_frame_is_rejected_before_parsing() -> None:
    """A frame longer than max_payload characters raises FrameError, by default and when set."""
    with pytest.raises(FrameError, match="oversized frame: 7 characters > max_payload 5"):
        decode('42["x"]', max_payload=5)
    frame = '42["x","' + "a" * DEFAULT_MAX_PAYLOAD + '"]'
    with pytest.raises(FrameError, match=f"oversized frame: {len(frame)} characters"):
        decode(frame)
    assert decode(frame, max_payload=len(frame)) == Event(name="x", args=("a" * 1_048_576,))


@pytest.mark.parametrize("frame", [b'42["x"]', bytearray(b"2"), memoryview(b"3")])
def test_binary_frame_is_rejected(frame: Any) -> None:
    """A binary websocket message (bytes) raises FrameError, not TypeError."""
    with pytest.raises(FrameError, match=r"frame must be str, got .* binary frame"):
        decode(frame)


def test_non_string_frame_is_rejected() -> None:
    """Anything else that is not a str also raises FrameError."""
    with pytest.raises(FrameError, match="frame must be str, got NoneType"):
        decode(None)  # type: ignore[arg-type]


def test_frame_error_is_a_daz_actors_error_and_a_value_error() -> None:
    """FrameError sits in the project's error family and is also a ValueError."""
    assert issubclass(FrameError, DazActorsError)
    assert issubclass(FrameError, ValueError)


# -- encoding errors and construction checks --


def test_unencodable_arguments_raise_frame_error_without_quoting_them() -> None:
    """Arguments JSON cannot hold raise FrameError, and the message never quotes their values."""
    with pytest.raises(FrameError, match="cannot encode event arguments") as info:
        encode_event("login", {"name": "bot", "pw": "hunter2", "bad": {1, 2}})
    assert "hunter2" not in str(info.value)
    with pytest.raises(FrameError, match="cannot encode event arguments"):
        encode_event("x", float("nan"))
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(FrameError, match="Circular reference"):
        encode_event("x", loop)


def test_encode_rejects_oversized_frames() -> None:
    """An encoded frame longer than max_payload raises FrameError instead of being sent."""
    with pytest.raises(FrameError, match="oversized frame: 12 characters > max_payload 9"):
        encode(Event(name="x", args=("ab",)), max_payload=9)


def test_encode_rejects_what_is_not_a_packet() -> None:
    """Encoding an object that is no packet is a programming error: TypeError."""
    with pytest.raises(TypeError, match="not a packet: object"):
        encode(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
def test_bad_max_payload_argument_is_a_value_error(limit: Any) -> None:
    """A max_payload that is not a positive integer is refused with ValueError."""
    with pytest.raises(ValueError, match="max_payload must be a positive integer"):
        decode("2", max_payload=limit)
    with pytest.raises(ValueError, match="max_payload must be a positive integer"):
        encode(Ping(), max_payload=limit)


OPEN_OK = {"sid": "s", "ping_interval_ms": 1, "ping_timeout_ms": 1}


@pytest.mark.parametrize(
    ("cls", "fields", "error"),
    [
        (Event, {"name": 1}, TypeError),
        (Event, {"name": "x", "args": "abc"}, TypeError),
        (Event, {"name": "x", "ack_id": -1}, ValueError),
        (Event, {"name": "x", "ack_id": MAX_ACK_ID + 1}, ValueError),
        (Event, {"name": "x", "ack_id": True}, ValueError),
        (Event, {"name": "x", "namespace": "chat"}, ValueError),
        (Event, {"name": "x", "namespace": "/a,b"}, ValueError),
        (Ack, {"ack_id": None}, ValueError),
        (Connect, {"data": ["x"]}, TypeError),
        (ConnectError, {"data": 1}, TypeError),
        (Ping, {"data": None}, TypeError),
        (OpenPacket, {**OPEN_OK, "ping_interval_ms": -1}, ValueError),
        (OpenPacket, {**OPEN_OK, "upgrades": "ws"}, TypeError),
    ],
)
def test_packets_validate_their_fields(
    cls: type[Any], fields: dict[str, Any], error: type[Exception]
) -> None:
    """A packet that could not be written as a valid frame cannot be built."""
    with pytest.raises(error):
        cls(**fields)


# -- fuzzing: decode raises FrameError or returns a packet, nothing else --


def _decode_or_frame_error(frame: str) -> None:
    try:
        packet = decode(frame)
    except FrameError:
        return
    assert decode(encode(packet)) == packet  # whatever is accepted encodes back faithfully


@given(st.text(st.characters()))
def test_decode_of_arbitrary_text_raises_only_frame_error(frame: str) -> None:
    """Decoding any text at all returns a packet or raises FrameError."""
    _decode_or_frame_error(frame)


@given(st.text(frame_alphabet, max_size=40))
def test_decode_of_frame_like_text_raises_only_frame_error(frame: str) -> None:
    """Decoding text made of frame characters returns a packet or raises FrameError."""
    _decode_or_frame_error(frame)


@given(mutated_frames())
def test_decode_of_mutated_valid_frames_raises_only_frame_error(frame: str) -> None:
    """Decoding a damaged valid frame returns a packet or raises FrameError."""
    _decode_or_frame_error(frame)
