"""The event router against text PostgreSQL cannot hold, with real PostgreSQL."""

from __future__ import annotations

import json

from test_router import T0, open_room, router_restarts

from daz_actors.cytube.chat_log import event_id
from daz_actors.cytube.events import (
    ChatMessage,
    MediaChanged,
    PrivateMessage,
    User,
    UserJoined,
    UserLeft,
)

BAD = "a\ud800b\x00c\udfff"  # lone surrogates and a NUL
STORED = "a\ufffdb\ufffdc\ufffd"


async def test_lone_surrogates_are_stored_replaced_and_never_crash_the_router(pg):
    """Every logged kind holding lone surrogates (and NULs) is one row with U+FFFD in their
    place; the router never restarts and every write succeeds."""
    async with open_room(pg.dsn) as room:
        line = ChatMessage(
            channel="test", username=BAD, msg=BAD, time=T0, meta={BAD: [BAD, {"k": BAD}]}
        )
        stats = await room.tell(
            line,
            line,  # the same line again: still one row
            PrivateMessage(channel="test", username=BAD, to="DazBot", msg=BAD, time=T0),
            UserJoined(channel="test", user=User(name=BAD, rank=0)),
            UserLeft(channel="test", name=BAD),
            MediaChanged(channel="test", title=BAD, media_id=BAD, media_type="yt", seconds=1),
        )
        assert (stats.logged, stats.log_failures) == (6, 0)
        assert router_restarts(room) == 0
        [chat] = await room.rows("SELECT username, message, meta FROM daz_chat_messages")
        assert (chat["username"], chat["message"]) == (STORED, STORED)
        assert json.loads(chat["meta"]) == {STORED: [STORED, {"k": STORED}]}
        [pm] = await room.rows("SELECT from_user, message FROM daz_private_messages")
        assert (pm["from_user"], pm["message"]) == (STORED, STORED)
        events = await room.rows("SELECT username, title FROM daz_channel_events ORDER BY id")
        assert [(e["username"], e["title"]) for e in events] == [
            (STORED, None),
            (STORED, None),
            (None, STORED),
        ]


def test_event_ids_tell_apart_lines_differing_only_in_a_surrogate():
    """The id hashes the text as received: lines differing only in which lone surrogate
    they hold are two ids, and text without one hashes as it always did."""
    assert event_id("chat", "a\ud800") != event_id("chat", "a\ud801")
    # the id of valid text is unchanged by the surrogate-safe encoding (pinned value)
    assert event_id("chat", "héllo", 1) == (
        "ed98bfea04116362a8d42635f5c7aea43f1233975d1fa31b596c732c973b9e84"
    )
