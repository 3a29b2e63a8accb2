"""Events checked at the protocol boundary: shapes, limits, storable text, sane times."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daz_actors.cytube.chat_text import unstorable
from daz_actors.cytube.inbound import (
    CHAT_STORE_LIMIT,
    EARLIEST_MS,
    FLAGS_KEY,
    FUTURE_SLACK_MS,
    META_LIMIT,
    NAME_LIMIT,
    MalformedEvent,
    check_event,
)
from daz_actors.cytube.protocol import to_typed_event

NOW = 1_700_000_000_000  # the receive time, ms
LINE = {"username": "ann", "msg": "hello", "time": NOW - 5, "meta": {}}


def chat(**fields: Any) -> dict[str, Any]:
    line = {**LINE, **fields}
    return {k: v for k, v in line.items() if v is not ...}


@pytest.mark.parametrize(
    ("name", "args", "reason"),
    [
        ("chatMsg", ({},), "missing_username"),
        ("chatMsg", (), "not_an_object"),
        ("chatMsg", ("hello",), "not_an_object"),
        ("chatMsg", (chat(username=...),), "missing_username"),
        ("chatMsg", (chat(username=""),), "wrong_type_username"),
        ("chatMsg", (chat(username=7),), "wrong_type_username"),
        ("chatMsg", (chat(msg=...),), "missing_msg"),
        ("chatMsg", (chat(msg=["x"]),), "wrong_type_msg"),
        ("chatMsg", (chat(time=...),), "missing_time"),
        ("chatMsg", (chat(time="1700000000000"),), "wrong_type_time"),
        ("chatMsg", (chat(time=True),), "wrong_type_time"),
        ("pm", (chat(),), "missing_to"),
        ("addUser", ({"rank": 1},), "missing_name"),
        ("addUser", ({"name": "bob", "rank": "high"},), "wrong_type_rank"),
        ("userLeave", ({"name": None},), "wrong_type_name"),
        ("userlist", ({"name": "bob"},), "not_an_array"),
        ("userlist", ([{"name": "bob"}, {"rank": 0}],), "missing_name"),
        ("changeMedia", ({"title": "t", "id": "i", "type": "yt"},), "missing_seconds"),
        ("mediaUpdate", ({"currentTime": 1.5, "paused": "no"},), "wrong_type_paused"),
        ("login", ({"success": "yes"},), "wrong_type_success"),
    ],
)
def test_a_missing_or_wrong_typed_required_field_is_refused(
    name: str, args: tuple[Any, ...], reason: str
) -> None:
    """Each required field missing or of the wrong type is a MalformedEvent naming it."""
    with pytest.raises(MalformedEvent) as caught:
        check_event(name, args, received_ms=NOW)
    assert (caught.value.event, caught.value.reason) == (name, reason)


def test_a_well_formed_line_passes_unchanged() -> None:
    """A normal CyTube line comes through as it was, with no flags."""
    checked = check_event("chatMsg", (chat(meta={"modflair": 2}),), received_ms=NOW)
    assert checked.args == (chat(meta={"modflair": 2}),)
    assert checked.flags == ()


@pytest.mark.parametrize("bad_time", [-1, 0, EARLIEST_MS - 1, NOW + FUTURE_SLACK_MS + 1, 1e300])
def test_a_time_outside_the_sane_window_is_replaced_by_the_receive_time(bad_time: float) -> None:
    """A 1969, 1970 or far-future time becomes the receive time, flagged in the meta."""
    checked = check_event("chatMsg", (chat(time=bad_time),), received_ms=NOW)
    line = checked.args[0]
    assert line["time"] == NOW
    assert checked.flags == ("time_replaced",)
    assert line["meta"][FLAGS_KEY] == ["time_replaced"]


def test_oversized_names_lines_and_meta_are_cut_and_flagged() -> None:
    """A 100 KB name and a 300 KB line are cut at the documented limits; a huge meta is
    dropped; each change is flagged."""
    huge_meta = {"x": "y" * META_LIMIT}
    line = chat(username="n" * 100_000, msg="m" * 300_000, meta=huge_meta)
    checked = check_event("chatMsg", (line,), received_ms=NOW)
    stored = checked.args[0]
    assert stored["username"] == "n" * NAME_LIMIT
    assert stored["msg"] == "m" * CHAT_STORE_LIMIT
    assert stored["meta"] == {FLAGS_KEY: ["meta_dropped", "msg_cut", "username_cut"]}
    assert checked.flags == ("meta_dropped", "msg_cut", "username_cut")


def test_lone_surrogates_anywhere_become_replacement_characters() -> None:
    """Names, text, meta keys and values: every lone surrogate and NUL becomes U+FFFD."""
    line = chat(username="a\ud800", msg="b\udfff\x00", meta={"\ud801": ["\udc00"]})
    checked = check_event("chatMsg", (line,), received_ms=NOW)
    stored = checked.args[0]
    assert (stored["username"], stored["msg"]) == ("a\ufffd", "b\ufffd\ufffd")
    assert stored["meta"] == {"\ufffd": ["\ufffd"], FLAGS_KEY: ["text_replaced"]}


def test_other_events_keep_their_shape() -> None:
    """Events the bot reads loosely (errors, kicks) and unknown ones pass as they came."""
    assert check_event("cooldown", (1000,), received_ms=NOW).args == (1000,)
    assert check_event("whatever", ("x", {"y": 1}), received_ms=NOW).args == ("x", {"y": 1})


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(), max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
field_names = st.sampled_from(
    ["username", "msg", "time", "meta", "to", "name", "rank", "title", "id", "type",
     "seconds", "currentTime", "paused", "success"]
)  # fmt: skip
objects = st.dictionaries(field_names | st.text(max_size=5), json_values, max_size=8)
event_names = st.sampled_from(
    ["chatMsg", "pm", "addUser", "userLeave", "userlist", "changeMedia", "mediaUpdate",
     "login", "errorMsg", "kick", "cooldown", "other"]
)  # fmt: skip


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


@given(
    name=event_names,
    args=st.lists(objects | json_values | st.lists(objects, max_size=3), max_size=3),
)
def test_any_event_is_refused_cleanly_or_typed_with_storable_text(
    name: str, args: list[Any]
) -> None:
    """Whatever the server sends, the check raises MalformedEvent or returns arguments the
    typing takes without error, every string storable, chat within its limits."""
    try:
        checked = check_event(name, tuple(args), received_ms=NOW)
    except MalformedEvent:
        return
    assert not any(unstorable(s) for s in _strings(checked.args))
    event = to_typed_event("chan", name, checked.args, history=False)
    if name in ("chatMsg", "pm"):
        assert len(event.username) <= NAME_LIMIT  # type: ignore[union-attr]
        assert len(event.msg) <= CHAT_STORE_LIMIT  # type: ignore[union-attr]
        assert EARLIEST_MS <= event.time <= NOW + FUTURE_SLACK_MS  # type: ignore[union-attr]
    if name == "chatMsg":
        json.dumps(event.meta)  # type: ignore[union-attr]
