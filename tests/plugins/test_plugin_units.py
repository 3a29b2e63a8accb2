"""The plugins' pure parts: durations, a reminder's words, which channels a plugin hears."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from daz_actors import Actor, ChildSpec, Supervisor, actor_factory
from daz_actors.cytube.channel_events import ChannelEventKind, channel_topic, topic_of
from daz_actors.cytube.events import ChatMessage, User, UserJoined
from daz_actors.plugins import PluginContext
from daz_actors.plugins.durations import DurationError, parse_duration
from daz_actors.plugins.remind import compose_reminder
from daz_actors.runtime.bus import EventBus, Published
from daz_actors.runtime.registry import Registry
from daz_actors.testing import open_tree, wait_until


class Ears(Actor):
    """Keeps what it hears."""

    def __init__(self, heard: list[Any]) -> None:
        self.heard = heard

    async def handle(self, message: Any) -> None:
        self.heard.append(message)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h30m", 5400), ("2d", 172800), ("1H5S", 3605), ("0s", 0)],
)
def test_durations_as_people_type_them(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10", "m10", "1m1h", "1h1h", "1h 30m", "-5m", "1.5h"])
def test_what_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(DurationError, match=r"duration|largest first"):
        parse_duration(text)


@given(st.integers(0, 99), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))
def test_every_well_formed_duration_adds_up(d: int, h: int, m: int, s: int) -> None:
    parts = [(d, "d"), (h, "h"), (m, "m"), (s, "s")]
    text = "".join(f"{n}{u}" for n, u in parts if n) or "0s"
    assert parse_duration(text) == d * 86400 + h * 3600 + m * 60 + s


def test_a_reminder_says_its_text_and_how_late_it_is() -> None:
    """On time: the text (or how long ago it was asked); past late_after: how late."""
    created = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    row: dict[str, Any] = {
        "username": "ann", "text": "tea", "created_at": created,
        "due_at": created + timedelta(minutes=10),
    }  # fmt: skip
    due = row["due_at"]
    assert compose_reminder(row, late_after=30, now=due + timedelta(seconds=5)) == (
        "ann: reminder: tea"
    )
    late = compose_reminder(row, late_after=30, now=due + timedelta(minutes=3, seconds=2))
    assert late == "ann: reminder: tea (late by 3m 2s: I was away)"
    row["text"] = ""
    assert compose_reminder(row, late_after=30, now=due) == (
        "ann: this is the reminder you asked for 10m 0s ago"
    )


def test_replayed_history_is_no_channel_event() -> None:
    """A line the server replays on join is not published; a live one is, per channel."""
    line = ChatMessage(channel="a", username="ann", msg="hi", time=1)
    assert topic_of(line) == "channel.a.line"
    assert (
        topic_of(ChatMessage(channel="a", username="ann", msg="hi", time=1, history=True)) is None
    )
    assert topic_of(object()) is None


async def test_a_plugin_hears_only_its_channels() -> None:
    """subscribe() with channels: events of the others never reach the plugin's actor."""
    registry, bus = Registry(), EventBus()
    heard: list[Any] = []
    root = Supervisor(
        "root", [ChildSpec(name="ears", start=actor_factory(lambda: Ears(heard)))],
        registry=registry, bus=bus,
    )  # fmt: skip
    async with open_tree(root):
        context: PluginContext[Any] = PluginContext(
            name="p", params=None, channels=frozenset({"a"}), registry=registry, bus=bus
        )
        context.subscribe(registry.lookup("ears"), [ChannelEventKind.JOIN])
        for channel in ("b", "a", "b"):
            event = UserJoined(channel=channel, user=User(name="ann"))
            await bus.publish(channel_topic(channel, ChannelEventKind.JOIN), event)
        await bus.publish(channel_topic("a", ChannelEventKind.LINE), object())  # not asked for
        await wait_until(lambda: len(heard) >= 1, timeout=5)
        await trio.testing.wait_all_tasks_blocked()
    assert [m.event.channel for m in heard if isinstance(m, Published)] == ["a"]
    assert len(heard) == 1
