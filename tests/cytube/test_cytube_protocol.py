"""CyTube events to typed events, and outgoing text cut into parts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daz_actors.cytube.events import (
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
    PrivateMessage,
    User,
    UserJoined,
    UserLeft,
    UserList,
    UserRank,
)
from daz_actors.cytube.protocol import SEPARATOR, split_message, to_typed_event


@given(st.text(min_size=1, max_size=2000).filter(lambda t: t.strip()))
def test_split_parts_fit_the_limit_and_keep_every_word(text):
    """Every part is at most 320 characters and no non-space character is lost (but the
    " | " separators a list was cut at)."""
    parts = split_message(text)
    assert all(0 < len(p) <= 320 for p in parts)
    kept, full = "".join("".join(parts).split()), "".join(text.split())
    if SEPARATOR in text:
        kept, full = kept.replace("|", ""), full.replace("|", "")
    assert kept == full


def test_split_cuts_a_list_between_its_entries():
    """A long " | " list (the !help answer) is cut between entries, the separator dropped."""
    entries = [f"!command{n}: does thing number {n} for you" for n in range(20)]
    parts = split_message(SEPARATOR.join(entries))
    assert len(parts) > 1
    assert [e for p in parts for e in p.split(SEPARATOR)] == entries


def test_split_prefers_spaces():
    """A long sentence is cut between words, not inside one."""
    text = " ".join(["word"] * 100)
    parts = split_message(text)
    assert len(parts) == 2
    assert all(p.split(" ") == ["word"] * len(p.split(" ")) for p in parts)


def test_split_refuses_an_empty_message():
    """An empty or blank message is refused."""
    with pytest.raises(ValueError, match="empty"):
        split_message("   ")


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("chatMsg", ({"username": "ann", "msg": "hi", "time": 5, "meta": {}},),
         ChatMessage(channel="c", username="ann", msg="hi", time=5)),
        ("pm", ({"username": "ann", "to": "bot", "msg": "psst", "time": 6},),
         PrivateMessage(channel="c", username="ann", to="bot", msg="psst", time=6)),
        ("addUser", ({"name": "bob", "rank": 1},),
         UserJoined(channel="c", user=User(name="bob", rank=1))),
        ("userLeave", ({"name": "bob"},), UserLeft(channel="c", name="bob")),
        ("userlist", ([{"name": "a", "rank": 0}, {"name": "b", "rank": 2}],),
         UserList(channel="c", users=(User(name="a", rank=0), User(name="b", rank=2)))),
        ("changeMedia", ({"title": "T", "id": "x1", "type": "yt", "seconds": 61},),
         MediaChanged(channel="c", title="T", media_id="x1", media_type="yt", seconds=61)),
        ("mediaUpdate", ({"currentTime": 3.5, "paused": True},),
         MediaUpdate(channel="c", current_time=3.5, paused=True)),
        ("login", ({"success": True, "name": "bot"},),
         LoginResult(channel="c", success=True, name="bot")),
        ("login", ({"success": False, "error": "Invalid username/password combination"},),
         LoginResult(channel="c", success=False, error="Invalid username/password combination")),
        ("cooldown", (100,), Cooldown(channel="c", wait_ms=100)),  # a bare number, as CyTube
        ("setUserRank", ({"name": "ann", "rank": 5},), UserRank(channel="c", name="ann", rank=5)),
        ("rank", (2,), OwnRank(channel="c", rank=2)),
        ("needPassword", (True,), PasswordRequest(channel="c", wrong=True)),
        ("needPassword", (False,), PasswordRequest(channel="c", wrong=False)),
        ("cancelNeedPassword", (), PasswordAccepted(channel="c")),
        ("channelOpts", ({"chat_antiflood": True},),
         ChannelOptions(channel="c", options={"chat_antiflood": True})),
        ("errorMsg", ({"msg": "nope"},), ErrorMessage(channel="c", kind="errorMsg", msg="nope")),
        ("kick", ({"reason": "bye"},), Kicked(channel="c", reason="bye")),
        ("setMotd", ("<b>hi</b>",), None),
    ],
)  # fmt: skip
def test_server_events_become_typed_events(name, args, expected):
    """Each CyTube event the bot cares about maps to its typed event; others to None."""
    assert to_typed_event("c", name, args, history=False) == expected


@given(st.sampled_from(["chatMsg", "pm", "addUser", "userLeave", "userlist", "changeMedia",
                        "mediaUpdate", "login", "kick", "errorMsg"]),
       st.lists(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers()),
                          st.dictionaries(st.text(), st.one_of(st.none(), st.integers()))),
                max_size=2))  # fmt: skip
def test_malformed_payloads_never_crash_the_mapping(name, args):
    """Whatever JSON the server sends for a known event, the mapping returns a typed event."""
    assert to_typed_event("c", name, tuple(args), history=False) is not None


def test_history_flag_is_carried():
    """A replayed chat line keeps the history flag."""
    event = to_typed_event(
        "c", "chatMsg", ({"username": "a", "msg": "old", "time": 1},), history=True
    )
    assert isinstance(event, ChatMessage)
    assert event.history
