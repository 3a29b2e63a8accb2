"""Pruning by age against real PostgreSQL (schema 0010): chat and event tables through
`retention.prune_batch`, the retry queue through `queue.prune_batch` (its history with it)."""

from __future__ import annotations

from typing import Any

import pytest

from daz_actors.storage import queue
from daz_actors.storage.queue_types import NewItem
from daz_actors.storage.retention import TableRetention, prune_batch

CHAT = TableRetention(table="daz_chat_messages", column="received_at", days=30)
PRIVATE = TableRetention(table="daz_private_messages", column="received_at", days=30)
EVENTS = TableRetention(table="daz_channel_events", column="at", days=30)


async def add_lines(conn: Any, prefix: str, count: int, received_days_ago: float) -> None:
    """Chat lines the bot received `received_days_ago` days ago; the server claims they
    were said today (the retention must go by the bot's clock, not the server's)."""
    await conn.execute(
        "INSERT INTO daz_chat_messages (event_id, channel, username, message, sent_at,"
        " received_at) SELECT $1 || n, 'c', 'u', 'hi', now(),"
        " now() - make_interval(secs => $2 * 86400) FROM generate_series(1, $3) n",
        prefix,
        float(received_days_ago),
        count,
    )


async def event_ids(conn: Any, table: str) -> list[str]:
    rows = await conn.fetch(f"SELECT event_id FROM {table} ORDER BY event_id")
    return [r["event_id"] for r in rows]


def test_chat_lines_older_than_the_retention_go_in_bounded_batches(pg: Any) -> None:
    """Five lines past 30 days go two at a time (2, 2, 1: a short batch means done); the
    lines within 30 days stay, whatever the server said their time was."""

    async def body(conn: Any) -> None:
        await add_lines(conn, "old-", 5, received_days_ago=31)
        await add_lines(conn, "new-", 3, received_days_ago=29)
        batches = []
        while not batches or batches[-1] == 2:
            batches.append(await prune_batch(conn, CHAT, batch_size=2))
        assert batches == [2, 2, 1]
        assert await event_ids(conn, "daz_chat_messages") == ["new-1", "new-2", "new-3"]
        assert await prune_batch(conn, CHAT, batch_size=2) == 0

    pg.run(body)


def test_private_messages_and_channel_events_are_pruned_by_their_own_columns(pg: Any) -> None:
    """PMs by received_at, joins/leaves/media by `at`; the other tables are not touched."""

    async def body(conn: Any) -> None:
        await conn.execute(
            "INSERT INTO daz_private_messages (event_id, channel, from_user, to_user, message,"
            " sent_at, received_at) VALUES"
            " ('pm-old', 'c', 'a', 'b', 'x', now(), now() - interval '40 days'),"
            " ('pm-new', 'c', 'a', 'b', 'x', now() - interval '40 days', now())"
        )
        await conn.execute(
            "INSERT INTO daz_channel_events (event_id, kind, channel, username, at) VALUES"
            " ('ev-old', 'join', 'c', 'a', now() - interval '31 days'),"
            " ('ev-new', 'leave', 'c', 'a', now() - interval '29 days')"
        )
        await add_lines(conn, "chat-old-", 2, received_days_ago=400)
        assert await prune_batch(conn, PRIVATE, batch_size=100) == 1
        assert await prune_batch(conn, EVENTS, batch_size=100) == 1
        assert await event_ids(conn, "daz_private_messages") == ["pm-new"]
        assert await event_ids(conn, "daz_channel_events") == ["ev-new"]
        assert len(await event_ids(conn, "daz_chat_messages")) == 2  # no rule ran for it

    pg.run(body)


def test_the_batches_use_the_retention_index(pg: Any) -> None:
    """Each batch finds its oldest rows through the index on the receipt time (0010), not
    by reading the whole table."""

    async def body(conn: Any) -> None:
        await add_lines(conn, "x-", 2000, received_days_ago=1)
        await conn.execute("ANALYZE daz_chat_messages")
        plan = "\n".join(
            r[0] for r in await conn.fetch("EXPLAIN " + CHAT.statement(), CHAT.days * 86400.0, 100)
        )
        assert "daz_chat_messages_received_at_idx" in plan, plan

    pg.run(body)


def test_finished_items_go_in_batches_with_their_history(pg: Any) -> None:
    """The queue's batched pruning deletes old finished items at most `batch_size` at a time,
    and their history rows with them (the delete trigger, 0014); the history of the items kept
    stays, and dead letters stay unless a dead-letter retention is given."""

    async def body(conn: Any) -> None:
        names = ["old-1", "old-2", "old-3", "new", "dead"]
        await queue.enqueue_many(conn, [NewItem(event_id=n, event_type="t") for n in names])
        leased = {i.event_id: i for i in await queue.acquire(conn, "w", batch_size=5)}
        for name in ["old-1", "old-2", "old-3", "new"]:
            await queue.complete(conn, leased[name].lease)
        await queue.fail(conn, leased["dead"].lease, error="x", retryable=False)
        await conn.execute(
            "UPDATE daz_retry_queue SET updated_at = now() - interval '10 days'"
            " WHERE event_id <> 'new'"
        )
        history = "SELECT event_id FROM daz_retry_history ORDER BY event_id"
        assert [r[0] for r in await conn.fetch(history)] == sorted(names)

        prune = {"retention_days": 7, "batch_size": 2}
        assert await queue.prune_batch(conn, **prune) == 2
        assert await queue.prune_batch(conn, **prune) == 1
        assert await queue.prune_batch(conn, **prune) == 0
        assert [r[0] for r in await conn.fetch(history)] == ["dead", "new"]
        assert await queue.prune_batch(conn, **prune, dead_letter_retention_days=7) == 1
        assert [r[0] for r in await conn.fetch(history)] == ["new"]
        assert await event_ids(conn, "daz_retry_queue") == ["new"]

    pg.run(body)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"table": "daz_chat_messages; DROP TABLE x", "column": "at", "days": 1}, "table must be"),
        ({"table": "Chat", "column": "at", "days": 1}, "table must be"),
        ({"table": "t", "column": '"at"', "days": 1}, "column must be"),
        ({"table": "t", "column": "at", "days": 0}, "days must be > 0"),
        ({"table": "t", "column": "at", "days": 36501}, "days must be at most"),
        ({"table": "t", "column": "at", "days": 1, "key": "id)"}, "key must be"),
    ],
)
def test_a_rule_with_a_bad_name_or_age_is_refused(fields: dict[str, Any], reason: str) -> None:
    """Names are written into the statement: only plain identifiers are accepted."""
    with pytest.raises(ValueError, match=reason):
        TableRetention(**fields)


def test_a_bad_batch_size_is_refused_before_any_sql(pg: Any) -> None:
    async def body(conn: Any) -> None:
        for bad in (0, -1, True, 2.5):
            with pytest.raises(ValueError, match="batch_size"):
                await prune_batch(conn, CHAT, batch_size=bad)
            with pytest.raises(ValueError, match="batch_size"):
                await queue.prune_batch(conn, retention_days=1, batch_size=bad)

    pg.run(body)
