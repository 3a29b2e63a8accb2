"""The chat log's writer: a room's rows stored in groups, off the router's path.

The event router hands each row (`chat_log.LogRow`) to the room's `LogBuffer` and goes on
with the next event: it never waits on PostgreSQL, so neither does the connection that
feeds it, and the connection keeps answering the server's pings whatever the database
does. A `LogWriter` task beside the router takes every row that arrived while its last
write ran (at most ``log_batch``) and stores them in one call through the SQL gateway: one
transaction, one multi-row insert per table (`chat_log.batch_statements`), each row still
idempotent by its event id (``ON CONFLICT (event_id)``).

Nothing accepted is lost:

- A row leaves the buffer only once it is stored, or handed to the retry path (on
  ``chat.log.failed``, a `FailureBatch` of failure events each carrying a row as its
  intent, which the retry capture queues in one call, or spools with one fsync while
  PostgreSQL is unreachable), or refused for good by
  PostgreSQL (logged and counted, as one row's insert always was).
- The buffer belongs to the router's child slot, not to one incarnation (it is made once
  per router `Startable`, like a mailbox): when the router crashes while a batch is being
  written, the batch is still at the head of the buffer and the next incarnation's writer
  writes it again. A batch that committed before the crash is written twice, harmlessly:
  the inserts are idempotent.
- A batch PostgreSQL refuses for good (one bad row) is written again row by row, so the
  other rows are stored; an unexpected error is handled the same way, and a row whose own
  insert fails unexpectedly goes to the retry path, so no row can crash the room again
  and again.
- On an orderly stop the writer gets a moment (`STOP_FLUSH`) to write what is left, or to
  hand it to the retry path; what a crash leaves waits for the next incarnation.

The buffer is bounded (``log_buffer`` rows): only when that many rows wait (a database
stall long enough to fill it) does the router wait for room, and with it the connection.
"""

from __future__ import annotations

import collections
import itertools
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

import trio

from daz_actors.cytube.chat_log import LOG_INTENTS, LogRow, batch_statements
from daz_actors.runtime.bus import EventBus
from daz_actors.runtime.events import FailureBatch, FailureEvent
from daz_actors.runtime.log_summary import RepeatedWarnings
from daz_actors.storage.error_classes import DEFAULT_CLASSIFIER
from daz_actors.storage.sql_messages import CALL_FAILED, SqlClient

__all__ = ["LOG_FAILED_TOPIC", "STOP_FLUSH", "LogBuffer", "LogWriter", "StoredHook"]

log = logging.getLogger("daz_actors.router")

LOG_FAILED_TOPIC = "chat.log.failed"
STOP_FLUSH = 2.0  # seconds an orderly stop gives the writer to store what is left

# called with the rows of each batch once they are stored (for benchmarks and metrics)
StoredHook = Callable[[Sequence[LogRow]], None]
Settled = Literal["stored", "handed_over", "refused"]  # how rows left the buffer


