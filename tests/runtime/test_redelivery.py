"""ChildSpec.redeliver: a tell the child crashed on goes to its next incarnation."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing
from probes import supervisor

from daz_actors import (
    Actor,
    ActorRef,
    ChildSpec,
    ChildState,
    EventBus,
    FailureEvent,
    Overflow,
    actor_factory,
    default_kinds,
)
from daz_actors.app.config import parse_config
from daz_actors.ops.metrics import Metrics, Sources, snapshot
from daz_actors.runtime.mailbox import Mailbox
from daz_actors.testing import fast_policy, open_tree, wait_until


@attrs.frozen
class Store:
    """Record `value`; crash on it while the incarnation is at most `crash_until`."""

    value: str
    crash_until: int = 0


@attrs.frozen
class Hang:
    """Handle forever (until killed)."""


class Recorder(Actor):
    def __init__(self, seen: list[tuple[str, int]]) -> None:
        self.seen = seen

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Hang):
            await trio.sleep_forever()
        if isinstance(message, Store):
            if self.ctx.incarnation <= message.crash_until:
                raise RuntimeError(f"crashing on {message.value}")
            self.seen.append((message.value, self.ctx.incarnation))
        return None


def recorder(seen: list[tuple[str, int]], redeliver: int) -> ChildSpec:
    return ChildSpec(name="rec", start=actor_factory(lambda: Recorder(seen)), redeliver=redeliver)


def info(sup):
    return sup.which_children()[0]


async def test_a_tell_the_actor_crashed_on_is_handled_by_the_next_incarnation_first():
    seen: list[tuple[str, int]] = []
    sup = supervisor("sup", [recorder(seen, redeliver=3)], fast_policy())
    async with open_tree(sup):
        ref = sup.ref("rec")
        await ref.send(Store("a", crash_until=2))  # crashes incarnations 1 and 2
        await ref.send(Store("b"))
        await wait_until(lambda: len(seen) == 2)
        assert seen == [("a", 3), ("b", 3)]  # "a" first: order is kept
        assert info(sup).redelivered == 2
        assert info(sup).poison_dropped == 0
        assert info(sup).restarts == 2


async def test_a_poison_tell_is_dropped_after_redeliver_crashes_and_the_rest_goes_on(caplog):
    seen: list[tuple[str, int]] = []
    bus = EventBus()
    dropped = Mailbox("listener", 10)
    bus.subscribe("actor.poison.failed", ActorRef(dropped), overflow=Overflow.BLOCK)
    sup = supervisor("sup", [recorder(seen, redeliver=2)], fast_policy(), bus=bus)
    async with open_tree(sup) as tree:
        ref = sup.ref("rec")
        await ref.send(Store("poison", crash_until=100))
        await ref.send(Store("fine"))
        await wait_until(lambda: len(seen) == 1)
        assert seen == [("fine", 4)]  # 1 delivery + 2 redeliveries crashed, then dropped
        assert (info(sup).redelivered, info(sup).poison_dropped) == (2, 1)
        exposition = Metrics().render(await snapshot(Sources(tree=tree))).decode()
        assert 'daz_actor_redelivered_total{actor="rec"} 2.0' in exposition
        assert 'daz_actor_poison_dropped_total{actor="rec"} 1.0' in exposition
        event = (await dropped.get()).event  # kept durably: the queue dead-letters it
        assert isinstance(event, FailureEvent)
        assert (event.event_type, event.retryable) == ("actor.poison", True)
        assert event.intent is not None
        assert event.intent.name == "actor.poison"
        assert event.intent.args["message"] == repr(Store("poison", crash_until=100))
        assert "crashed on it 3 times" in event.error
    assert "dropping Store" in caplog.text
    assert "'rec' crashed on it 3 times (poison)" in caplog.text


async def test_without_redeliver_the_tell_is_gone_as_in_erlang():
    seen: list[tuple[str, int]] = []
    sup = supervisor("sup", [recorder(seen, redeliver=0)], fast_policy())
    async with open_tree(sup):
        ref = sup.ref("rec")
        await ref.send(Store("a", crash_until=1))
        await ref.send(Store("b"))
        await wait_until(lambda: len(seen) == 1)
        assert seen == [("b", 2)]
        assert info(sup).redelivered == 0


async def test_a_killed_actor_gets_the_tell_it_was_handling_again():
    seen: list[tuple[str, int]] = []
    sup = supervisor("sup", [recorder(seen, redeliver=1)], fast_policy())
    async with open_tree(sup):
        ref = sup.ref("rec")
        await ref.send(Hang())
        await wait_until(lambda: info(sup).mailbox_depth == 0)
        await trio.testing.wait_all_tasks_blocked()
        sup.kill_child("rec", "test")
        # incarnation 2 hangs on the redelivered Hang again: kill it too, then it is dropped
        await wait_until(
            lambda: info(sup).incarnation == 2 and info(sup).state is ChildState.RUNNING
        )
        await wait_until(lambda: info(sup).mailbox_depth == 0)
        await trio.testing.wait_all_tasks_blocked()
        sup.kill_child("rec", "test")
        await ref.send(Store("after"))
        await wait_until(lambda: seen == [("after", 3)])
        assert (info(sup).redelivered, info(sup).poison_dropped) == (1, 1)


async def test_redelivered_messages_count_in_the_depth_and_close_drops_them():
    box = Mailbox("m", 2)
    box.put_nowait("x")
    box.redeliver("first")
    assert box.depth == 2
    assert await box.get() == "first"
    box.redeliver("again")
    box.close()
    assert box.dropped_on_close == 2


def test_redeliver_must_be_a_count():
    with pytest.raises(ValueError, match="redeliver must be an integer >= 0"):
        ChildSpec(name="x", start=actor_factory(Actor), redeliver=-1)
    text = """
    [tree]
    root = "daz"
    [supervisors.daz]
    children = ["failure-log"]
    [actors.failure-log]
    kind = "failure-log"
    redeliver = 2
    """
    assert parse_config(text, default_kinds()).actors["failure-log"].redeliver == 2


async def test_a_tell_cancelled_by_a_slow_orderly_stop_is_given_again():
    """restart_child (as the health monitor does) on an actor stuck mid-message past its
    shutdown timeout: with redeliver the message goes to the next incarnation."""
    seen: list[tuple[str, int]] = []
    spec = attrs.evolve(recorder(seen, redeliver=1), shutdown_timeout=0.05)
    sup = supervisor("sup", [spec], fast_policy())
    async with open_tree(sup):
        ref = sup.ref("rec")
        await ref.send(Hang())
        await wait_until(lambda: info(sup).mailbox_depth == 0)
        await trio.testing.wait_all_tasks_blocked()
        await sup.restart_child("rec")
        assert info(sup).redelivered == 1
        assert info(sup).mailbox_depth == 0  # the Hang was taken again by incarnation 2
        await ref.send(Store("after"))
        await sup.restart_child("rec")  # stuck on the Hang again: dropped as poison now
        await wait_until(lambda: seen == [("after", 3)])
        assert (info(sup).redelivered, info(sup).poison_dropped) == (1, 1)


@attrs.frozen
class Line:
    """A keyed message: `replay` copies count as the same message (as a chat replay)."""

    text: str
    replay: bool = False

    def poison_key(self) -> str:
        return self.text


class CrashesOnBad(Actor):
    def __init__(self, seen: list[Line]) -> None:
        self.seen = seen

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Line) and message.text == "bad":
            raise RuntimeError("crashing on the bad line")
        self.seen.append(message)


async def test_a_copy_of_a_message_dropped_as_poison_is_skipped_not_crashed_on():
    """Once a keyed tell is dropped as poison, a later copy (a replay: another object,
    other fields) is skipped and counted; the actor does not crash again, and unkeyed
    messages are never skipped."""
    seen: list[Any] = []
    spec = ChildSpec(name="rec", start=actor_factory(lambda: CrashesOnBad(seen)), redeliver=1)
    sup = supervisor("sup", [spec], fast_policy())
    async with open_tree(sup) as tree:
        ref = sup.ref("rec")
        await ref.send(Line("bad"))
        await wait_until(lambda: info(sup).poison_dropped == 1)
        restarts = info(sup).restarts
        await ref.send(Line("bad", replay=True))
        await ref.send(Line("good", replay=True))
        await ref.send("unkeyed")
        await wait_until(lambda: len(seen) == 2)
        assert seen == [Line("good", replay=True), "unkeyed"]
        assert (info(sup).restarts, info(sup).poison_skipped) == (restarts, 1)
        exposition = Metrics().render(await snapshot(Sources(tree=tree))).decode()
        assert 'daz_actor_poison_skipped_total{actor="rec"} 1.0' in exposition
