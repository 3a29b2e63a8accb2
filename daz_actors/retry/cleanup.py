"""The periodic cleanup: the queue's finished items, then the tables under a retention.

One pass (`Cleanup.run`) deletes, in bounded batches, the retry queue's finished items
past their retention (their history rows go with them: the queue's delete trigger, schema
0014; a foreign key ON DELETE CASCADE before it), then the old
rows of every table given a retention (`TableRetention`, from the application's
``[retention]`` section; the retry layer knows no table but its own). Each batch is one
call through the SQL gateway and one short transaction of its own, so a huge table never
takes one long lock and the gateway's other callers get their turn between batches. A
batch that fails ends that table's pruning for this pass (logged); the next pass tries
again. The retry dispatcher runs a pass every ``cleanup_interval`` seconds: this is the
one thing to wrap to run the cleanup once per database when several processes share it.

`prune_queue` is the same rule for the queue's items on one connection of its own (the
``daz-actors queue cleanup`` command): batches, each its own statement and transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import attrs
import trio

from daz_actors.runtime.validators import at_most, non_negative, positive
from daz_actors.storage import queue, retention
from daz_actors.storage.retention import TableRetention
from daz_actors.storage.sql_messages import CALL_FAILED, SqlClient

__all__ = ["BATCH_SIZE", "MAX_BATCH_SIZE", "QUEUE", "Cleanup", "prune_queue"]

log = logging.getLogger("daz_actors.retry")

QUEUE = "daz_retry_queue"  # the report's key for the queue's own items
BATCH_TIMEOUT = 60.0  # seconds one batch may take before the gateway gives up on it
BATCH_SIZE = 5000  # rows deleted per statement, by default
MAX_BATCH_SIZE = 1_000_000


@attrs.frozen(kw_only=True)
class Cleanup:
    """What one cleanup pass deletes, and in batches of how many rows."""

    retention_days: float = attrs.field(validator=non_negative)  # finished queue items kept
    dead_letter_retention_days: float | None = attrs.field(
        default=None, validator=non_negative
    )  # None: dead letters stay until an operator acts
    tables: tuple[TableRetention, ...] = ()  # chat and event tables under a retention
    batch_size: int = attrs.field(
        default=BATCH_SIZE, validator=[positive, at_most(MAX_BATCH_SIZE)]
    )

    async def run(self, db: SqlClient) -> Mapping[str, int]:
        """One pass; rows deleted per table (the queue's items under `QUEUE`)."""
        deleted = {
            QUEUE: await self._drain(
                db,
                QUEUE,
                partial(
                    queue.prune_batch,
                    retention_days=self.retention_days,
                    dead_letter_retention_days=self.dead_letter_retention_days,
                    batch_size=self.batch_size,
                ),
            )
        }
        for rule in self.tables:
            prune = partial(retention.prune_batch, rule=rule, batch_size=self.batch_size)
            deleted[rule.table] = await self._drain(db, rule.table, prune)
        for table, count in deleted.items():
            if count:
                log.info("cleanup removed %d row(s) of %s past its retention", count, table)
        return deleted

    async def _drain(
        self, db: SqlClient, table: str, batch: Callable[[Any], Awaitable[int]]
    ) -> int:
        """Batches until one comes back short (or fails); the rows deleted."""
        total = 0
        while True:
            try:
                count = await db.run(batch, name=f"cleanup.{table}", timeout=BATCH_TIMEOUT)
            except CALL_FAILED as exc:
                log.warning("cleanup of %s failed after %d row(s): %s", table, total, exc)
                return total
            total += count
            if count < self.batch_size:
                return total
            await trio.lowlevel.checkpoint()  # the gateway's other callers go between


async def prune_queue(
    conn: Any,
    *,
    retention_days: float,
    dead_letter_retention_days: float | None = None,
    batch_size: int = BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """The queue's finished items past their retention, deleted in batches of at most
    `batch_size` on `conn` (an asyncpg connection outside a transaction: each batch is a
    statement and a short transaction of its own, so a backlog of millions never holds its
    locks, or one transaction's dead rows, all at once); the items deleted. `on_batch` is
    told each batch's count as it commits (what was deleted before a failure stays
    deleted). Stops at the first batch that comes back short."""
    total = 0
    while True:
        count = await queue.prune_batch(
            conn,
            retention_days=retention_days,
            dead_letter_retention_days=dead_letter_retention_days,
            batch_size=batch_size,
        )
        total += count
        if on_batch is not None:
            on_batch(count)
        if count < batch_size:
            return total
