"""The plugins' pure parts: durations, a reminder's words, which channels a plugin hears."""

from __future__ import annotations

import itertools
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
from daz_actors.plugins.remind.runtime import compose_reminder
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


class Broken(Actor):
    """A plugin actor that cannot start, ever."""

    def __init__(self, starts: list[float]) -> None:
        self.starts = starts

    async def on_start(self) -> None:
        self.starts.append(trio.current_time())
        raise RuntimeError("this plugin is broken for good")


async def test_a_plugin_broken_for_good_is_retried_forever_and_never_escalates(autojump_clock):
    """A plugin whose actor crashes at every start is restarted with backoff (at most 30 s
    apart) for an hour of trio's clock; its neighbour plugin and the plugins supervisor
    never restart, and nothing gives up."""
    from daz_actors.plugins import PluginActor, PluginParts
    from daz_actors.plugins.host import PluginHost
    from daz_actors.plugins.settings import PluginSettings

    starts: list[float] = []
    heard: list[Any] = []

    def broken_setup(ctx: PluginContext[Any]) -> PluginParts:
        return PluginParts(
            actors=[PluginActor(name="a", start=actor_factory(lambda: Broken(starts)))]
        )

    def fine_setup(ctx: PluginContext[Any]) -> PluginParts:
        return PluginParts(actors=[PluginActor(name="a", start=actor_factory(lambda: Ears(heard)))])

    from daz_actors.plugins import NoParams, Plugin

    settings = {
        name: PluginSettings(
            plugin=Plugin(name=name, description="t", setup=setup),
            params=NoParams(),
            channels=None,
        )
        for name, setup in (("broken", broken_setup), ("fine", fine_setup))
    }
    registry, bus = Registry(), EventBus()
    host = PluginHost(settings, registry=registry, bus=bus)
    root = Supervisor(
        "root", [ChildSpec(name="plugins", start=host.subtree("plugins"))],
        registry=registry, bus=bus,
    )  # fmt: skip
    async with open_tree(root) as tree:
        await trio.sleep(3600)
        children = {c.registered_as: c for c in _walk(tree.which_children())}
    assert len(starts) > 100  # restarted all along (backoff capped at 30 s)
    assert max(b - a for a, b in itertools.pairwise(starts)) <= 30 * 1.25 + 1
    assert children["plugins"].restarts == 0
    assert children["plugin:fine"].restarts == 0
    assert children["plugin:fine/a"].restarts == 0
    assert children["plugin:broken"].restarts == 0  # it never gave up
    # each crash was followed by a restart (the last one may still be backing off)
    assert children["plugin:broken/a"].restarts in (len(starts) - 1, len(starts))


def _walk(children: Any) -> Any:
    for child in children:
        yield child
        if child.children:
            yield from _walk(child.children)
