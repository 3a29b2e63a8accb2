"""Stopping a tree by signal (issue 13, item 10): once a stop is asked for, nothing starts
again, a pending backoff is abandoned (also in a subtree that never became ready), and a
second signal's forced stop is told apart from an orderly one."""

from __future__ import annotations

import os
import signal
from functools import partial

import pytest
import trio
from probes import Journal, Sleep, spec, supervisor

from daz_actors import BackoffPolicy, ChildSpec, ChildState, Jitter, Registry, run_tree
from daz_actors.runtime.errors import StopForced
from daz_actors.testing import fast_policy, wait_until

HOUR = BackoffPolicy(initial=3600.0, max_delay=3600.0, jitter=Jitter.NONE)


def interrupt() -> None:
    """SIGINT to this process: what an operator's Ctrl-C sends."""
    os.kill(os.getpid(), signal.SIGINT)


async def test_a_signal_stops_a_subtree_stuck_in_a_startup_backoff(autojump_clock):
    """A child that keeps failing to start holds its supervisor (and so the root) before
    ready: the first SIGINT stops it all without restarting the child or waiting out the
    hour-long backoff."""
    journal = Journal()
    registry = Registry()
    storage = supervisor(
        "storage",
        [spec(journal, "capture", fail_start=10_000)],
        fast_policy(backoff=HOUR),
        registry,
    )
    root = supervisor("root", [ChildSpec(name="storage", start=storage)], fast_policy(), registry)
    with trio.fail_after(60):  # trio's clock: far below the hour of backoff
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(run_tree, root, handle_signals=True))
            await wait_until(lambda: storage.which_children()[0].state is ChildState.BACKING_OFF)
            interrupt()
    assert journal.starts() == ["capture"]  # never started again
    assert journal.total_running() == 0


async def test_a_second_signal_forces_the_stop_and_says_so(autojump_clock):
    """The first SIGINT asks for an orderly stop; a second one cancels what is left, and
    run_tree raises StopForced so the exit code can tell it from an orderly stop."""
    journal = Journal()
    sup = supervisor("sup", [spec(journal, "slow", shutdown_timeout=None)], fast_policy())
    with pytest.RaisesGroup(StopForced, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            tree = await nursery.start(partial(run_tree, sup, handle_signals=True))
            assert sup.ref("slow").try_send(Sleep(10_000))
            await wait_until(lambda: sup.which_children()[0].mailbox_depth == 0)
            interrupt()
            await wait_until(lambda: tree.stopping)
            interrupt()
    assert journal.total_running() == 0


async def test_an_orderly_stop_by_signal_returns_normally(autojump_clock):
    """One SIGINT, every child stops in time: run_tree returns (no StopForced)."""
    journal = Journal()
    sup = supervisor("sup", [spec(journal, "a"), spec(journal, "b")], fast_policy())
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(run_tree, sup, handle_signals=True))
        interrupt()
    assert journal.of("stop") == ["b", "a"]
