"""The periodic cleanup against real PostgreSQL: one pass prunes the queue's finished items
(their history with them) and, when the config's [retention] asks, chat and event rows past
their age, in batches driven to the end; without a retention no chat or event row goes."""

from __future__ import annotations

from typing import Any

from retry_trees import Tree, fetchval, retry_tree

from daz_actors.app.config import RetentionConfig
from daz_actors.retry.dispatcher import RetryDispatcher
from daz_actors.retry.handlers import HandlerRegistry
from daz_actors.storage import queue
from daz_actors.storage.queue_types import NewItem
from daz_actors.testing import open_tree, wait_until


def dispatcher(tree: Tree) -> RetryDispatcher:
    [found] = [s for s in tree.sup.startables() if isinstance(s, RetryDispatcher)]
    return found


async def seed(db: Any) -> None:
    """Rows received 400 days ago and 1 day ago in each log table, and two finished queue
    items with their history: one 10 days old, one new."""
    for sql in (
        "INSERT INTO daz_chat_messages (event_id, channel, username, message, sent_at,"
        " received_at) SELECT 'chat-' || a || '-' || n, 'c', 'u', 'hi', now(),"
        " now() - make_interval(days => a) FROM unnest(ARRAY[400, 1]) a,"
        " generate_series(1, 5) n",
        "INSERT INTO daz_private_messages (event_id, channel, from_user, to_user, message,"
        " sent_at, received_at) SELECT 'pm-' || a, 'c', 'a', 'b', 'x', now(),"
        " now() - make_interval(days => a) FROM unnest(ARRAY[400, 1]) a",
        "INSERT INTO daz_channel_events (event_id, kind, channel, username, at)"
        " SELECT 'ev-' || a || '-' || n, 'join', 'c', 'a', now() - make_interval(days => a)"
        " FROM unnest(ARRAY[400, 1]) a, generate_series(1, 3) n",
    ):
        await db.call(lambda conn, sql=sql: conn.execute(sql))
    await db.call(
        queue.enqueue_many, [NewItem(event_id=n, event_type="t") for n in ("q-old", "q-new")]
    )
    for lease in await db.call(queue.acquire, "w", batch_size=2):
        await db.call(queue.complete, lease.lease)
    await fetchval(
        db,
        "UPDATE daz_retry_queue SET updated_at = now() - interval '10 days'"
        " WHERE event_id = 'q-old' RETURNING 1",
    )


async def names(db: Any, table: str) -> list[str]:
    rows = await db.call(lambda conn: conn.fetch(f"SELECT event_id FROM {table} ORDER BY 1"))
    return [r[0] for r in rows]


async def test_a_cleanup_pass_prunes_every_table_past_its_retention(pg: Any) -> None:
    """Chat lines and channel events past 30 days go (five and three old rows in batches of
    two: the pass drives the batches to the end), private messages stay (no retention
    given for them), newer rows stay; the old finished queue item goes with its history."""
    tree = retry_tree(
        pg.dsn,
        HandlerRegistry(),
        cleanup_interval=0.2,
        cleanup_batch_size=2,
        retention=RetentionConfig(chat_days=30, events_days=30),
    )
    async with pg.trio_connection() as db:
        await seed(db)
        async with open_tree(tree.sup):
            await wait_until(lambda: dispatcher(tree).cleanups >= 1, timeout=30)
        assert await names(db, "daz_chat_messages") == [f"chat-1-{n}" for n in range(1, 6)]
        assert await names(db, "daz_channel_events") == ["ev-1-1", "ev-1-2", "ev-1-3"]
        assert await names(db, "daz_private_messages") == ["pm-1", "pm-400"]
        assert await names(db, "daz_retry_queue") == ["q-new"]
        assert await names(db, "daz_retry_history") == ["q-new"]


async def test_without_a_retention_the_cleanup_deletes_no_chat_or_event_row(pg: Any) -> None:
    """Retention is off by default: two cleanup passes run (the old queue item is pruned,
    so they did run) and every chat line, private message and channel event is still
    there, however old."""
    tree = retry_tree(pg.dsn, HandlerRegistry(), cleanup_interval=0.2)
    async with pg.trio_connection() as db:
        await seed(db)
        async with open_tree(tree.sup):
            await wait_until(lambda: dispatcher(tree).cleanups >= 2, timeout=30)
        assert len(await names(db, "daz_chat_messages")) == 10
        assert len(await names(db, "daz_channel_events")) == 6
        assert await names(db, "daz_private_messages") == ["pm-1", "pm-400"]
        assert await names(db, "daz_retry_queue") == ["q-new"]
        assert await names(db, "daz_retry_history") == ["q-new"]
