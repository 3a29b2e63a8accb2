"""Helpers for the dashboard's tests: a database adapter, items in known states, serving."""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import trio

from daz_actors.ops.dashboard import Dashboard, DashboardSettings
from daz_actors.ops.http import serve_http
from daz_actors.ops.metrics import Sources
from daz_actors.storage import queue
from daz_actors.storage.queue_types import NewItem

T = TypeVar("T")


class OneConnection:
    """`Dashboard.database` over the test's own connection (one query at a time)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.lock = trio.Lock()

    async def run(self, fn: Callable[[Any], Awaitable[T]], *, name: str = "") -> T:
        async with self.lock:
            result: T = await self.conn.call(fn)
            return result


async def add(db: Any, event_id: str, **fields: Any) -> int:
    """Enqueue an item; its id."""
    await db.call(queue.enqueue, NewItem(event_id=event_id, event_type="chat", **fields))
    item = await db.call(queue.get_by_event_id, event_id)
    assert item is not None
    return item.id


async def run_attempt(db: Any, worker: str, *, error: str | None = None,
                      retryable: bool = True) -> int:  # fmt: skip
    """Claim the next due item as `worker` and complete it, or fail it with `error`."""
    (item,) = await db.call(queue.acquire, worker, batch_size=1)
    if error is None:
        assert await db.call(queue.complete, item.lease)
    else:
        await db.call(queue.fail, item.lease, error=error, retryable=retryable, next_delay=0)
    return item.id


async def dead_letter(db: Any, event_id: str, error: str, **fields: Any) -> int:
    """An item failed permanently by a worker: a dead letter with one attempt."""
    item_id = await add(db, event_id, **fields)
    await db.call(
        lambda conn: conn.execute("UPDATE daz_retry_queue SET priority = 10 WHERE id = $1", item_id)
    )
    claimed = await run_attempt(db, "worker-x", error=error, retryable=False)
    assert claimed == item_id
    return item_id


@asynccontextmanager
async def serving(
    database: Any, sources: Sources | None = None, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The endpoints with a dashboard on loopback; an HTTP client for them."""
    dashboard = Dashboard(database=database, settings=DashboardSettings(**settings))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_http(
                sources or Sources(), dashboard=dashboard, task_status=task_status
            )
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
        nursery.cancel_scope.cancel()


def ids_on(html: str) -> list[int]:
    """The item ids listed on an items page, in order."""
    return [int(i) for i in re.findall(r'<tr data-id="(\d+)"', html)]


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match[1]


def hidden_fields(html: str) -> dict[str, str]:
    """The hidden fields of the page's form."""
    pairs = re.findall(r"<input type=\"hidden\" name=\"([^\"]+)\" value=\"([^\"]*)\">", html)
    return {k: htmllib.unescape(v) for k, v in pairs}
