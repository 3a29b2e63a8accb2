"""Helpers for testing code built on daz-actors (the project's own tests use them too).

- `NO_BACKOFF` and `fast_policy()`: supervisor policies with no waits between restarts.
- `open_tree(root)`: run a tree in the background, wait until every child is ready,
  stop it in order on exit.
- `wait_until(predicate)`: poll a condition with a deadline instead of sleeping for a guess.
- `poll(check)`: the same for an async check (a query, a request): its first truthy result.

Use them with pytest-trio; with ``autojump_clock`` backoff waits take no real time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import trio

from daz_actors.runtime.backoff import BackoffPolicy, Jitter
from daz_actors.runtime.supervision_policy import Strategy, SupervisorPolicy
from daz_actors.runtime.supervisor import Supervisor
from daz_actors.runtime.tree import Tree, run_tree

__all__ = ["NO_BACKOFF", "fast_policy", "open_tree", "poll", "wait_until"]

T = TypeVar("T")

NO_BACKOFF = BackoffPolicy(initial=0.0, multiplier=1.0, max_delay=0.0, jitter=Jitter.NONE)


def fast_policy(
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    *,
    max_restarts: int = 1000,
    within_seconds: float = 60.0,
    backoff: BackoffPolicy = NO_BACKOFF,
    reset_after: float = 30.0,
) -> SupervisorPolicy:
    """A supervisor policy for tests: no backoff and a generous restart intensity."""
    return SupervisorPolicy(
        strategy=strategy,
        max_restarts=max_restarts,
        within_seconds=within_seconds,
        backoff=backoff,
        reset_after=reset_after,
    )


@asynccontextmanager
async def open_tree(root: Supervisor) -> AsyncIterator[Tree]:
    """Run `root` in the background; yields once it is ready; stops it in order on exit."""
    async with trio.open_nursery() as nursery:
        tree: Tree = await nursery.start(run_tree, root)
        try:
            yield tree
        finally:
            tree.stop()


async def wait_until(
    predicate: Callable[[], bool], *, timeout: float = 10.0, interval: float = 0.001
) -> None:
    """Return once `predicate()` is true; raise `trio.TooSlowError` after `timeout` seconds."""
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polling a condition is the point here
            await trio.sleep(interval)


async def poll(
    check: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.05
) -> T:
    """Await `check()` until it returns something truthy, and return that; raise
    `trio.TooSlowError` after `timeout` seconds."""
    with trio.fail_after(timeout):
        while not (result := await check()):  # noqa: ASYNC110 - polling is the point
            await trio.sleep(interval)
        return result
