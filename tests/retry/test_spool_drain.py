"""Draining the spool into real PostgreSQL: in order, idempotent by event id, after a kill."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from daz_actors.storage import queue
from daz_actors.storage.queue_types import NewItem
from daz_actors.storage.spool import Spool

REPO = Path(__file__).resolve().parents[2]
MAX = 1 << 20


def item(n: int, **kwargs: Any) -> NewItem:
    """A small item whose event id is ``e<n>``."""
    return NewItem(event_id=f"e{n}", event_type="chat.log", event_data={"n": n}, **kwargs)


async def queued(conn: Any) -> list[Any]:
    """Every queue row's event id and creation time, in insertion (id) order."""
    rows: list[Any] = await conn.fetch(
        "SELECT event_id, created_at FROM daz_retry_queue ORDER BY id"
    )
    return rows


async def test_drain_enqueues_in_order_once_per_event_id(pg: Any, tmp_path: Path) -> None:
    """Two drains with overlapping records make one row per event id, in spool order."""
    items = [item(n) for n in range(25)]
    with Spool(tmp_path / "spool", MAX) as spool:
        async with pg.trio_connection() as conn:

            async def send(batch: list[NewItem]) -> None:
                await conn.call(queue.enqueue_many, batch)

            spool.append_many(items[:15])
            assert await spool.drain(send, batch_size=4) == 15
            spool.append_many(items[10:])  # e10..e14 again, as after a lost acknowledgement
            assert await spool.drain(send, batch_size=4) == 15
            rows = await conn.call(queued)
        assert spool.pending_count == 0
    assert [row["event_id"] for row in rows] == [i.event_id for i in items]
    created = [row["created_at"] for row in rows]
    assert created == sorted(created)
    assert created[0] < created[-1]  # several statements: the order is not one timestamp's


async def test_every_field_survives_spool_and_drain(pg: Any, tmp_path: Path) -> None:
    """An item with every field set reaches the queue row unchanged through the spool."""
    full = NewItem(
        event_id="full",
        event_type="cytube.send",
        event_data={"text": "héllo ☃", "n": [1, 2.5, None]},
        channel="room",
        plugin="greeter",
        operation_type="cytube_command",
        event_metadata={"source": "test"},
        priority=9,
        max_retries=7,
        retry_delay=1.5,
        backoff_multiplier=3.0,
        max_delay=90.0,
        attempt_timeout=4.0,
        correlation_id="corr",
        tags=("a", "b"),
        not_before=datetime(2030, 1, 1, tzinfo=UTC),
        expires_at=datetime(2030, 1, 2, tzinfo=UTC),
        checkpoint={"step": 2},
    )
    with Spool(tmp_path / "spool", MAX) as spool:
        spool.append(full)
        async with pg.trio_connection() as conn:

            async def send(batch: list[NewItem]) -> None:
                await conn.call(queue.enqueue_many, batch)

            assert await spool.drain(send) == 1
            row = await conn.call(queue.get_by_event_id, "full")
    assert row is not None
    assert (row.event_data, row.event_metadata, row.checkpoint) == (
        full.event_data,
        full.event_metadata,
        full.checkpoint,
    )
    assert (row.channel, row.plugin, row.operation_type, row.correlation_id, row.tags) == (
        "room",
        "greeter",
        "cytube_command",
        "corr",
        ("a", "b"),
    )
    assert (row.priority, row.max_retries, row.retry_delay, row.attempt_timeout) == (9, 7, 1.5, 4.0)
    assert (row.next_retry_at, row.expires_at) == (full.not_before, full.expires_at)


async def test_acknowledgement_lost_after_commit_makes_no_duplicate(
    pg: Any, tmp_path: Path
) -> None:
    """A batch committed but not acknowledged is re-sent by the next drain and queued once."""
    path = tmp_path / "spool"
    with Spool(path, MAX) as spool:
        spool.append_many([item(n) for n in range(7)])
        async with pg.trio_connection() as conn:
            calls = 0

            async def commit_then_fail(batch: list[NewItem]) -> None:
                nonlocal calls
                calls += 1
                await conn.call(queue.enqueue_many, batch)
                if calls == 2:
                    raise ConnectionError("connection lost before the reply")

            with pytest.raises(ConnectionError):
                await spool.drain(commit_then_fail, batch_size=3)
            assert spool.pending_count == 4  # batch 1 acknowledged, batch 2 not

            new_flags: list[bool] = []

            async def send(batch: list[NewItem]) -> None:
                new_flags.extend(await conn.call(queue.enqueue_many, batch))

            spool.close()  # a restart: the next process opens the same file
            with Spool(path, MAX) as restarted:
                assert await restarted.drain(send, batch_size=3) == 4
            rows = await conn.call(queued)
    assert new_flags == [False, False, False, True]  # e3..e5 were already queued
    assert [row["event_id"] for row in rows] == [f"e{n}" for n in range(7)]


APPEND = """
import sys
from daz_actors.storage.queue_types import NewItem
from daz_actors.storage.spool import Spool
spool = Spool(sys.argv[1], 1 << 30)
for n in range(100_000):
    spool.append(NewItem(event_id=f"k{n}", event_type="chat.log", event_data={"n": n}))
    print(n, flush=True)
"""


def spool_until_killed(path: Path) -> list[str]:
    """Run a child spooling items, SIGKILL it after 300 reports; the event ids it reported."""
    with subprocess.Popen(
        [sys.executable, "-c", APPEND, str(path)], stdout=subprocess.PIPE, text=True, cwd=REPO
    ) as child:
        assert child.stdout is not None
        reported = [child.stdout.readline() for _ in range(300)]
        child.send_signal(signal.SIGKILL)
        reported += child.stdout.read().splitlines()
        assert child.wait() == -signal.SIGKILL
    assert len(reported) < 100_000, "the child finished before the kill"
    return [f"k{line.strip()}" for line in reported]


async def test_items_spooled_by_a_killed_process_are_drained_at_next_start(
    pg: Any, tmp_path: Path
) -> None:
    """A process SIGKILLed while spooling loses nothing it reported; the next start queues it."""
    path = tmp_path / "spool"
    reported_ids = await trio.to_thread.run_sync(spool_until_killed, path)
    with Spool(path, MAX) as spool:
        async with pg.trio_connection() as conn:

            async def send(batch: list[NewItem]) -> None:
                await conn.call(queue.enqueue_many, batch)

            drained = await spool.drain(send, batch_size=50)
            rows = await conn.call(queued)
    event_ids = [row["event_id"] for row in rows]
    assert len(event_ids) == drained
    assert event_ids[: len(reported_ids)] == reported_ids
    assert event_ids == [f"k{n}" for n in range(len(event_ids))]
    assert len(event_ids) <= len(reported_ids) + 1
