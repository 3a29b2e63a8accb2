"""Actors, refs and mailboxes: tell, try_send, ask and their failure modes."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from probes import Boom, Journal, Sleep, spec, supervisor

import daz_actors
from daz_actors import (
    Actor,
    ActorCrashed,
    ActorStopped,
    AskTimeout,
    ChildSpec,
    ChildState,
    NoSuchActor,
    Registry,
    actor_factory,
)
from daz_actors.runtime.mailbox import Mailbox
from daz_actors.runtime.ref import ActorRef
from daz_actors.testing import fast_policy, open_tree, wait_until


class Counter(Actor):
    """Counts the messages it handles; blocks on ``"hold"`` until released."""

    def __init__(self, gate: trio.Event, seen: list[object]) -> None:
        self.gate = gate
        self.seen = seen

    async def handle(self, message: object) -> object:
        if message == "hold":
            await self.gate.wait()
        self.seen.append(message)
        return len(self.seen)


def counter_tree(mailbox_size: int = 2):
    gate, seen = trio.Event(), []
    sup = supervisor(
        "sup",
        [
            ChildSpec(
                name="n",
                start=actor_factory(lambda: Counter(gate, seen)),
                mailbox_size=mailbox_size,
            )
        ],
        fast_policy(),
    )
    return sup, gate, seen


async def test_ask_returns_the_handlers_value():
    """ask returns what handle returned; tells are handled in order."""
    sup, _gate, seen = counter_tree(10)
    async with open_tree(sup):
        ref = sup.ref("n")
        await ref.send("one")
        await ref.send("two")
        assert await ref.ask("three") == 3
        assert seen == ["one", "two", "three"]


async def test_ask_timeout_raises_and_never_hangs(autojump_clock):
    """An actor slower than the timeout makes ask raise AskTimeout."""
    journal = Journal()
    sup = supervisor("sup", [spec(journal, "w")], fast_policy())
    async with open_tree(sup):
        ref = sup.ref("w")
        started = trio.current_time()
        with pytest.raises(AskTimeout, match="no reply from 'w' within 2 s"):
            await ref.ask(Sleep(10), timeout=2)
        assert trio.current_time() - started == pytest.approx(2, abs=0.01)
        assert await ref.ask("ping", timeout=20) == ("w", 1, "ping")


async def test_abandoned_asks_are_skipped_by_the_actor(autojump_clock):
    """An ask that timed out while still queued is not handled later."""
    sup, gate, seen = counter_tree(10)
    async with open_tree(sup):
        ref = sup.ref("n")
        await ref.send("hold")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(AskTimeout):
            await ref.ask("late", timeout=1)
        gate.set()
        assert await ref.ask("after") == 2
        assert seen == ["hold", "after"]


async def test_ask_on_a_crash_raises_actor_crashed_with_the_cause():
    """The asker of the message an actor crashed on gets ActorCrashed, caused by the error."""
    journal = Journal()
    sup = supervisor("sup", [spec(journal, "w")], fast_policy())
    async with open_tree(sup):
        with pytest.raises(ActorCrashed) as caught:
            await sup.ref("w").ask("crash")
        assert isinstance(caught.value.__cause__, Boom)


async def test_try_send_counts_a_full_mailbox_and_send_waits_for_room():
    """try_send returns False (and counts) when full; send waits until there is room."""
    sup, gate, seen = counter_tree(mailbox_size=2)
    async with open_tree(sup), trio.open_nursery() as nursery:
        ref = sup.ref("n")
        await ref.send("hold")
        await trio.testing.wait_all_tasks_blocked()
        assert ref.try_send("a")
        assert ref.try_send("b")
        assert ref.mailbox_depth == 2
        assert not ref.try_send("c")
        assert ref.full_count == 1
        sent = trio.Event()

        async def blocked_sender():
            await ref.send("d")
            sent.set()

        nursery.start_soon(blocked_sender)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set()
        gate.set()
        await sent.wait()
        assert await ref.ask("e") == 5
        assert seen == ["hold", "a", "b", "d", "e"]


async def test_stopped_mailbox_refuses_and_fails_queued_asks():
    """Closing a mailbox fails its queued asks with ActorStopped and counts dropped tells."""
    mailbox = Mailbox("gone", 4)
    ref = ActorRef(mailbox)
    ref.try_send("tell")
    results = []

    async def asker():
        try:
            await ref.ask("q")
        except ActorStopped as exc:
            results.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(asker)
        await trio.testing.wait_all_tasks_blocked()
        mailbox.close()
    assert len(results) == 1
    assert mailbox.dropped_on_close == 1
    with pytest.raises(ActorStopped):
        await ref.send("x")
    with pytest.raises(ActorStopped):
        ref.try_send("x")


@pytest.mark.parametrize("timeout", [0, -1, float("nan")])
async def test_ask_rejects_a_bad_timeout(timeout):
    """A timeout that is not a positive number is refused before sending."""
    ref = ActorRef(Mailbox("x", 1))
    with pytest.raises(ValueError, match="timeout"):
        await ref.ask("m", timeout=timeout)
    assert ref.mailbox_depth == 0


def test_registry_lookup_names_the_missing_actor():
    """Looking up an unknown name raises NoSuchActor naming it."""
    with pytest.raises(NoSuchActor, match="'nobody'"):
        Registry().lookup("nobody")


def test_mailbox_capacity_must_be_positive():
    """A mailbox of capacity 0 is refused."""
    with pytest.raises(ValueError, match="capacity"):
        Mailbox("x", 0)


async def test_refs_deliver_across_many_restarts():
    """One ref keeps reaching the actor through a hundred crashes."""
    journal = Journal()
    sup = supervisor("sup", [spec(journal, "w")], fast_policy())
    async with open_tree(sup):
        ref = sup.ref("w")
        for n in range(100):
            with pytest.raises(ActorCrashed):
                await ref.ask("crash")
            await wait_until(lambda n=n: len(journal.of("start")) == n + 2)
        assert await ref.ask("ping") == ("w", 101, "ping")
    assert journal.overlaps == []


def test_public_names_are_exported():
    """Every public name is importable from the package and listed once."""
    exported = [n for n in dir(daz_actors) if not n.startswith("_")]
    for name in exported:
        obj = getattr(daz_actors, name)
        module = getattr(obj, "__module__", "daz_actors") or "daz_actors"
        assert module.startswith("daz_actors"), name
    for required in ["Actor", "ActorRef", "Supervisor", "ChildSpec", "EventBus", "run_tree"]:
        assert required in exported


async def test_mailbox_depth_and_refusals_reach_the_metrics():
    """A full mailbox shows in which_children and in the metrics snapshot."""
    from daz_actors.ops.health import _RootView
    from daz_actors.ops.metrics import Sources as MetricSources
    from daz_actors.ops.metrics import snapshot

    sup, gate, _seen = counter_tree(mailbox_size=1)
    async with open_tree(sup):
        ref = sup.ref("n")
        await ref.send("hold")
        await trio.testing.wait_all_tasks_blocked()
        assert ref.try_send("queued")
        assert not ref.try_send("refused")
        info = sup.which_children()[0]
        snap = await snapshot(MetricSources(tree=_RootView(sup)))
        gate.set()
    assert (info.mailbox_depth, info.mailbox_full) == (1, 1)
    actor = next(a for a in snap.actors if a.path == "n")
    assert (actor.mailbox_depth, actor.mailbox_full) == (1, 1)


class Stopping(Actor):
    """Records its on_stop; its on_stop awaits (a checkpoint), as one that flushes would."""

    def __init__(self, seen: list[object]) -> None:
        self.seen = seen

    async def handle(self, message: object) -> object:
        self.seen.append(message)
        return "ok"

    async def on_stop(self) -> None:
        await trio.lowlevel.checkpoint()
        self.seen.append(("on_stop", self.ctx.incarnation))


async def test_on_stop_runs_for_an_actor_idle_when_the_tree_stops():
    """An orderly stop reaches an idle actor where it waits for its next message: its
    on_stop still runs (and may await), once per incarnation."""
    seen: list[object] = []
    sup = supervisor(
        "sup",
        [ChildSpec(name="s", start=actor_factory(lambda: Stopping(seen)))],
        fast_policy(),
    )
    with trio.fail_after(10):
        async with open_tree(sup):
            assert await sup.ref("s").ask("hello") == "ok"
            await trio.testing.wait_all_tasks_blocked()
    assert seen == ["hello", ("on_stop", 1)]


async def test_on_stop_is_skipped_for_a_killed_actor():
    """A kill is a crash, not an orderly stop: no on_stop for that incarnation."""
    seen: list[object] = []
    sup = supervisor(
        "sup",
        [ChildSpec(name="s", start=actor_factory(lambda: Stopping(seen)))],
        fast_policy(),
    )
    with trio.fail_after(10):
        async with open_tree(sup):
            await sup.ref("s").ask("hello")
            sup.kill_child("s", "test")
            await wait_until(
                lambda: [(c.incarnation, c.state) for c in sup.which_children()]
                == [(2, ChildState.RUNNING)]
            )
            assert await sup.ref("s").ask("again") == "ok"
            await trio.testing.wait_all_tasks_blocked()
    assert seen == ["hello", "again", ("on_stop", 2)]
