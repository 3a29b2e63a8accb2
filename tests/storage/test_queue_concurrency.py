"""Many acquirers at once never get the same item."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import asyncpg
import trio
import trio_asyncio

from daz_actors.storage import queue
from daz_actors.storage.queue_types import NewItem

ITEMS = 400


async def _fill(conn: Any) -> None:
    await queue.enqueue_many(
        conn,
        [NewItem(event_id=f"c{i}", event_type="t", priority=1 + i % 10) for i in range(ITEMS)],
    )


def test_concurrent_acquirers_on_asyncio_never_share_an_item(pg: Any) -> None:
    """Eight connections claiming and completing until the queue is empty see each item once;
    each holds its first claim until all eight hold one, so the claims really overlap."""
    everyone_holds_a_claim = asyncio.Barrier(8)

    async def worker(name: str) -> list[int]:
        conn = await asyncpg.connect(pg.dsn)
        seen: list[int] = []
        try:
            while True:
                items = await queue.acquire(conn, name, batch_size=7)
                if not items:
                    return seen
                if not seen:  # 8 x 7 < ITEMS: every worker's first claim finds items
                    async with asyncio.timeout(30):
                        await everyone_holds_a_claim.wait()
                seen += [i.id for i in items]
                result = await queue.complete_many(conn, [i.lease for i in items])
                assert result.refused == frozenset()
        finally:
            await conn.close()

    async def body(conn: Any) -> None:
        await _fill(conn)
        results = await asyncio.gather(*(worker(f"w{n}") for n in range(8)))
        counts = Counter(i for seen in results for i in seen)
        assert len(counts) == ITEMS
        assert set(counts.values()) == {1}
        assert all(len(seen) >= 7 for seen in results)  # eight claims were held at once
        done = await conn.fetchval(
            "SELECT count(*) FROM daz_retry_queue WHERE status = 'completed'"
        )
        assert done == ITEMS

    pg.run(body)


async def test_concurrent_acquirers_from_trio_never_share_an_item(pg: Any) -> None:
    """Four trio tasks sharing a pool through trio-asyncio claim every item exactly once."""
    seen: list[int] = []

    async def worker(pool: Any, name: str) -> None:
        async def cycle() -> int:
            items = await queue.acquire(pool, name, batch_size=10)
            if items:
                await queue.complete_many(pool, [i.lease for i in items])
            seen.extend(i.id for i in items)
            return len(items)

        while await trio_asyncio.aio_as_trio(cycle)():
            pass

    async with trio_asyncio.open_loop():
        pool = await trio_asyncio.aio_as_trio(asyncpg.create_pool)(pg.dsn, min_size=4, max_size=4)
        try:
            await trio_asyncio.aio_as_trio(_fill_pool)(pool)
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for n in range(4):
                        nursery.start_soon(worker, pool, f"t{n}")
        finally:
            await trio_asyncio.aio_as_trio(pool.close)()
    counts = Counter(seen)
    assert len(counts) == ITEMS
    assert set(counts.values()) == {1}


async def _fill_pool(pool: Any) -> None:
    async with pool.acquire() as conn:
        await _fill(conn)
