"""Crash tests with real processes: a worker process SIGKILLed mid-attempt loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from daz_actors.storage import queue
from daz_actors.storage.queue_types import Lease, NewItem
from daz_actors.testing import poll

PROGRAM = Path(__file__).parent / "programs" / "retry_worker.py"
ITEMS = 40


async def read_lines(process: trio.Process, until: int, prefix: str) -> list[str]:
    """Lines from the process's stdout until `until` lines start with `prefix`."""
    assert process.stdout is not None
    seen: list[str] = []
    buffer = b""
    while sum(line.startswith(prefix) for line in seen) < until:
        chunk = await process.stdout.receive_some(4096)
        if not chunk:
            raise AssertionError(f"process ended early; output so far: {seen}")
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        seen.extend(line.decode() for line in lines)
    return seen


async def start_worker(dsn: str, hold: float, lock_timeout: float, data: Path) -> trio.Process:
    return await trio.lowlevel.open_process(
        [sys.executable, str(PROGRAM), dsn, str(hold), str(lock_timeout)],
        stdout=subprocess.PIPE,
        env={**os.environ, "DAZ_DATA_DIR": str(data)},
    )


async def count_unfinished(sql: Any) -> int:
    rows = await sql("SELECT count(*) AS n FROM daz_retry_queue WHERE status <> 'completed'")
    return int(rows[0]["n"])


async def nothing_unfinished(sql: Any) -> bool:
    return await count_unfinished(sql) == 0


async def test_sigkilled_worker_process_loses_nothing_and_completes_each_item_once(pg, tmp_path):
    """SIGKILL a worker process mid-attempt under load; another process reclaims the stranded
    items after the lock timeout: every item completed once, none left processing, and the
    dead worker's late completion is refused."""
    async with pg.trio_connection() as db:

        async def sql(text: str, *args: Any) -> Any:
            return await db.call(lambda conn: conn.fetch(text, *args))

        await sql("CREATE TABLE attempts (event_id text, pid int)")
        # no key: a second execution of an item would show as a second row
        await sql("CREATE TABLE effects (event_id text)")
        items = [NewItem(event_id=f"job-{n}", event_type="test.crash") for n in range(ITEMS)]
        await db.call(queue.enqueue_many, items)

        first = await start_worker(pg.dsn, hold=3600, lock_timeout=300, data=tmp_path)
        try:
            with trio.fail_after(60):
                await read_lines(first, until=3, prefix="ATTEMPT")  # 3 workers mid-attempt
        finally:
            first.send_signal(signal.SIGKILL)
            await first.wait()
        assert first.returncode == -signal.SIGKILL
        stranded = await sql(
            "SELECT id, event_id, locked_by, lock_token FROM daz_retry_queue"
            " WHERE status = 'processing'"
        )
        assert len(stranded) >= 3

        second = await start_worker(pg.dsn, hold=0, lock_timeout=1, data=tmp_path)
        try:
            await poll(lambda: nothing_unfinished(sql), timeout=120, interval=0.1)
        finally:
            second.send_signal(signal.SIGTERM)
            with trio.fail_after(60):
                await second.wait()
        assert second.returncode == 0

        every_item_once = {i.event_id: 1 for i in items}
        # each item's effect was applied once: the killed process never got that far
        effects = await sql("SELECT event_id, count(*) AS n FROM effects GROUP BY 1")
        assert {r["event_id"]: r["n"] for r in effects} == every_item_once
        # each item was completed once, by one attempt
        completions = await sql(
            "SELECT q.event_id, count(*) AS n FROM daz_retry_history h"
            " JOIN daz_retry_queue q ON q.id = h.item_id WHERE h.outcome = 'completed' GROUP BY 1"
        )
        assert {r["event_id"]: r["n"] for r in completions} == every_item_once
        # the second process ran every item exactly once; the first only stranded ones
        attempts = await sql("SELECT event_id, pid FROM attempts")
        by_second = Counter(r["event_id"] for r in attempts if r["pid"] == second.pid)
        assert by_second == every_item_once
        by_first = {r["event_id"] for r in attempts if r["pid"] == first.pid}
        assert len(by_first) >= 3
        assert by_first <= {r["event_id"] for r in stranded}
        assert len(attempts) == ITEMS + len(by_first)
        expired = await sql(
            "SELECT count(*) AS n FROM daz_retry_history WHERE outcome = 'lock_expired'"
        )
        assert expired[0]["n"] == len(stranded)
        late = Lease(
            item_id=stranded[0]["id"],
            worker_id=stranded[0]["locked_by"],
            lock_token=stranded[0]["lock_token"],
        )
        assert await db.call(queue.complete, late) is False
