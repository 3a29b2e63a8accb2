"""A busy room: chat lines into PostgreSQL, beside plain asyncpg loops in the same run.

    python -m bench.room [--database-url URL] [--lines 20000] [--rounds 2] [--quick]

What is measured, against the same PostgreSQL (embedded by default, default durability:
fsync on):

- ``daz``: the REAL event router of each room (`router_startable`, its log buffer and
  writer) beside the real SQL gateway actor, in one ``trio.run``; a feeder task per room
  tells the router each `ChatMessage` as the connection does (``await ref.send``). A line
  is *stored* when the writer's transaction holding it has committed (the router's
  ``on_stored`` hook). The websocket is left out: the local CyTube server cannot produce
  lines this fast, and the connection only decodes frames and tells the router.
- ``asyncpg batched``: plain asyncpg on asyncio, the same design by hand: per room a
  producer puts the events on an `asyncio.Queue`, a writer takes what arrived (at most the
  same 500), builds the rows with the same code (`chat_write`) and runs the same multi-row
  insert in one transaction on its own connection.
- ``asyncpg per row``: plain asyncpg on asyncio, one room's loop building each row and
  running the one-row insert (`ChatLine.sql`) per line (what the router did before).

Throughput: every room is offered ``--lines`` lines at once (the feeder as fast as the
router takes them); lines/s per room and for the process, 1 room and 10 rooms. Latency:
lines offered at a steady rate in ticks of 10 ms (2,000 lines/s for 1 room, 200 lines/s
per room for 10), from the feeder handing a line over to the commit of its batch, median
and p99. Each figure is the best of ``--rounds`` rounds (latency: the round with the lowest
median); the sides alternate within a round so they see the same machine noise.

The last lines give the machine's load average and the share of one core this process got.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import trio
import trio_asyncio

from bench.machine_load import LoadReport
from bench.plain_asyncio import run_plain
from bench.queue import setup, teardown
from daz_actors.cytube.chat_log import CHAT_SQL, LogRow, batch_statements, chat_write
from daz_actors.cytube.events import ChatMessage
from daz_actors.cytube.router import RouterParams, router_startable
from daz_actors.runtime.bus import EventBus
from daz_actors.runtime.ref import ActorRef
from daz_actors.runtime.registry import Registry
from daz_actors.runtime.supervision_policy import Strategy, SupervisorPolicy
from daz_actors.runtime.supervisor import ChildSpec, Supervisor
from daz_actors.storage.embedded_pg import open_database, redact_dsn
from daz_actors.storage.sql_gateway import SqlGateway, SqlGatewayParams
from daz_actors.testing import open_tree

BATCH = RouterParams(channel="x").log_batch
TICK = 0.01  # seconds between two groups of lines in the latency runs
T0 = 1_700_000_000_000
Stamps = dict[str, float]  # raw line text -> perf_counter time


def _lines(room: int, count: int, run: str) -> list[ChatMessage]:
    return [
        ChatMessage(
            channel=f"bench{room}",
            username=f"user{n % 50}",
            msg=f"{run} r{room} line {n}",
            time=T0 + n,
            meta={"addClass": None},
        )
        for n in range(count)
    ]


async def _truncate(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE daz_chat_messages RESTART IDENTITY")
        await conn.execute("VACUUM ANALYZE daz_chat_messages")
    finally:
        await conn.close()


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM daz_chat_messages")
        return count
    finally:
        await conn.close()


# ---- pacing ---------------------------------------------------------------------------------


def _schedule(
    lines: list[ChatMessage], rate: float | None
) -> list[tuple[float, list[ChatMessage]]]:
    """(offset in s, lines) groups: all at 0 without a rate, else one group per TICK."""
    if rate is None:
        return [(0.0, lines)]
    per_tick = max(1, round(rate * TICK))
    return [(i / per_tick * TICK, lines[i : i + per_tick]) for i in range(0, len(lines), per_tick)]


def _result(offered: Stamps, stored: Stamps, began: float, ended: float) -> dict[str, float]:
    lat = sorted(stored[k] - offered[k] for k in stored)
    return {
        "rate": len(stored) / (ended - began),
        "median": statistics.median(lat),
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


# ---- daz: the real routers and gateway -----------------------------------------------------


def daz_run(dsn: str, rooms: int, count: int, rate: float | None, run: str) -> dict[str, float]:
    asyncio.run(_truncate(dsn))
    offered: Stamps = {}
    stored: Stamps = {}

    def on_stored(rows: Sequence[LogRow]) -> None:
        now = time.perf_counter()
        for row in rows:
            stored[row.raw_message] = now  # type: ignore[attr-defined]

    registry, bus = Registry(), EventBus()
    children = [ChildSpec(name="sql-gateway", start=SqlGateway(SqlGatewayParams(), dsn))]
    for room in range(rooms):
        params = RouterParams(channel=f"bench{room}")
        children.append(
            ChildSpec(
                name=f"room:bench{room}/event-router",
                start=router_startable(params, on_stored=on_stored),
                mailbox_size=1000,
            )
        )
    root = Supervisor(
        "bench",
        children,
        policy=SupervisorPolicy(strategy=Strategy.ONE_FOR_ONE),
        registry=registry,
        bus=bus,
    )
    work = [_lines(room, count, run) for room in range(rooms)]
    total = rooms * count

    async def feed(ref: ActorRef, lines: list[ChatMessage], began: float) -> None:
        for offset, group in _schedule(lines, rate):
            await trio.sleep_until(began + offset)
            for line in group:
                offered[line.msg] = time.perf_counter()
                await ref.send(line)

    async def main() -> dict[str, float]:
        async with trio_asyncio.open_loop(), open_tree(root):
            refs = [registry.lookup(f"room:bench{room}/event-router") for room in range(rooms)]
            # warm the pool: the first call connects
            await trio.sleep(0.5)
            began_wall = time.perf_counter()
            began = trio.current_time()
            async with trio.open_nursery() as nursery:
                for ref, lines in zip(refs, work, strict=True):
                    nursery.start_soon(feed, ref, lines, began)
            with trio.fail_after(600):
                while len(stored) < total:  # noqa: ASYNC110 - a counter, with a deadline
                    await trio.sleep(0.001)
            return _result(offered, stored, began_wall, time.perf_counter())

    result = trio.run(main)
    if asyncio.run(_count(dsn)) != total:
        raise SystemExit("daz: the table does not hold every line once")
    return result


# ---- baselines: asyncpg on asyncio ----------------------------------------------------------


async def _batched_room(
    pool: Any, lines: list[ChatMessage], rate: float | None, offered: Stamps, stored: Stamps
) -> None:
    queue: asyncio.Queue[ChatMessage] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    began = loop.time()

    async def produce() -> None:
        for offset, group in _schedule(lines, rate):
            delay = began + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            for line in group:
                offered[line.msg] = time.perf_counter()
                queue.put_nowait(line)

    async def write() -> None:
        left = len(lines)
        async with pool.acquire() as conn:
            while left:
                got = [await queue.get()]
                while len(got) < BATCH and not queue.empty():
                    got.append(queue.get_nowait())
                rows = [chat_write(line, int(time.time() * 1000)) for line in got]
                async with conn.transaction():
                    for sql, args in batch_statements(rows):
                        await conn.execute(sql, *args)
                now = time.perf_counter()
                for line in got:
                    stored[line.msg] = now
                left -= len(got)

    await asyncio.gather(produce(), write())


async def _per_row_room(
    pool: Any, lines: list[ChatMessage], offered: Stamps, stored: Stamps
) -> None:
    async with pool.acquire() as conn:
        for line in lines:
            offered[line.msg] = time.perf_counter()
            row = chat_write(line, int(time.time() * 1000))
            await conn.execute(CHAT_SQL, *row.args())
            stored[line.msg] = time.perf_counter()


def asyncpg_run(
    dsn: str, rooms: int, count: int, rate: float | None, run: str, *, per_row: bool = False
) -> dict[str, float]:
    asyncio.run(_truncate(dsn))
    offered: Stamps = {}
    stored: Stamps = {}
    work = [_lines(room, count, run) for room in range(rooms)]

    async def main() -> dict[str, float]:
        async with asyncpg.create_pool(dsn, min_size=rooms, max_size=rooms) as pool:
            began = time.perf_counter()
            room: Callable[[list[ChatMessage]], Awaitable[None]]
            if per_row:
                room = lambda lines: _per_row_room(pool, lines, offered, stored)  # noqa: E731
            else:
                room = lambda lines: _batched_room(pool, lines, rate, offered, stored)  # noqa: E731
            await asyncio.gather(*(room(lines) for lines in work))
            return _result(offered, stored, began, time.perf_counter())

    result = run_plain(main())  # asyncio's own loop, not trio-asyncio's (bench.plain_asyncio)
    if asyncio.run(_count(dsn)) != rooms * count:
        raise SystemExit("asyncpg: the table does not hold every line once")
    return result


# ---- output ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default=None, help="default: DAZ_DATABASE_URL, else embedded"
    )
    parser.add_argument("--lines", type=int, default=20_000, help="lines per room (throughput)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of a latency run")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per figure (best kept)")
    parser.add_argument("--quick", action="store_true", help="smoke run: too small for figures")
    args = parser.parse_args()
    if args.quick:
        args.lines, args.seconds, args.rounds = 2000, 1.0, 1
    logging.getLogger("daz_actors").setLevel(logging.CRITICAL)
    load = LoadReport()
    runs = iter(range(10**6))
    with (
        tempfile.TemporaryDirectory(prefix="daz-bench-") as tmp,
        open_database(args.database_url, data_dir=Path(tmp) / "pg") as db,
    ):
        print(f"database: {redact_dsn(db.url)} ({db.source.value})")
        dsn = asyncio.run(setup(db.url))
        print(
            f"\nthroughput: {args.lines:,} lines offered at once per room, best of"
            f" {args.rounds} (lines/s stored)\n"
            f"{'rooms':>5} {'side':<17} {'per room':>9} {'process':>9} {'daz/side':>9}"
        )
        for rooms in (1, 10):
            best: dict[str, float] = {"daz": 0.0, "asyncpg batched": 0.0}
            if rooms == 1:
                best["asyncpg per row"] = 0.0
            for _ in range(args.rounds):
                for side in best:
                    run = f"t{next(runs)}"
                    if side == "daz":
                        got = daz_run(dsn, rooms, args.lines, None, run)
                    else:
                        per_row = side == "asyncpg per row"
                        n = min(args.lines, 3000) if per_row else args.lines
                        got = asyncpg_run(dsn, rooms, n, None, run, per_row=per_row)
                    best[side] = max(best[side], got["rate"])
            for side, total in best.items():
                print(
                    f"{rooms:>5} {side:<17} {total / rooms:>9,.0f} {total:>9,.0f}"
                    f" {best['daz'] / total:>9.2f}",
                    flush=True,
                )
        print(
            f"\nlatency: lines offered at a steady rate in {TICK * 1000:.0f} ms ticks for"
            f" {args.seconds:g} s; handed over -> committed (ms), round with the lowest median\n"
            f"{'rooms':>5} {'lines/s/room':>12} {'side':<17} {'median':>8} {'p99':>8}"
            f" {'stored/s':>9}"
        )
        for rooms, rate in ((1, 2000.0), (10, 200.0)):
            count = int(rate * args.seconds)
            lowest: dict[str, dict[str, float] | None] = {"daz": None, "asyncpg batched": None}
            for _ in range(args.rounds):
                for side in lowest:
                    run = f"l{next(runs)}"
                    if side == "daz":
                        got = daz_run(dsn, rooms, count, rate, run)
                    else:
                        got = asyncpg_run(dsn, rooms, count, rate, run)
                    kept = lowest[side]
                    if kept is None or got["median"] < kept["median"]:
                        lowest[side] = got
            for side, kept in lowest.items():
                assert kept is not None
                print(
                    f"{rooms:>5} {rate:>12,.0f} {side:<17} {kept['median'] * 1000:>8.2f}"
                    f" {kept['p99'] * 1000:>8.2f} {kept['rate']:>9,.0f}",
                    flush=True,
                )
        asyncio.run(teardown(db.url))
    load.end()


if __name__ == "__main__":
    main()
