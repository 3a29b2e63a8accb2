"""The trio/asyncio bridge: trio-asyncio against a dedicated asyncio loop in a thread.

    python -m bench.bridge [--database-url URL] [--items 10000] [--rounds 3] [--quick]

The retry workers' real call, `daz_actors.storage.queue.complete_and_acquire` (the
completions of a batch with the claim of the next, batch 10, one round trip and one
commit; `QueueItem`s built from the rows), run in a loop by 1 and 4 concurrent callers
until the queue is empty, three ways against the same PostgreSQL (embedded by default,
fsync on):

- ``asyncio``: plain asyncio (its own selector loop, see `bench.plain_asyncio`), the
  callers are asyncio tasks (the baseline);
- ``trio-asyncio``: trio tasks, each call through ``trio_asyncio.aio_as_trio`` (the
  asyncio loop hosted inside trio's: what the SQL gateway used until issue 15);
- ``thread``: trio tasks, each call through `daz_actors.storage.asyncio_thread`
  (``call_soon_threadsafe`` into an asyncio loop running in its own thread, the answer
  back through ``TrioToken.run_sync_soon`` and ``trio.lowlevel.reschedule``).

The pool is the same on every side (one connection per caller, no reset on release, as
the gateway's), created on the loop that runs the calls. Also the bare cost of a crossing:
an empty coroutine called from trio in a loop (no database), crossings/s and CPU per
crossing. Jobs/s are the best of ``--rounds`` (the sides alternating), CPU per job
(this process, all its threads, and PostgreSQL's processes) the least; ratios are
side / asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import trio
import trio_asyncio

from bench.machine_load import LoadReport
from bench.plain_asyncio import run_plain
from bench.queue import setup, teardown
from bench.retry import Run, ServerCpu, Window, _reset_queue
from daz_actors.storage import queue
from daz_actors.storage.asyncio_thread import open_asyncio_thread
from daz_actors.storage.embedded_pg import open_database, redact_dsn
from daz_actors.storage.queue_types import Lease

BATCH = 10
LOCK_TIMEOUT = 300.0
SIDES = ("asyncio", "trio-asyncio", "thread")

Call = Callable[..., Awaitable[Any]]


async def _no_reset(_conn: Any) -> None:
    """As the gateway's pool: no session reset round trip on release."""


async def _create_pool(dsn: str, size: int) -> Any:
    return await asyncpg.create_pool(dsn, min_size=size, max_size=size, reset=_no_reset)


async def _caller(run: Callable[[Call, Any], Awaitable[Any]], pool: Any, n: int) -> int:
    """One worker's loop: complete the last batch and claim the next until none is left."""
    worker = f"bridge-{n}"
    leases: list[Lease] = []
    done = 0
    while True:
        result, items = await run(
            partial(
                queue.complete_and_acquire,
                worker_id=worker,
                leases=leases,
                batch_size=BATCH,
                lock_timeout=LOCK_TIMEOUT,
            ),
            pool,
        )
        done += len(result.completed)
        if not items:
            return done
        leases = [item.lease for item in items]


def asyncio_side(dsn: str, callers: int, server: ServerCpu | None) -> Run:
    async def direct(fn: Call, pool: Any) -> Any:
        return await fn(pool)

    async def main() -> Run:
        pool = await _create_pool(dsn, callers)
        try:
            window = Window(server)
            window.start()
            done = await asyncio.gather(*(_caller(direct, pool, n) for n in range(callers)))
            return window.stop(sum(done))
        finally:
            await pool.close()

    return run_plain(main())


async def _trio_callers(
    run: Callable[[Call, Any], Awaitable[Any]], pool: Any, callers: int, server: ServerCpu | None
) -> Run:
    done = [0] * callers

    async def one(n: int) -> None:
        done[n] = await _caller(run, pool, n)

    window = Window(server)
    window.start()
    async with trio.open_nursery() as nursery:
        for n in range(callers):
            nursery.start_soon(one, n)
    return window.stop(sum(done))


def trio_asyncio_side(dsn: str, callers: int, server: ServerCpu | None) -> Run:
    async def crossing(fn: Call, pool: Any) -> Any:
        return await trio_asyncio.aio_as_trio(fn)(pool)

    async def main() -> Run:
        async with trio_asyncio.open_loop():
            pool = await trio_asyncio.aio_as_trio(_create_pool)(dsn, callers)
            try:
                return await _trio_callers(crossing, pool, callers, server)
            finally:
                await trio_asyncio.aio_as_trio(pool.close)()

    return trio.run(main)


