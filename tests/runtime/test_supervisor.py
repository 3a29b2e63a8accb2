"""Supervision semantics: strategies, restart types, intensity, backoff, start and shutdown."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing
from probes import Boom, Journal, Sleep, spec, supervisor

from daz_actors import (
    ActorCrashed,
    ActorFailed,
    ActorStopped,
    BackoffPolicy,
    ChildSpec,
    ChildState,
    EventBus,
    Jitter,
    NameTaken,
    Overflow,
    Published,
    Registry,
    Restart,
    StartFailed,
    Strategy,
    SupervisorGaveUp,
    run_tree,
)
from daz_actors.runtime.mailbox import Mailbox
from daz_actors.runtime.ref import ActorRef
from daz_actors.testing import fast_policy, open_tree, wait_until


def three(journal: Journal, strategy: Strategy, **policy: object):
    return supervisor(
        "sup",
        [spec(journal, "a"), spec(journal, "b"), spec(journal, "c")],
        fast_policy(strategy, **policy),  # type: ignore[arg-type]
    )


async def crash_and_wait(sup, name: str, journal: Journal, expected_starts: int) -> None:
    with pytest.raises(Exception, match="crashed"):
        await sup.ref(name).ask("crash")
    await wait_until(lambda: len(journal.of("start")) >= expected_starts)
    await wait_until(lambda: all(c.state is ChildState.RUNNING for c in sup.which_children()))


async def test_children_start_in_order_and_stop_in_reverse():
    """Children start in spec order and an orderly stop stops them in reverse order."""
    journal = Journal()
    sup = three(journal, Strategy.ONE_FOR_ONE)
    async with open_tree(sup):
        assert journal.of("start") == ["a", "b", "c"]
    assert journal.of("stop") == ["c", "b", "a"]
    assert journal.total_running() == 0


async def test_one_for_one_restarts_only_the_crashed_child():
    """one_for_one: a crash restarts that child alone."""
    journal = Journal()
    sup = three(journal, Strategy.ONE_FOR_ONE)
    async with open_tree(sup):
        await crash_and_wait(sup, "b", journal, 4)
        assert journal.of("start") == ["a", "b", "c", "b"]
        assert [c.restarts for c in sup.which_children()] == [0, 1, 0]
        assert await sup.ref("b").ask("ping") == ("b", 2, "ping")


async def test_one_for_all_restarts_every_child_in_order():
    """one_for_all: the others stop in reverse order, then all start again in order."""
    journal = Journal()
    sup = three(journal, Strategy.ONE_FOR_ALL)
    async with open_tree(sup):
        await crash_and_wait(sup, "b", journal, 6)
        assert journal.of("stop") == ["b", "c", "a"]
        assert journal.of("start") == ["a", "b", "c", "a", "b", "c"]
        assert [c.restarts for c in sup.which_children()] == [1, 1, 1]


async def test_rest_for_one_restarts_the_child_and_those_after_it():
    """rest_for_one: the crashed child and later siblings restart; earlier ones keep running."""
    journal = Journal()
    sup = three(journal, Strategy.REST_FOR_ONE)
    async with open_tree(sup):
        await crash_and_wait(sup, "b", journal, 5)
        assert journal.of("stop") == ["b", "c"]
        assert journal.of("start") == ["a", "b", "c", "b", "c"]
        assert [c.incarnation for c in sup.which_children()] == [1, 2, 2]


@pytest.mark.parametrize(
    ("restart", "message", "restarted"),
    [
        (Restart.PERMANENT, "exit", True),
        (Restart.PERMANENT, "crash", True),
        (Restart.TRANSIENT, "exit", False),
        (Restart.TRANSIENT, "crash", True),
        (Restart.TEMPORARY, "exit", False),
        (Restart.TEMPORARY, "crash", False),
    ],
)
async def test_restart_types(restart, message, restarted):
    """permanent always restarts, transient only after a crash, temporary never."""
    journal = Journal()
    sup = supervisor("sup", [spec(journal, "w", restart)], fast_policy())
    async with open_tree(sup):
        ref = sup.ref("w")
        if message == "crash":
            with pytest.raises(ActorCrashed):
                await ref.ask(message)
        else:
            assert await ref.ask(message) == "bye"
        await wait_until(lambda: journal.running.get("w") == 0 or len(journal.of("start")) == 2)
        await trio.testing.wait_all_tasks_blocked()
        if restarted:
            await wait_until(lambda: len(journal.of("start")) == 2)
            assert await ref.ask("ping") == ("w", 2, "ping")
        else:
            assert journal.of("start") == ["w"]
            children = sup.which_children()
            if restart is Restart.TEMPORARY:
                assert children == []
                with pytest.raises(ActorStopped):
                    await ref.send("ping")
            else:
                assert children[0].state is ChildState.STOPPED


async def test_intensity_exceeded_gives_up_with_the_childs_error():
    """More than max_restarts within the window: children stop, the supervisor raises."""
    journal = Journal()
    sup = three(journal, Strategy.ONE_FOR_ONE, max_restarts=2, within_seconds=10)
    with pytest.RaisesGroup(SupervisorGaveUp, flatten_subgroups=True) as caught:
        async with open_tree(sup):
            for _ in range(3):
                with pytest.raises(Exception, match="crashed"):
                    await sup.ref("b").ask("crash")
            await trio.sleep_forever()
    gave_up = caught.value.exceptions[0]
    assert isinstance(gave_up.__cause__, Boom)
    assert gave_up.child == "b"
    assert journal.of("start") == ["a", "b", "c", "b", "b"]
    assert journal.of("stop")[-2:] == ["c", "a"]
    assert journal.total_running() == 0


async def test_intensity_window_slides(autojump_clock):
    """Restarts spread wider than the window never exceed the intensity."""
    journal = Journal()
    sup = three(journal, Strategy.ONE_FOR_ONE, max_restarts=1, within_seconds=5)
    async with open_tree(sup):
        for n in range(5):
            await crash_and_wait(sup, "a", journal, 4 + n)
            await trio.sleep(6)
        assert sup.which_children()[0].restarts == 5


async def test_nested_supervisor_escalates_and_refs_survive():
    """A child supervisor that gives up is restarted by its parent; refs stay valid."""
    journal = Journal()
    registry, bus = Registry(), EventBus()
    inner = supervisor("inner", [spec(journal, "x")], fast_policy(max_restarts=0), registry, bus)
    outer = supervisor(
        "outer",
        [ChildSpec(name="inner", start=inner, shutdown_timeout=None), spec(journal, "y")],
        fast_policy(),
        registry,
        bus,
    )
    async with open_tree(outer):
        x = registry.lookup("x")
        with pytest.raises(Exception, match="crashed"):
            await x.ask("crash")
        await wait_until(lambda: outer.which_children()[0].restarts == 1)
        await wait_until(lambda: outer.which_children()[0].state is ChildState.RUNNING)
        info = outer.which_children()[0]
        assert "SupervisorGaveUp" in (info.last_error or "")
        assert await x.ask("ping") == ("x", 2, "ping")
        assert info.children is not None
        assert info.children[0].name == "x"
        assert journal.starts("y") == [("y", 1)]


async def test_backoff_delays_follow_the_policy_and_reset(autojump_clock):
    """Restart waits follow initial * multiplier^n, and start over after a stable period."""
    journal = Journal()
    backoff = BackoffPolicy(initial=1.0, multiplier=2.0, max_delay=8.0, jitter=Jitter.NONE)
    sup = supervisor("sup", [spec(journal, "w")], fast_policy(backoff=backoff, reset_after=100.0))
    async with open_tree(sup):
        ref = sup.ref("w")
        waits = []
        for n in range(5):
            with pytest.raises(Exception, match="crashed"):
                await ref.ask("crash")
            crashed_at = trio.current_time()
            await wait_until(lambda: sup.which_children()[0].state is ChildState.BACKING_OFF)
            info = sup.which_children()[0]
            assert info.backoff_until is not None
            waits.append(info.backoff_until - crashed_at)
            await wait_until(lambda n=n: len(journal.of("start")) == n + 2)
            assert trio.current_time() >= info.backoff_until
        assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]
        await trio.sleep(150)  # the child now runs longer than reset_after
        with pytest.raises(Exception, match="crashed"):
            await ref.ask("crash")
        crashed_at = trio.current_time()
        await wait_until(lambda: sup.which_children()[0].state is ChildState.BACKING_OFF)
        assert sup.which_children()[0].backoff_until == pytest.approx(crashed_at + 1.0)


async def test_shutdown_does_not_wait_out_a_backoff(autojump_clock):
    """Stopping during a one-hour backoff returns at once (in trio's clock)."""
    journal = Journal()
    backoff = BackoffPolicy(initial=3600.0, max_delay=3600.0, jitter=Jitter.NONE)
    sup = supervisor("sup", [spec(journal, "w")], fast_policy(backoff=backoff))
    async with open_tree(sup) as tree:
        with pytest.raises(Exception, match="crashed"):
            await sup.ref("w").ask("crash")
        await wait_until(lambda: sup.which_children()[0].state is ChildState.BACKING_OFF)
        stopped_at = trio.current_time()
        tree.stop()
    assert trio.current_time() - stopped_at < 1.0
    assert journal.of("start") == ["w"]


async def test_busy_child_finishes_its_message_within_the_shutdown_timeout(autojump_clock):
    """An orderly stop lets a busy actor finish its current message when it fits the timeout."""
    journal = Journal()
    sup = supervisor("sup", [spec(journal, "w", shutdown_timeout=10.0)], fast_policy())
    async with trio.open_nursery() as nursery:
        tree = await nursery.start(run_tree, sup)
        results = []

        async def ask_sleep():
            results.append(await sup.ref("w").ask(Sleep(5.0), timeout=60))

        nursery.start_soon(ask_sleep)
        await wait_until(lambda: sup.ref("w").mailbox_depth == 0)
        await trio.testing.wait_all_tasks_blocked()
        started = trio.current_time()
        tree.stop()
    assert results == ["slept"]
    assert 4.9 < trio.current_time() - started < 10.0


async def test_child_past_its_shutdown_timeout_is_cancelled(autojump_clock):
    """A busy actor that overruns its shutdown timeout is cancelled; its asker is told."""
    journal = Journal()
    sup = supervisor("sup", [spec(journal, "w", shutdown_timeout=2.0)], fast_policy())
    async with trio.open_nursery() as nursery:
        tree = await nursery.start(run_tree, sup)
        errors = []

        async def ask_sleep():
            try:
                await sup.ref("w").ask(Sleep(100.0), timeout=1000)
            except ActorStopped as exc:
                errors.append(exc)

        nursery.start_soon(ask_sleep)
        await trio.testing.wait_all_tasks_blocked()
        started = trio.current_time()
        tree.stop()
    assert len(errors) == 1
    assert 1.9 < trio.current_time() - started < 3.0
    assert journal.total_running() == 0


async def test_a_child_starts_only_after_the_one_before_is_ready():
    """A later sibling can use an earlier one from its own start."""
    journal = Journal()
    registry = Registry()
    seen = []

    async def user(ctx, *, task_status=trio.TASK_STATUS_IGNORED):
        seen.append(await ctx.registry.lookup("a").ask("ping"))
        task_status.started()
        await trio.sleep_forever()

    sup = supervisor(
        "sup", [spec(journal, "a"), ChildSpec(name="u", start=user)], fast_policy(), registry
    )
    async with open_tree(sup):
        assert seen == [("a", 1, "ping")]


async def test_failure_before_ready_counts_as_a_crash_and_is_retried(autojump_clock):
    """A child that fails in its start is restarted with backoff until it is ready."""
    journal = Journal()
    backoff = BackoffPolicy(initial=1.0, multiplier=2.0, max_delay=10.0, jitter=Jitter.NONE)
    sup = supervisor(
        "sup", [spec(journal, "a", fail_start=2), spec(journal, "b")], fast_policy(backoff=backoff)
    )
    t0 = trio.current_time()
    async with open_tree(sup):
        assert trio.current_time() - t0 == pytest.approx(3.0, abs=0.01)
        assert journal.of("start") == ["a", "a", "a", "b"]
        assert sup.which_children()[0].restarts == 2
        assert "failed to start" in (sup.which_children()[0].last_error or "")


async def test_start_failures_past_the_intensity_fail_the_supervisor_start():
    """A child that can never start makes the supervisor give up before it is ready."""
    journal = Journal()
    sup = supervisor("sup", [spec(journal, "a", fail_start=100)], fast_policy(max_restarts=3))
    with pytest.RaisesGroup(SupervisorGaveUp, flatten_subgroups=True):
        async with open_tree(sup):
            pytest.fail("the tree must not become ready")
    assert len(journal.of("start")) == 4


async def test_dynamic_children_start_terminate_and_restart():
    """Children can be added, restarted and removed while the supervisor runs."""
    journal = Journal()
    registry = Registry()
    sup = supervisor("rooms", [], fast_policy(), registry)
    async with open_tree(sup):
        ref = await sup.start_child(spec(journal, "room:a"))
        assert registry.lookup("room:a") is ref
        assert await ref.ask("ping") == ("room:a", 1, "ping")
        with pytest.raises(NameTaken):
            await sup.start_child(spec(journal, "room:a"))
        await sup.restart_child("room:a")
        assert await ref.ask("ping") == ("room:a", 2, "ping")
        await sup.terminate_child("room:a")
        assert sup.which_children() == []
        assert "room:a" not in registry
        with pytest.raises(ActorStopped):
            await ref.ask("ping")
        with pytest.raises(StartFailed):
            await sup.start_child(spec(journal, "bad", fail_start=1))
        assert sup.which_children() == []
    assert journal.total_running() == 0


async def test_messages_queued_during_a_restart_reach_the_next_incarnation(autojump_clock):
    """Tells and asks sent while an actor backs off are handled by its next incarnation."""
    journal = Journal()
    backoff = BackoffPolicy(initial=5.0, max_delay=5.0, jitter=Jitter.NONE)
    sup = supervisor("sup", [spec(journal, "w")], fast_policy(backoff=backoff))
    async with open_tree(sup):
        ref = sup.ref("w")
        with pytest.raises(Exception, match="crashed"):
            await ref.ask("crash")
        await wait_until(lambda: sup.which_children()[0].state is ChildState.BACKING_OFF)
        await ref.send("queued tell")
        assert await ref.ask("queued ask", timeout=30) == ("w", 2, "queued ask")


async def test_crash_is_published_with_the_message_type():
    """A crash publishes ActorFailed on actor.crashed naming the message being handled."""
    journal = Journal()
    registry, bus = Registry(), EventBus()
    listener = ActorRef(Mailbox("listener", 10))
    bus.subscribe("actor.*", listener, overflow=Overflow.BLOCK)
    sup = supervisor("sup", [spec(journal, "w")], fast_policy(), registry, bus)
    async with open_tree(sup):
        with pytest.raises(Exception, match="crashed"):
            await sup.ref("w").ask("crash")
        with trio.fail_after(5):
            published = await listener._mailbox.get()
    assert isinstance(published, Published)
    assert published.topic == "actor.crashed"
    assert isinstance(published.event, ActorFailed)
    assert published.event.actor == "w"
    assert published.event.message_type == "str"
    assert published.event.error_type == "Boom"


async def test_keyboard_interrupt_in_a_child_is_not_a_crash():
    """KeyboardInterrupt raised by a child propagates out instead of causing a restart."""
    journal = Journal()

    async def interrupt(ctx, *, task_status=trio.TASK_STATUS_IGNORED):
        journal.enter(ctx.name, ctx.incarnation)
        task_status.started()
        raise KeyboardInterrupt

    sup = supervisor("sup", [ChildSpec(name="k", start=interrupt)], fast_policy())
    with pytest.RaisesGroup(KeyboardInterrupt, flatten_subgroups=True):
        await run_tree(sup)
    assert journal.of("start") == ["k"]


async def test_cancellation_of_the_tree_is_not_a_crash():
    """Cancelling the tree from outside stops every child without any restart."""
    journal = Journal()
    sup = three(journal, Strategy.ONE_FOR_ALL)
    with trio.move_on_after(60) as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_tree, sup)
            scope.cancel()
    assert journal.of("start") == ["a", "b", "c"]
    assert journal.total_running() == 0
    assert [c.restarts for c in sup.which_children()] == [0, 0, 0]


