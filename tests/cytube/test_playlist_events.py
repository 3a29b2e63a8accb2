"""``playlist`` and ``queue`` (who queued what) checked at the boundary and typed, and
published on the channel's ``queue`` topic."""

from __future__ import annotations

from typing import Any

import pytest

from daz_actors.cytube.channel_events import topic_of
from daz_actors.cytube.events import PlaylistQueued, QueuedMedia
from daz_actors.cytube.inbound import MalformedEvent, check_event
from daz_actors.cytube.protocol import to_typed_event

NOW = 1_700_000_000_000


def item(uid: int, media_id: str, by: str, **media: Any) -> dict[str, Any]:
    """A playlist item as CyTube sends it (``PlaylistItem.pack``)."""
    return {
        "media": {"id": media_id, "title": f"T {media_id}", "seconds": 61, "duration": "01:01",
                  "type": "yt", "meta": {}, **media},
        "uid": uid, "temp": False, "queueby": by,
    }  # fmt: skip


def typed(name: str, *args: Any) -> object:
    checked = check_event(name, args, received_ms=NOW)
    return to_typed_event("lobby", name, checked.args, history=False)


def test_a_queue_and_a_playlist_are_typed() -> None:
    """``queue`` is one item added, ``playlist`` the whole list; each item says who queued
    it; both are channel events on ``channel.<channel>.queue``."""
    added = typed("queue", {"item": item(7, "a1", "ann"), "after": 6})
    assert added == PlaylistQueued(
        channel="lobby",
        items=(QueuedMedia(uid=7, media_id="a1", media_type="yt", title="T a1", seconds=61,
                           queued_by="ann"),),
        full=False,
    )  # fmt: skip
    whole = typed("playlist", [item(1, "x", "bob"), item(2, "y", "cat", title="Y")])
    assert isinstance(whole, PlaylistQueued)
    assert whole.full
    assert [(i.uid, i.media_id, i.title, i.queued_by) for i in whole.items] == [
        (1, "x", "T x", "bob"), (2, "y", "Y", "cat"),
    ]  # fmt: skip
    assert topic_of(added) == "channel.lobby.queue"
    empty = typed("playlist", [])
    assert empty == PlaylistQueued(channel="lobby", items=(), full=True)


def test_an_item_without_who_queued_it_says_so_with_an_empty_name() -> None:
    """``queueby`` missing (an older server): the item is kept, its queuer unknown."""
    bare = item(3, "z", "x")
    del bare["queueby"]
    event = typed("queue", {"item": bare})
    assert isinstance(event, PlaylistQueued)
    assert event.items[0].queued_by == ""


@pytest.mark.parametrize(
    ("name", "payload", "reason"),
    [
        ("queue", "not an object", "not_an_object"),
        ("queue", {"after": 1}, "not_an_object"),
        ("queue", {"item": {"uid": 1}}, "not_an_object"),
        ("queue", {"item": {"media": {"type": "yt"}}}, "missing_id"),
        ("queue", {"item": {"media": {"id": 5, "type": "yt"}}}, "wrong_type_id"),
        ("playlist", {"not": "a list"}, "not_an_array"),
        ("playlist", [{"media": {"id": "x"}}], "missing_type"),
    ],
)
def test_malformed_items_are_refused(name: str, payload: Any, reason: str) -> None:
    """A queue or playlist whose item lacks its media, its id or its type is dropped,
    naming what was wrong."""
    with pytest.raises(MalformedEvent) as caught:
        check_event(name, (payload,), received_ms=NOW)
    assert caught.value.reason == reason


def test_long_names_and_titles_are_cut() -> None:
    """Titles and names are cut at the boundary's limits, and flagged."""
    checked = check_event(
        "queue", ({"item": item(1, "a", "n" * 50, title="t" * 5000)},), received_ms=NOW
    )
    event = to_typed_event("lobby", "queue", checked.args, history=False)
    assert isinstance(event, PlaylistQueued)
    assert len(event.items[0].title) == 1000
    assert len(event.items[0].queued_by) == 20
    assert {"title_cut", "queueby_cut"} <= set(checked.flags)
