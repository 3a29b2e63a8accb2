"""kill_child, restarts by reason, backoff waits and timed-out asks in which_children."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing
from probes import Journal, Sleep, spec, supervisor

from daz_actors import (
    Actor,
    ActorCrashed,
    ActorStopped,
    AskTimeout,
    BackoffPolicy,
    ChildSpec,
    ChildState,
    Jitter,
    Killed,
    NoSuchActor,
    Restart,
    Strategy,
    actor_factory,
)
from daz_actors.runtime.mailbox import Ask, Mailbox
from daz_actors.testing import fast_policy, open_tree, wait_until


async def ask_a(sup, outcomes: list[object], message: object) -> None:
    """Ask child "a"; record its answer or the ActorCrashed error."""
    try:
        outcomes.append(await sup.ref("a").ask(message, timeout=1000))
    except ActorCrashed as exc:
        outcomes.append(exc)


def info(sup, name):
    return next(c for c in sup.which_children() if c.name == name)


async def test_kill_child_crashes_it_and_the_strategy_applies():
    """A killed child exits with Killed; rest_for_one restarts it and the ones after it."""
    journal = Journal()
    sup = supervisor(
        "sup",
        [spec(journal, "a"), spec(journal, "b"), spec(journal, "c")],
        fast_policy(Strategy.REST_FOR_ONE),
    )
    async with open_tree(sup):
        await sup.ref("b").ask("ping")
        sup.kill_child("b", "fault injection")
        await wait_until(lambda: journal.of("start").count("b") == 2)
        await wait_until(lambda: all(c.state is ChildState.RUNNING for c in sup.which_children()))
        assert journal.of("start") == ["a", "b", "c", "b", "c"]
        b = info(sup, "b")
        assert b.last_error is not None
        assert "Killed" in b.last_error
        assert "fault injection" in b.last_error
        assert b.restarts_by_reason == (("Killed", 1),)
        assert info(sup, "c").restarts_by_reason == (("sibling", 1),)
        assert info(sup, "a").restarts_by_reason == ()
        assert await sup.ref("b").ask("ping") == ("b", 2, "ping")


async def test_kill_child_interrupts_a_busy_handler():
    """A child stuck in a handler is killed at once, not after the handler returns."""
    journal = Journal()
    sup = supervisor("sup", [spec(journal, "a")], fast_policy())
    async with open_tree(sup), trio.open_nursery() as nursery:

        async def busy() -> None:
            with pytest.raises(ActorCrashed) as crashed:
                await sup.ref("a").ask(Sleep(1000), timeout=1000)
            assert isinstance(crashed.value.__cause__, Killed)

        nursery.start_soon(busy)
        await wait_until(lambda: info(sup, "a").mailbox_depth == 0)
        await trio.testing.wait_all_tasks_blocked()
        sup.kill_child("a")
        await wait_until(lambda: journal.of("start").count("a") == 2)


async def test_kill_child_of_a_child_that_does_not_run_is_refused():
    """Killing a stopped child raises; two kills before the first took effect crash it once."""
    journal = Journal()
    sup = supervisor(
        "sup", [spec(journal, "a"), spec(journal, "t", Restart.TRANSIENT)], fast_policy()
    )
    async with open_tree(sup):
        assert await sup.ref("t").ask("exit") == "bye"
        await wait_until(lambda: info(sup, "t").state is ChildState.STOPPED)
        with pytest.raises(ActorStopped, match="'t' is not running"):
            sup.kill_child("t")
        with pytest.raises(NoSuchActor):
            sup.kill_child("nobody")
        sup.kill_child("a")
        sup.kill_child("a")
        await wait_until(
            lambda: info(sup, "a").state is ChildState.RUNNING and info(sup, "a").incarnation == 2
        )
        assert info(sup, "a").restarts == 1


async def test_reasons_count_crashes_exits_and_requests():
    journal = Journal()
    sup = supervisor("sup", [spec(journal, "a")], fast_policy())
    async with open_tree(sup):
        with pytest.raises(Exception, match="crashed"):
            await sup.ref("a").ask("crash")
        await wait_until(lambda: info(sup, "a").state is ChildState.RUNNING)
        assert await sup.ref("a").ask("exit") == "bye"
        await wait_until(lambda: info(sup, "a").restarts == 2)
        await wait_until(lambda: info(sup, "a").state is ChildState.RUNNING)
        await sup.restart_child("a")
        a = info(sup, "a")
        assert a.restarts == 3
        assert a.restarts_by_reason == (("Boom", 1), ("exit", 1), ("request", 1))
        assert sum(n for _, n in a.restarts_by_reason) == a.restarts


async def test_backoff_waits_are_counted_with_their_total(autojump_clock):
    journal = Journal()
    backoff = BackoffPolicy(initial=2.0, multiplier=3.0, max_delay=60.0, jitter=Jitter.NONE)
    sup = supervisor("sup", [spec(journal, "a")], fast_policy(backoff=backoff))
    async with open_tree(sup):
        assert info(sup, "a").backoff_waits == 0
        for expected_starts in (2, 3):
            with pytest.raises(Exception, match="crashed"):
                await sup.ref("a").ask("crash")
            await wait_until(lambda n=expected_starts: journal.of("start").count("a") == n)
        a = info(sup, "a")
        assert a.backoff_waits == 2
        assert a.backoff_seconds == pytest.approx(2.0 + 6.0)


async def test_asks_that_time_out_are_counted_on_the_target():
    journal = Journal()
    sup = supervisor("sup", [spec(journal, "a", mailbox_size=1)], fast_policy())
    async with open_tree(sup):
        with pytest.raises(AskTimeout):  # fast path: the per-run deadline task fails it
            await sup.ref("a").ask(Sleep(5), timeout=0.05)
        assert info(sup, "a").asks_timed_out == 1
        async with trio.open_nursery() as nursery:  # slow path: waiting for mailbox room
            nursery.start_soon(sup.ref("a").send, Sleep(0.5))
            await wait_until(lambda: info(sup, "a").mailbox_depth == 1)
            with pytest.raises(AskTimeout):
                await sup.ref("a").ask("ping", timeout=0.05)
        assert info(sup, "a").asks_timed_out == 2


async def test_a_group_restart_fails_the_asks_waiting_for_the_crashed_child_at_once():
    """rest_for_one: asks still queued for the crashed child fail with ActorCrashed now,
    instead of waiting for its restart (which waits for the siblings, maybe the askers);
    a tell queued for it is kept and handled by the next incarnation."""
    journal = Journal()
    sup = supervisor(
        "sup", [spec(journal, "a"), spec(journal, "b")], fast_policy(Strategy.REST_FOR_ONE)
    )
    async with open_tree(sup), trio.open_nursery() as nursery:
        outcomes: list[object] = []
        ask = partial(ask_a, sup, outcomes)

        nursery.start_soon(ask, Sleep(1000))  # being handled when "a" is killed
        await wait_until(lambda: info(sup, "a").mailbox_depth == 0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(ask, "queued")  # waits in the mailbox
        await wait_until(lambda: info(sup, "a").mailbox_depth == 1)
        await sup.ref("a").send("told")
        sup.kill_child("a", "test")
        await wait_until(lambda: len(outcomes) == 2)
        assert all(isinstance(o, ActorCrashed) for o in outcomes), outcomes
        assert "Killed" in str(outcomes[1])
        await wait_until(
            lambda: info(sup, "a").incarnation == 2 and info(sup, "a").mailbox_depth == 0
        )
        assert info(sup, "b").restarts_by_reason == (("sibling", 1),)


async def test_one_for_one_keeps_waiting_asks_for_the_next_incarnation():
    journal = Journal()
    sup = supervisor("sup", [spec(journal, "a"), spec(journal, "b")], fast_policy())
    async with open_tree(sup), trio.open_nursery() as nursery:
        outcomes: list[object] = []
        ask = partial(ask_a, sup, outcomes)

        nursery.start_soon(ask, Sleep(1000))
        await wait_until(lambda: info(sup, "a").mailbox_depth == 0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(ask, "queued")
        await wait_until(lambda: info(sup, "a").mailbox_depth == 1)
        sup.kill_child("a", "test")
        await wait_until(lambda: len(outcomes) == 2)
        assert isinstance(outcomes[0], ActorCrashed)
        assert outcomes[1] == ("a", 2, "queued")


class Keeper(Actor):
    """Records the tells it handles. Told ``"work"``, it stays busy until asked to stop,
    then asks `ask_on_stop` (as a stopping retry worker hands its leases back through the
    gateway) and records how that went."""

    def __init__(self, seen: list[object], ask_on_stop: str | None = None) -> None:
        self.seen = seen
        self.ask_on_stop = ask_on_stop

    async def handle(self, message: object) -> object:
        if isinstance(message, Sleep):
            await trio.sleep(message.seconds)
        if message == "work" and self.ask_on_stop is not None:
            with self.ctx.busy():
                await self.ctx.stop_requested.wait()
                try:
                    await self.ctx.registry.lookup(self.ask_on_stop).ask("on stop", timeout=1000)
                except ActorCrashed as exc:
                    self.seen.append(("asked on stop", exc))
        self.seen.append((self.ctx.name, self.ctx.incarnation, message))
        return "ok"


async def test_asks_made_while_the_group_stops_fail_at_once_and_tells_wait():
    """rest_for_one: while the crashed child waits for its siblings to stop, a sibling's
    ask made in its own orderly stop fails at once (it would otherwise wait out its
    timeout and hold the restart up); a tell sent meanwhile is handled after the restart."""
    seen: list[object] = []
    sup = supervisor(
        "sup",
        [
            ChildSpec(name="a", start=actor_factory(lambda: Keeper(seen))),
            ChildSpec(name="b", start=actor_factory(lambda: Keeper(seen, ask_on_stop="a"))),
        ],
        fast_policy(Strategy.REST_FOR_ONE),
    )
    async with open_tree(sup):
        await sup.ref("b").send("work")
        await sup.ref("a").send(Sleep(1000))
        await wait_until(lambda: info(sup, "a").mailbox_depth == 0)
        await wait_until(lambda: info(sup, "b").mailbox_depth == 0)
        await trio.testing.wait_all_tasks_blocked()
        await sup.ref("a").send("told while it ran")
        sup.kill_child("a", "test")
        await wait_until(lambda: info(sup, "b").incarnation == 2)
        await wait_until(lambda: ("a", 2, "told while it ran") in seen)
        asked = [e for e in seen if e[0] == "asked on stop"]
        assert len(asked) == 1
        assert "Killed" in str(asked[0][1])


async def test_a_down_mailbox_fails_asks_at_once_keeps_tells_in_order_until_up():
    box = Mailbox("m", 2)
    box.put_nowait("tell 1")
    queued = Ask("ask 1")
    box.put_nowait(queued)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(box.put, "tell 2")  # blocked: the mailbox is full
        await trio.testing.wait_all_tasks_blocked()
        assert box.mark_down(lambda: ActorCrashed("down")) == 1
    with pytest.raises(ActorCrashed, match="down"):
        await queued.wait()
    late = Ask("ask 2")
    assert box.put_nowait(late)
    with pytest.raises(ActorCrashed):
        await late.wait()
    box.put_nowait("tell 3")
    box.mark_up()
    third = Ask("ask 3")
    box.put_nowait(third)
    assert [await box.get() for _ in range(4)] == ["tell 1", "tell 2", "tell 3", third]
    assert box.depth == 0