async def test_a_child_failing_while_cancelled_does_not_take_its_supervisor_down():
    """A function actor whose cleanup raises while it is stopped is logged, not escalated."""

    async def cleanup_raises(ctx, *, task_status=trio.TASK_STATUS_IGNORED):
        async def fails_on_cancel():
            try:
                await trio.sleep_forever()
            finally:
                raise ValueError("cleanup failed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fails_on_cancel)
            task_status.started()
            await trio.sleep_forever()

    registry = Registry()
    inner = supervisor("inner", [ChildSpec(name="c", start=cleanup_raises)], fast_policy(),
                       registry)  # fmt: skip
    outer = supervisor("outer", [ChildSpec(name="inner", start=inner)], fast_policy(), registry)
    async with open_tree(outer):
        await inner.restart_child("c")
        assert inner.which_children()[0].incarnation == 2
        assert outer.which_children()[0].restarts == 0


async def test_a_cancelled_start_child_leaves_no_half_started_child(autojump_clock):
    """If the caller of start_child gives up, the child is stopped and removed."""
    started: list[int] = []

    async def slow_start(ctx, *, task_status=trio.TASK_STATUS_IGNORED):
        started.append(ctx.incarnation)
        await trio.sleep(10)
        task_status.started()
        await trio.sleep_forever()

    sup = supervisor("sup", [], fast_policy())
    async with open_tree(sup):
        with trio.move_on_after(1):
            await sup.start_child(ChildSpec(name="slow", start=slow_start))
        assert sup.which_children() == []
        await trio.sleep(20)
        assert sup.which_children() == []
    assert started == [1]


async def test_failed_starts_keep_backing_off_after_a_long_run(autojump_clock):
    """Start failures after a long healthy run back off exponentially, not from scratch."""
    backoff = BackoffPolicy(initial=1.0, multiplier=2.0, max_delay=100.0, jitter=Jitter.NONE)
    healthy = trio.Event()
    starts: list[float] = []

    async def flaky_start(ctx, *, task_status=trio.TASK_STATUS_IGNORED):
        starts.append(trio.current_time())
        if ctx.incarnation > 1:
            raise RuntimeError("cannot start")
        task_status.started()
        await healthy.wait()
        raise RuntimeError("crash after a long run")

    sup = supervisor(
        "sup",
        [ChildSpec(name="c", start=flaky_start)],
        fast_policy(backoff=backoff, reset_after=30.0, max_restarts=100, within_seconds=1000),
    )
    async with open_tree(sup):
        await trio.sleep(100)  # a long healthy run
        healthy.set()
        await wait_until(lambda: len(starts) >= 6, timeout=1000)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(starts[1:])]
    assert gaps[:4] == [2.0, 4.0, 8.0, 16.0]