def thread_side(dsn: str, callers: int, server: ServerCpu | None) -> Run:
    async def main() -> Run:
        async with open_asyncio_thread(name="bench") as bridge:

            async def crossing(fn: Call, pool: Any) -> Any:
                return await bridge.run(fn, pool)

            pool = await bridge.run(_create_pool, dsn, callers)
            try:
                return await _trio_callers(crossing, pool, callers, server)
            finally:
                await bridge.run(pool.close)

    return trio.run(main)


RUNNERS: dict[str, Callable[[str, int, ServerCpu | None], Run]] = {
    "asyncio": asyncio_side,
    "trio-asyncio": trio_asyncio_side,
    "thread": thread_side,
}


# ---- the bare crossing ----------------------------------------------------------------


async def _empty() -> None:
    return None


def bare_crossings(side: str, count: int, callers: int) -> Run:
    """`count` calls of an empty coroutine from `callers` trio tasks (asyncio: awaited)."""

    async def loop_of(call: Callable[[], Awaitable[Any]], share: int) -> None:
        for _ in range(share):
            await call()

    if side == "asyncio":

        async def aio_main() -> Run:
            window = Window(None)
            window.start()
            await asyncio.gather(*(loop_of(_empty, count // callers) for _ in range(callers)))
            return window.stop(count)

        return run_plain(aio_main())

    async def main() -> Run:
        async def run_all(call: Callable[[], Awaitable[Any]]) -> Run:
            window = Window(None)
            window.start()
            async with trio.open_nursery() as nursery:
                for _ in range(callers):
                    nursery.start_soon(loop_of, call, count // callers)
            return window.stop(count)

        if side == "trio-asyncio":
            async with trio_asyncio.open_loop():
                return await run_all(trio_asyncio.aio_as_trio(_empty))
        async with open_asyncio_thread(name="bench") as bridge:
            return await run_all(lambda: bridge.run(_empty))

    return trio.run(main)


# ---- output -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default=None, help="default: DAZ_DATABASE_URL, else embedded"
    )
    parser.add_argument("--items", type=int, default=10000, help="items per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure (best kept)")
    parser.add_argument("--crossings", type=int, default=20000, help="bare crossings per run")
    parser.add_argument("--quick", action="store_true", help="smoke run: too small for figures")
    args = parser.parse_args()
    if args.quick:
        args.items, args.rounds, args.crossings = 1000, 1, 2000
    load = LoadReport()

    print(f"\nbare crossing: an empty coroutine, {args.crossings} calls, best of {args.rounds}")
    print(f"{'callers':>7} {'side':<13} {'calls/s':>10} {'us/call':>8}")
    for callers in (1, 4):
        for side in SIDES:
            runs = [bare_crossings(side, args.crossings, callers) for _ in range(args.rounds)]
            best = max(r.rate for r in runs)
            us = min(r.client_cpu / r.jobs for r in runs) * 1e6
            print(f"{callers:>7} {side:<13} {best:>10,.0f} {us:>8.1f}", flush=True)

    with (
        tempfile.TemporaryDirectory(prefix="daz-bench-") as tmp,
        open_database(args.database_url, data_dir=Path(tmp) / "pg") as db,
    ):
        print(f"\ndatabase: {redact_dsn(db.url)} ({db.source.value})")
        dsn = asyncio.run(setup(db.url))
        server = asyncio.run(ServerCpu.find(dsn))
        print(
            f"\nqueue.complete_and_acquire, batch {BATCH}, {args.items} items,"
            f" best of {args.rounds} rounds (jobs/s; CPU per job in us, least of the rounds)"
        )
        print(
            f"{'callers':>7} {'side':<13} {'jobs/s':>10} {'ratio':>6}"
            f" {'client us':>9} {'PG us':>6} {'total':>6}"
        )
        for callers in (1, 4):
            runs: dict[str, list[Run]] = {side: [] for side in SIDES}
            for r in range(args.rounds):
                order = SIDES if r % 2 == 0 else tuple(reversed(SIDES))
                for side in order:
                    asyncio.run(_reset_queue(dsn, args.items, due=True))
                    runs[side].append(RUNNERS[side](dsn, callers, server))
            base = max(r.rate for r in runs["asyncio"])
            for side in SIDES:
                best = max(r.rate for r in runs[side])
                client = min(r.client_cpu / r.jobs for r in runs[side]) * 1e6
                servers = [r.server_cpu / r.jobs for r in runs[side] if r.server_cpu is not None]
                pg = min(servers) * 1e6 if servers else float("nan")
                print(
                    f"{callers:>7} {side:<13} {best:>10,.0f} {best / base:>6.2f}"
                    f" {client:>9.0f} {pg:>6.0f} {client + pg:>6.0f}",
                    flush=True,
                )
        asyncio.run(teardown(db.url))
    load.end()


if __name__ == "__main__":
    main()
