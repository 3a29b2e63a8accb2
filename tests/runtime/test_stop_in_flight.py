"""A tell that reached an idle actor just as its incarnation was stopped or killed is not
lost: the incarnation had taken it from the mailbox but had not begun it, so it goes back
to the front of the mailbox and the next incarnation handles it.

The window: trio hands a tell to the actor waiting in `Mailbox.get` and schedules it, but
the supervisor's task may run first. Until the actor runs it still counts as idle, so an
orderly stop (`Supervisor._stop` -> `ActorContext._request_stop`) or a kill cancels it,
and the handler then died at its first checkpoint with the tell. A soak of the demo lost
two chat lines this way: the retry capture (in the ``retry`` subtree, restarted with the
SQL gateway by ``storage``'s rest_for_one) was stopped as a failed chat row's
`FailureBatch` reached it.

These tests make the window deterministic: the tell is sent and the stop or kill is
requested in one scheduling step of the test task (no checkpoint in between), as the
supervisor's task does when it runs in the same batch before the woken actor.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing
from probes import supervisor

from daz_actors import Actor, ActorStopped, ChildSpec, actor_factory
from daz_actors.runtime.mailbox import Ask
from daz_actors.testing import fast_policy, open_tree, wait_until


@attrs.frozen
class Store:
    value: str


class Recorder(Actor):
    def __init__(self, seen: list[tuple[str, int]], stopped: list[int]) -> None:
        self.seen = seen
        self.stopped = stopped

    async def handle(self, message: Any) -> Any:
        await trio.lowlevel.checkpoint()  # a handler's first await (a query, a thread)
        self.seen.append((message.value, self.ctx.incarnation))
        return message.value

    async def on_stop(self) -> None:
        await trio.lowlevel.checkpoint()
        self.stopped.append(self.ctx.incarnation)


def recorder(seen: list[tuple[str, int]], stopped: list[int], redeliver: int) -> ChildSpec:
    return ChildSpec(
        name="rec", start=actor_factory(lambda: Recorder(seen, stopped)), redeliver=redeliver
    )


def request_stop(sup: Any, name: str) -> None:
    """What `Supervisor._stop` does first, at this very moment (no checkpoint)."""
    ctx = sup._slot(name).ctx
    assert ctx is not None
    assert ctx.idle  # waiting in Mailbox.get
    ctx._request_stop()


@pytest.mark.parametrize("redeliver", [0, 3])
async def test_a_tell_reaching_an_idle_actor_as_it_is_stopped_goes_to_the_next_incarnation(
    redeliver,
):
    seen: list[tuple[str, int]] = []
    stopped: list[int] = []
    sup = supervisor("sup", [recorder(seen, stopped, redeliver)], fast_policy())
    async with open_tree(sup):
        ref = sup.ref("rec")
        await trio.testing.wait_all_tasks_blocked()  # the actor waits in Mailbox.get
        assert ref.try_send(Store("a"))  # handed to the waiting actor, which is scheduled
        request_stop(sup, "rec")  # the supervisor's task runs first
        await sup.restart_child("rec")  # waits for the stop, then starts incarnation 2
        await ref.send(Store("b"))
        await wait_until(lambda: len(seen) >= 2, timeout=10)
        assert seen == [("a", 2), ("b", 2)]  # "a" first: order is kept
        assert stopped == [1]  # the stopped incarnation still got its on_stop
        assert sup.which_children()[0].redelivered == 0  # not a crash: nothing counted


async def test_a_tell_reaching_an_idle_actor_as_it_is_killed_goes_to_the_next_incarnation():
    seen: list[tuple[str, int]] = []
    stopped: list[int] = []
    sup = supervisor("sup", [recorder(seen, stopped, 0)], fast_policy())
    async with open_tree(sup):
        ref = sup.ref("rec")
        await trio.testing.wait_all_tasks_blocked()
        assert ref.try_send(Store("a"))
        sup.kill_child("rec", "test")  # in the same step: the actor has not run yet
        await wait_until(lambda: len(seen) >= 1, timeout=10)
        assert seen == [("a", 2)]
        assert stopped == []  # a kill is a crash: no on_stop


async def test_an_ask_reaching_an_idle_actor_as_it_is_stopped_fails_at_once():
    """An ask is not put back: its asker gets `ActorStopped` at once (and may ask again),
    as for an ask a stop interrupts mid-answer."""
    seen: list[tuple[str, int]] = []
    stopped: list[int] = []
    sup = supervisor("sup", [recorder(seen, stopped, 3)], fast_policy())
    async with open_tree(sup):
        await trio.testing.wait_all_tasks_blocked()
        request = Ask(Store("q"))
        assert sup._slot("rec").mailbox.put_nowait(request)  # what `ActorRef.ask` does
        request_stop(sup, "rec")
        with trio.fail_after(10):
            with pytest.raises(ActorStopped):
                await request.wait()
            await sup.restart_child("rec")
        await sup.ref("rec").send(Store("b"))
        await wait_until(lambda: len(seen) >= 1, timeout=10)
        assert seen == [("b", 2)]  # the ask was not handled later behind the asker's back