class LogBuffer:
    """Rows accepted and not yet settled, in arrival order; kept across incarnations.

    One writer at a time reads it: `peek` the head, write it, then `settle` it.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"log buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._rows: collections.deque[LogRow] = collections.deque()
        self._added = trio.Event()
        self._room = trio.Event()
        # the room's counters, across incarnations (metrics read them)
        self.accepted = 0  # rows added, ever
        self.stored = 0  # rows written (or found already written)
        self.handed_over = 0  # rows handed to the retry path
        self.refused = 0  # rows PostgreSQL refused for good
        self.full_waits = 0  # adds that waited for room (the buffer was full)
        self.depth_max = 0  # the most rows ever waiting at once

    def __len__(self) -> int:
        return len(self._rows)

    async def add(self, row: LogRow) -> None:
        """Take `row`; waits only while `capacity` rows are waiting."""
        if len(self._rows) >= self.capacity:
            self.full_waits += 1
            while len(self._rows) >= self.capacity:
                if self._room.is_set():
                    self._room = trio.Event()
                await self._room.wait()
        self._rows.append(row)
        self.accepted += 1
        if len(self._rows) > self.depth_max:
            self.depth_max = len(self._rows)
        self._added.set()

    async def wait_rows(self) -> None:
        """Return once a row is waiting."""
        while not self._rows:
            if self._added.is_set():
                self._added = trio.Event()
            await self._added.wait()

    def peek(self, limit: int) -> list[LogRow]:
        """The oldest `limit` rows (they stay in the buffer until settled)."""
        return list(itertools.islice(self._rows, limit))

    def settle(self, count: int, outcome: Settled) -> None:
        """The oldest `count` rows are done with: stored, handed over or refused."""
        for _ in range(count):
            self._rows.popleft()
        if outcome == "stored":
            self.stored += count
        elif outcome == "handed_over":
            self.handed_over += count
        else:
            self.refused += count
        self._room.set()


class LogWriter:
    """One router incarnation's writer task over the room's `LogBuffer`."""

    def __init__(
        self,
        buffer: LogBuffer,
        *,
        db: SqlClient,
        bus: EventBus,
        source: str,
        channel: str,
        timeout: float,
        batch: int,
        on_stored: StoredHook | None = None,
    ) -> None:
        self.buffer = buffer
        self.db = db
        self.bus = bus
        self.source = source  # the router's registered name, in failure events
        self.channel = channel
        self.timeout = timeout  # seconds one batch may take
        self.batch = batch  # rows per batch at most
        self.on_stored = on_stored
        self.warnings = RepeatedWarnings(log)
        self.stored = 0  # rows written (or found already written)
        self.handed_over = 0  # rows handed to the retry path
        self.refused = 0  # rows PostgreSQL refused for good (not retried)
        self.batches = 0  # batch writes tried
        # one batch at a time, from peek to settle: the task and a flush on stop take turns
        self._lock = trio.Lock()
        self._scope = trio.CancelScope()

    async def run(self) -> None:
        """Write batches until cancelled or `stop`ped."""
        with self._scope:
            while True:
                await self.buffer.wait_rows()
                await self.write_batch()

    def stop(self) -> None:
        """End `run` (a batch it was writing stays in the buffer)."""
        self._scope.cancel()

    async def flush(self) -> None:
        """Write (or hand over) every row waiting now."""
        while len(self.buffer):
            await self.write_batch()

    async def write_batch(self) -> None:
        """Write the rows at the head of the buffer, then settle them."""
        async with self._lock:
            if len(self.buffer):
                await self._write(self.buffer.peek(self.batch))

    async def _write(self, rows: list[LogRow]) -> None:
        self.batches += 1
        self.warnings.flush_due()  # the count of a burst of warnings that is over
        try:
            await self.db.transaction(
                partial(_run_statements, batch_statements(rows)),
                name="chat.log",
                timeout=self.timeout,
            )
        except CALL_FAILED as exc:
            verdict = DEFAULT_CLASSIFIER.classify(exc)
            if verdict.retryable:
                await self._hand_over(rows, exc, verdict.code)
                return
            await self._one_by_one(rows)  # find the row PostgreSQL refuses; store the rest
            return
        except Exception as exc:  # a bug or an unforeseen error: never lose the rows
            log.error("room %s: writing a batch failed unexpectedly: %r", self.channel, exc)
            await self._one_by_one(rows)
            return
        self.buffer.settle(len(rows), "stored")
        self.stored += len(rows)
        if self.on_stored is not None:
            self.on_stored(rows)

    async def _one_by_one(self, rows: Sequence[LogRow]) -> None:
        for row in rows:
            try:
                await self.db.execute(
                    row.sql, *row.args(), timeout=self.timeout, event_id=f"log-{row.event_id}"
                )
            except CALL_FAILED as exc:
                verdict = DEFAULT_CLASSIFIER.classify(exc)
                if verdict.retryable:
                    await self._hand_over([row], exc, verdict.code)
                    continue
                self.refused += 1
                self.warnings.warning(
                    f"log:{row.table}:{verdict.code}",
                    "room %s: writing %s %s failed (%s); permanent, not retried",
                    self.channel, row.table, row.event_id, verdict.code,
                )  # fmt: skip
                self.buffer.settle(1, "refused")
                continue
            except Exception as exc:  # the retry queue's handler tries again, then dead-letters
                await self._hand_over([row], exc, "unexpected")
                continue
            self.buffer.settle(1, "stored")
            self.stored += 1
            if self.on_stored is not None:
                self.on_stored([row])

    async def _hand_over(
        self, rows: Sequence[LogRow], exc: BaseException, code: str | None
    ) -> None:
        """Publish the rows' intents for the retry queue as one `FailureBatch` (the capture
        queues or spools them in one call), then settle them."""
        self.warnings.warning(
            f"log:{code}",
            "room %s: writing %d rows failed (%s); queued for retry",
            self.channel, len(rows), code,
        )  # fmt: skip
        events = []
        for row in rows:
            intent_type = LOG_INTENTS[type(row)]
            events.append(
                FailureEvent(
                    topic=LOG_FAILED_TOPIC,
                    source=self.source,
                    operation="sql_operation",
                    event_type=intent_type.name,
                    error=str(exc),
                    error_code=code,
                    retryable=True,
                    intent=intent_type.intent(row),
                    plugin="chat-log",
                    channel=self.channel,
                    event_id=f"log-{row.event_id}",
                )
            )
        reached = await self.bus.publish(
            LOG_FAILED_TOPIC, FailureBatch(topic=LOG_FAILED_TOPIC, events=tuple(events))
        )
        if not reached:  # no retry capture in this tree: nothing will store them
            log.error(
                "room %s: %d rows not stored: writing failed (%s) and no retry capture"
                " subscribes to %s",
                self.channel, len(rows), code, LOG_FAILED_TOPIC,
            )  # fmt: skip
            self.buffer.settle(len(rows), "refused")
            return
        self.buffer.settle(len(rows), "handed_over")
        self.handed_over += len(rows)


async def _run_statements(statements: list[tuple[str, tuple[Any, ...]]], conn: Any) -> None:
    """The asyncio side of a batch: every table's insert, in the gateway's transaction."""
    for sql, args in statements:
        await conn.execute(sql, *args)
