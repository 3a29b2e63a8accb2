"""The retry dispatcher: wakes the workers on LISTEN/NOTIFY and on a poll timer.

It keeps its own PostgreSQL connection for LISTEN (on its own trio-asyncio loop),
reconnecting with backoff when it is lost; the poll interval is the fallback, so lost
notifications delay work by at most one interval. A notification wakes only as many
workers as its new items need (its payload is their number: one worker per batch), taking
turns, so one enqueued item does not send every idle worker to race for it; a poll wakes
them all. Every ``cleanup_interval`` seconds it runs a pass of the periodic cleanup
(`daz_actors.retry.cleanup.Cleanup`: the queue's finished items, then the chat and event
tables under a retention); where several processes share the database, only the one its
`gate` lets (the holder of the cleanup's singleton lease).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import trio
import trio_asyncio

from daz_actors.retry.capture import DrainSpool
from daz_actors.retry.cleanup import Cleanup
from daz_actors.retry.worker import Wake
from daz_actors.runtime.actor import ActorContext
from daz_actors.runtime.backoff import BackoffPolicy, Jitter
from daz_actors.storage import queue
from daz_actors.storage.embedded_pg import redact_dsn
from daz_actors.storage.sql_messages import SqlClient

__all__ = ["RetryDispatcher"]

log = logging.getLogger("daz_actors.retry")

CLEANUP_JOB = "retry.cleanup"  # its name for the gate (a singleton lease in a cluster)

LISTEN_BACKOFF = BackoffPolicy(initial=0.2, multiplier=2.0, max_delay=30.0, jitter=Jitter.FULL)


class RetryDispatcher:
    """A `Startable` that wakes `workers` (registered names) when work may be due."""

    def __init__(
        self,
        *,
        dsn: str,
        workers: Sequence[str],
        gateway: str,
        poll_interval: float,
        cleanup_interval: float,
        cleanup: Cleanup,
        capture: str,
        batch_size: int = 10,
        gate: Callable[[str], bool] | None = None,
    ) -> None:
        self.capture = capture
        # may this process run a once-per-database job now? None: always (one process)
        self.gate = gate
        self.cleanups_skipped = 0  # cleanups left to the process that holds the job
        self._dsn = dsn
        self.workers = tuple(workers)
        self.gateway = gateway
        self.poll_interval = poll_interval
        self.cleanup_interval = cleanup_interval
        self.cleanup = cleanup
        self.cleanups = 0  # cleanup passes run to their end
        self.notifications = 0  # NOTIFYs received
        self.wakeups = 0  # times the workers were woken
        self.listening = False  # the LISTEN connection is up now
        self.wakes_sent = 0  # Wake messages sent to workers
        self.batch_size = batch_size
        self._notified_items = 0  # new items announced since the workers were last woken
        self._next = 0  # the worker whose turn it is to be woken first
        self._wake = trio.Event()

    async def __call__(
        self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        refs = [ctx.registry.lookup(name) for name in self.workers]
        capture = ctx.registry.lookup(self.capture)
        db = SqlClient(ctx.registry.lookup(self.gateway))
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            nursery.start_soon(self._listen)
            nursery.start_soon(self._cleanup_periodically, db)
            task_status.started()
            notified = False
            while True:
                self.wakeups += 1
                count = len(refs)
                if notified and self._notified_items > 0:
                    count = min(count, -(-self._notified_items // self.batch_size))
                self._notified_items = 0
                for n in range(count):
                    ref = refs[(self._next + n) % len(refs)]
                    self.wakes_sent += 1
                    ref.try_send(Wake())  # a full mailbox already holds a Wake
                self._next = (self._next + count) % len(refs)
                capture.try_send(DrainSpool())  # spooled items go in once the database is back
                notified = False
                with trio.move_on_after(self.poll_interval):
                    await self._wake.wait()
                    notified = True
                self._wake = trio.Event()

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.notifications += 1
        try:
            new = int(payload)
        except ValueError:  # not a count: as many as all workers take at once
            new = self.batch_size * len(self.workers)
        self._notified_items += max(new, 1)
        self._wake.set()

    async def _listen(self) -> None:
        attempt = 0
        while True:
            lost = trio.Event()
            conn: Any = None
            try:
                conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(self._dsn, timeout=10)
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await trio_asyncio.aio_as_trio(conn.add_listener)(
                    queue.NOTIFY_CHANNEL, self._notified
                )
                self.listening, attempt = True, 0
                # anything enqueued while we were not listening: all workers look
                self._notified_items += self.batch_size * len(self.workers)
                self._wake.set()
                await lost.wait()
                log.warning("LISTEN connection to %s lost; reconnecting", redact_dsn(self._dsn))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                delay = LISTEN_BACKOFF.delay(attempt)
                attempt += 1
                log.warning("cannot LISTEN (%s); polling meanwhile, retry in %.1f s", exc, delay)
                await trio.sleep(delay)
            finally:
                self.listening = False
                if conn is not None and not conn.is_closed():
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await trio_asyncio.aio_as_trio(conn.close)()

    async def _cleanup_periodically(self, db: SqlClient) -> None:
        while True:
            await trio.sleep(self.cleanup_interval)
            if self.gate is not None and not self.gate(CLEANUP_JOB):
                self.cleanups_skipped += 1  # another process runs it
                continue
            await self.cleanup.run(db)  # logs what it removed, and what failed
            self.cleanups += 1
