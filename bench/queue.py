"""Retry-queue throughput of the SQL layer alone: the project's queue API from trio vs plain
asyncpg on asyncio.

    python -m bench.queue [--database-url URL] [--scale 1.0]

This measures the SQL layer ALONE: it checks a pool connection out directly and calls
`daz_actors.storage.queue`, skipping the actors (workers, dispatcher) and the SQL gateway.
It is not what users get; ``python -m bench.retry`` measures the retry pipeline end to end.

Against one PostgreSQL in one run (embedded by default, default durability settings) it
measures single-row enqueue, batch enqueue (100 per call) and acquire(10)+complete cycles,
with 1, 2 and 4 concurrent callers. The project side calls `daz_actors.storage.queue` from trio
through the SQL gateway's bridge (`daz_actors.storage.asyncio_thread`: an asyncio loop in a
thread of its own), one crossing per operation (an acquire+complete cycle is one
coroutine). The baseline runs the same SQL with plain asyncpg on asyncio (asyncio's own
loop, `bench.plain_asyncio`), arguments prepared in advance. Prints absolute rates and the
ratio project / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import trio

from bench.plain_asyncio import run_plain
from daz_actors.storage import queue
from daz_actors.storage.asyncio_thread import open_asyncio_thread
from daz_actors.storage.embedded_pg import open_database, redact_dsn
from daz_actors.storage.migrations import migrate
from daz_actors.storage.queue_types import NewItem

CALLERS = (1, 2, 4)
BATCH = 100
CLAIM = 10

ACQUIRE_SQL = "SELECT * FROM acquire_retry_items($1, $2, $3)"
COMPLETE_SQL = "SELECT complete_retry_items($1::bigint[], $2, $3::uuid[]) AS id"


def make_items(prefix: str, count: int) -> list[NewItem]:
    return [
        NewItem(event_id=f"{prefix}-{n}", event_type="bench", event_data={"n": n, "text": "hello"})
        for n in range(count)
    ]


def raw_args(item: NewItem) -> tuple[Any, ...]:
    return queue._encode_item(item, queue.DEFAULT_MAX_PAYLOAD_BYTES)


def raw_columns(items: list[NewItem]) -> list[list[Any]]:
    columns = [list(c) for c in zip(*(raw_args(i) for i in items), strict=True)]
    columns[15] = [json.dumps(t) for t in columns[15]]
    return columns


def plain_row(i: NewItem, *, tags_as_json: bool = False) -> tuple[Any, ...]:
    """What a plain asyncpg program sends for one item: JSON-encoded payloads, no checks."""
    return (
        i.event_id,
        i.event_type,
        i.channel,
        i.plugin,
        i.operation_type,
        json.dumps(i.event_data),
        json.dumps(i.event_metadata),
        i.priority,
        i.max_retries,
        float(i.retry_delay),
        float(i.backoff_multiplier),
        float(i.max_delay),
        float(i.attempt_timeout),
        i.not_before,
        i.correlation_id,
        json.dumps(list(i.tags)) if tags_as_json else list(i.tags),
        None if i.checkpoint is None else json.dumps(i.checkpoint),
        i.expires_at,
        i.jitter.value,  # (missing from the first version after the jitter column came)
    )


def plain_columns(items: list[NewItem]) -> list[list[Any]]:
    """What a plain asyncpg program does to send a batch: encode each row and transpose.

    No validation: our API's checks are part of what the ratio measures.
    """
    rows = [plain_row(i, tags_as_json=True) for i in items]
    return [list(c) for c in zip(*rows, strict=True)]


def split(seq: list[Any], parts: int) -> list[list[Any]]:
    return [seq[i::parts] for i in range(parts)]


async def reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE daz_retry_queue, daz_retry_history RESTART IDENTITY")
        await conn.execute("VACUUM ANALYZE daz_retry_queue")
    finally:
        await conn.close()


async def prefill(dsn: str, prefix: str, count: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        items = make_items(prefix, count)
        for start in range(0, count, 1000):
            await conn.fetch(queue._ENQUEUE_MANY, *raw_columns(items[start : start + 1000]))
        await conn.execute("ANALYZE daz_retry_queue")
    finally:
        await conn.close()


# ---- baseline: asyncpg on asyncio ---------------------------------------------------------


def aio_run(
    dsn: str, callers: int, work: Callable[[Any, int], Awaitable[int]]
) -> tuple[int, float]:
    async def main() -> tuple[int, float]:
        pool = await asyncpg.create_pool(dsn, min_size=callers, max_size=callers)
        try:
            start = time.perf_counter()
            done = await asyncio.gather(*(work(pool, n) for n in range(callers)))
            return sum(done), time.perf_counter() - start
        finally:
            await pool.close()

    return run_plain(main())


# ---- project: daz_actors.storage.queue from trio via the gateway's bridge ------------------

Cross = Callable[..., Awaitable[Any]]  # runs an asyncio coroutine function from trio


def trio_run(
    dsn: str, callers: int, work: Callable[[Cross, Any, int], Awaitable[int]]
) -> tuple[int, float]:
    async def main() -> tuple[int, float]:
        async with open_asyncio_thread(name="bench") as bridge:
            pool = await bridge.run(
                partial(asyncpg.create_pool, dsn, min_size=callers, max_size=callers)
            )
            totals: list[int] = []
            try:
                start = time.perf_counter()

                async def one(n: int) -> None:
                    totals.append(await work(bridge.run, pool, n))

                async with trio.open_nursery() as nursery:
                    for n in range(callers):
                        nursery.start_soon(one, n)
                return sum(totals), time.perf_counter() - start
            finally:
                await bridge.run(pool.close)

    return trio.run(main)


def bench_enqueue_single(dsn: str, callers: int, count: int) -> tuple[float, float]:
    asyncio.run(reset(dsn))
    chunks = split(make_items("a", count), callers)

    async def aio_work(pool: Any, n: int) -> int:
        for item in chunks[n]:
            await pool.fetchval(queue._ENQUEUE, *plain_row(item))
        return len(chunks[n])

    base = aio_run(dsn, callers, aio_work)
    asyncio.run(reset(dsn))
    item_chunks = split(make_items("t", count), callers)

    async def trio_work(cross: Cross, pool: Any, n: int) -> int:
        for item in item_chunks[n]:
            await cross(queue.enqueue, pool, item)
        return len(item_chunks[n])

    ours = trio_run(dsn, callers, trio_work)
    return base[0] / base[1], ours[0] / ours[1]


def bench_enqueue_batch(dsn: str, callers: int, count: int) -> tuple[float, float]:
    asyncio.run(reset(dsn))
    items = make_items("a", count)
    chunks = split([items[i : i + BATCH] for i in range(0, count, BATCH)], callers)

    async def aio_work(pool: Any, n: int) -> int:
        for batch in chunks[n]:
            await pool.fetch(queue._ENQUEUE_MANY, *plain_columns(batch))
        return len(chunks[n]) * BATCH

    base = aio_run(dsn, callers, aio_work)
    asyncio.run(reset(dsn))
    items = make_items("t", count)
    item_chunks = split([items[i : i + BATCH] for i in range(0, count, BATCH)], callers)

    async def trio_work(cross: Cross, pool: Any, n: int) -> int:
        for batch in item_chunks[n]:
            await cross(queue.enqueue_many, pool, batch)
        return len(item_chunks[n]) * BATCH

    ours = trio_run(dsn, callers, trio_work)
    return base[0] / base[1], ours[0] / ours[1]


def bench_claim(dsn: str, callers: int, count: int) -> tuple[float, float]:
    lock_timeout = 300.0  # seconds (the SQL function takes a number since 0008)

    async def aio_work(pool: Any, n: int) -> int:
        done = 0
        worker = f"aio-{n}"
        while True:
            async with pool.acquire() as conn:
                rows = await conn.fetch(ACQUIRE_SQL, worker, CLAIM, lock_timeout)
                if not rows:
                    return done
                await conn.fetch(
                    COMPLETE_SQL, [r["id"] for r in rows], worker, [r["lock_token"] for r in rows]
                )
            done += len(rows)

    asyncio.run(reset(dsn))
    asyncio.run(prefill(dsn, "a", count))
    base = aio_run(dsn, callers, aio_work)

    async def cycle(pool: Any, worker: str) -> int:
        async with pool.acquire() as conn:
            items = await queue.acquire(conn, worker, batch_size=CLAIM, lock_timeout=lock_timeout)
            if items:
                await queue.complete_many(conn, [i.lease for i in items])
        return len(items)

    async def trio_work(cross: Cross, pool: Any, n: int) -> int:
        done = 0
        while got := await cross(cycle, pool, f"trio-{n}"):
            done += got
        return done

    asyncio.run(reset(dsn))
    asyncio.run(prefill(dsn, "t", count))
    ours = trio_run(dsn, callers, trio_work)
    assert base[0] == ours[0] == count, (base[0], ours[0], count)
    return base[0] / base[1], ours[0] / ours[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default=None, help="default: DAZ_DATABASE_URL, else embedded"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the work sizes")
    parser.add_argument("--only", default=None, help="run only scenarios containing this text")
    args = parser.parse_args()
    sizes = {
        "enqueue single (rows/s)": (bench_enqueue_single, int(1000 * args.scale)),
        f"enqueue batch of {BATCH} (rows/s)": (bench_enqueue_batch, int(10000 * args.scale)),
        f"acquire({CLAIM})+complete (jobs/s)": (bench_claim, int(5000 * args.scale)),
    }
    with (
        tempfile.TemporaryDirectory(prefix="daz-bench-") as tmp,
        open_database(args.database_url, data_dir=Path(tmp)) as db,
    ):
        print(f"database: {redact_dsn(db.url)} ({db.source.value})")
        print(
            "the SQL layer alone (queue API on a pool connection, no actors, no gateway);"
            " end to end: python -m bench.retry"
        )
        dsn = asyncio.run(setup(db.url))
        print(
            f"{'scenario':34} {'callers':>7} {'asyncpg/asyncio':>16} {'daz/trio':>10} {'ratio':>6}"
        )
        for name, (fn, count) in sizes.items():
            if args.only and args.only not in name:
                continue
            for callers in CALLERS:
                # best of two rounds each, alternating, so neither side gets only a cold table
                rounds = [fn(dsn, callers, count) for _ in range(2)]
                base = max(r[0] for r in rounds)
                ours = max(r[1] for r in rounds)
                print(f"{name:34} {callers:>7} {base:>16,.0f} {ours:>10,.0f} {ours / base:>6.2f}")
        asyncio.run(teardown(db.url))


BENCH_DB = "daz_bench"


def _with_db(dsn: str, name: str) -> str:
    import urllib.parse

    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


async def setup(admin_dsn: str) -> str:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {BENCH_DB}")
    finally:
        await conn.close()
    dsn = _with_db(admin_dsn, BENCH_DB)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return dsn


async def teardown(admin_dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
