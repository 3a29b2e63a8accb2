"""A hypothesis state machine: random trees, random crash / exit / time schedules, vs a model.

Hypothesis rules cannot be async, so one trio loop runs in a background thread for the
whole machine, on a `MockClock` that moves only when a rule jumps it; each rule calls into
the loop with `trio.from_thread.run` and waits until every task is blocked again.
"""

from __future__ import annotations

import threading
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from probes import Journal, spec, supervisor

from daz_actors import (
    BackoffPolicy,
    ChildState,
    EventBus,
    Jitter,
    Registry,
    Restart,
    Strategy,
    SupervisorGaveUp,
    SupervisorPolicy,
    run_tree,
)

WITHIN = 10.0
RESET_AFTER = 5.0


class LoopThread:
    """One trio loop on a mock clock in a thread, taking calls from the test thread."""

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock()
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self.nursery: trio.Nursery | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        async def main() -> None:
            self._stop = trio.Event()
            self.token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self._ready.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()

        trio.run(main, clock=self.clock)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run async `fn(*args)` in the loop, then wait until everything is blocked."""

        async def call_and_settle() -> Any:
            result = await fn(*args)
            await trio.testing.wait_all_tasks_blocked()
            return result

        return trio.from_thread.run(call_and_settle, trio_token=self.token)

    def close(self) -> None:
        async def stop() -> None:
            assert self._stop is not None
            self._stop.set()

        trio.from_thread.run(stop, trio_token=self.token)
        self.thread.join(timeout=30)


@attrs.define
class ModelChild:
    name: str
    restart: Restart
    state: ChildState = ChildState.RUNNING
    incarnation: int = 1
    restarts: int = 0
    attempt: int = 0
    started_at: float = 0.0
    due: float | None = None


class SupervisorMachine(RuleBasedStateMachine):
    """Drives a real supervisor and a model of OTP semantics side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = LoopThread()
        self.journal = Journal()
        self.sup: Any = None
        self.children: list[ModelChild] = []
        self.restart_times: list[float] = []
        self.gave_up = False
        self.outcome: list[BaseException | None] = []
        self.initialized = False

    # ------------------------------------------------------------------ setup

    @initialize(
        strategy=st.sampled_from(Strategy),
        restarts=st.lists(st.sampled_from(Restart), min_size=1, max_size=4),
        max_restarts=st.integers(0, 4),
        initial=st.sampled_from([0.0, 1.0]),
    )
    def build(self, strategy, restarts, max_restarts, initial):
        self.initialized = True
        self.backoff = BackoffPolicy(
            initial=initial, multiplier=2.0, max_delay=4.0 * initial, jitter=Jitter.NONE
        )
        self.policy = SupervisorPolicy(
            strategy=strategy,
            max_restarts=max_restarts,
            within_seconds=WITHIN,
            backoff=self.backoff,
            reset_after=RESET_AFTER,
        )
        self.max_restarts = max_restarts
        specs = [spec(self.journal, f"c{i}", r) for i, r in enumerate(restarts)]
        self.registry = Registry()
        self.sup = supervisor("sup", specs, self.policy, self.registry, EventBus())
        now = self.now
        self.children = [
            ModelChild(name=f"c{i}", restart=r, started_at=now) for i, r in enumerate(restarts)
        ]
        self.refs = {f"c{i}": self.sup.ref(f"c{i}") for i in range(len(restarts))}

        async def run(task_status: trio.TaskStatus[Any]) -> None:
            try:
                await run_tree(self.sup, task_status=task_status)
            except SupervisorGaveUp as exc:
                self.outcome.append(exc)
            else:
                self.outcome.append(None)

        self.tree = self.loop.call(self.loop.nursery.start, run)

    @property
    def now(self) -> float:
        return self.loop.clock.current_time()

    # ------------------------------------------------------------------ model

    def live(self) -> list[ModelChild]:
        return [c for c in self.children if c.state is not None]

    def model_exit(self, child: ModelChild, crashed: bool) -> None:
        now = self.now
        child.state = ChildState.STOPPED
        restart = child.restart is Restart.PERMANENT or (
            child.restart is Restart.TRANSIENT and crashed
        )
        if not restart:
            if child.restart is Restart.TEMPORARY:
                self.children.remove(child)
            return
        self.restart_times.append(now)
        recent = [t for t in self.restart_times if t > now - WITHIN]
        if len(recent) > self.max_restarts:
            self.gave_up = True
            for c in self.children:
                c.state = ChildState.STOPPED
                c.due = None
            return
        if now - child.started_at >= RESET_AFTER:
            child.attempt = 0
        delay = self.backoff.base_delay(child.attempt)
        child.attempt += 1
        index = self.children.index(child)
        if self.policy.strategy is Strategy.ONE_FOR_ONE:
            group = [child]
        elif self.policy.strategy is Strategy.ONE_FOR_ALL:
            group = list(self.children)
        else:
            group = self.children[index:]
        for member in group:
            if member is not child and member.restart is Restart.TEMPORARY:
                self.children.remove(member)
                continue
            member.restarts += 1
            member.state = ChildState.BACKING_OFF
            member.due = now + delay
        self.model_start_due()

    def model_start_due(self) -> None:
        now = self.now
        for child in self.children:
            if child.state is ChildState.BACKING_OFF and child.due is not None and child.due <= now:
                child.state = ChildState.RUNNING
                child.due = None
                child.incarnation += 1
                child.started_at = now

    # ------------------------------------------------------------------ rules

    def running_children(self) -> list[ModelChild]:
        return [c for c in self.children if c.state is ChildState.RUNNING]

    @precondition(lambda self: self.initialized and not self.gave_up)
    @rule(data=st.data(), crash=st.booleans())
    def end_a_child(self, data, crash):
        running = self.running_children()
        if not running:
            return
        child = data.draw(st.sampled_from(running))
        self.loop.call(self.refs[child.name].send, "crash" if crash else "exit")
        self.model_exit(child, crashed=crash)

    @rule(dt=st.sampled_from([0.5, 1.0, 2.0, 6.0, 11.0]))
    def advance_time(self, dt):
        async def jump() -> None:
            self.loop.clock.jump(dt)

        self.loop.call(jump)
        self.model_start_due()

    @precondition(lambda self: self.initialized and not self.gave_up)
    @rule(data=st.data())
    def ping(self, data):
        running = self.running_children()
        if not running:
            return
        child = data.draw(st.sampled_from(running))
        reply = self.loop.call(self.refs[child.name].ask, "ping")
        assert reply == (child.name, child.incarnation, "ping")

    # ------------------------------------------------------------------ checks

    @invariant()
    def matches_the_model(self):
        if not self.initialized:
            return
        assert self.journal.overlaps == [], "a child ran twice at once"
        assert bool(self.outcome) == self.gave_up, (self.outcome, self.gave_up)
        if self.gave_up:
            assert isinstance(self.outcome[0], SupervisorGaveUp)
            assert self.journal.total_running() == 0
            return
        real = self.sup.which_children()
        assert [c.name for c in real] == [c.name for c in self.children]
        for got, want in zip(real, self.children, strict=True):
            assert got.state is want.state, (got, want)
            assert got.restarts == want.restarts, (got, want)
            assert got.incarnation == want.incarnation, (got, want)
            assert self.journal.running.get(got.name, 0) == (want.state is ChildState.RUNNING)

    def teardown(self):
        try:
            if self.initialized and not self.gave_up:

                async def stop() -> None:
                    self.tree.stop()

                self.loop.call(stop)
                assert self.outcome == [None]
                assert self.journal.total_running() == 0, "shutdown left a child running"
        finally:
            self.loop.close()


SupervisorMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None
)
TestSupervisorMachine = SupervisorMachine.TestCase
