"""Schema 0016's hand-over of a claimed retry item to the node holding its channel, against
real PostgreSQL: every verdict, what a hand-over changes (and what it leaves: the retry
count), its bound, and the notification the holder's keeper wakes its workers on."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from daz_actors.cluster import sql
from daz_actors.cluster.hand_over import hand_over
from daz_actors.cytube.elsewhere import HandOver
from daz_actors.storage import queue
from daz_actors.storage.queue_types import NewItem, QueueItem

NODE_A = sql.NodeInfo(
    node_id="a-1", name="a", host="h", pid=1, version="0", weight=1.0, channels=("x", "y")
)


async def _claim(conn: Any, worker: str) -> QueueItem:
    items = await queue.acquire(conn, worker, batch_size=1, lock_timeout=30)
    assert len(items) == 1, items
    return items[0]


async def _offer(
    conn: Any, item: QueueItem, channel: str, *, node: str = "b-1", max_hand_overs: int = 20,
    only_elsewhere: bool = False,
) -> Any:  # fmt: skip
    lease = item.lease
    return await hand_over(
        conn, item_id=lease.item_id, worker_id=lease.worker_id, lock_token=lease.lock_token,
        channel=channel, node_id=node, live=30, delay_held=0.5, delay_unheld=5.0,
        max_hand_overs=max_hand_overs, only_elsewhere=only_elsewhere,
    )  # fmt: skip


def _item(event_id: str, channel: str) -> NewItem:
    return NewItem(
        event_id=event_id,
        event_type="cytube.say",
        event_data={"version": 1, "args": {"channel": channel, "msg": "hi"}},
        channel=channel,
        max_retries=3,
    )


def test_an_item_for_a_channel_another_node_holds_is_handed_over_without_an_attempt(pg):
    """Claimed by a worker of node b while node a holds channel x: released (the history
    row 'released'), its retry count unchanged, due again only after the short delay (so
    the same worker does not take it back at once), its hand-overs counted, and a
    notification names the channel and the delay; the stale lease then finds it 'lost'."""

    async def check(conn: Any) -> None:
        notes: asyncio.Queue[str] = asyncio.Queue()
        await conn.add_listener("daz_retry_handed_over", lambda *a: notes.put_nowait(a[3]))
        await sql.heartbeat_and_renew(conn, node=NODE_A, ttl=30)
        assert await sql.claim(conn, kind="channel", name="x", node_id="a-1", ttl=30)
        await queue.enqueue(conn, _item("e1", "x"))
        item = await _claim(conn, "b:1:1")
        result = await _offer(conn, item, "x")
        assert (result.verdict, result.holder, result.hand_overs) == (
            HandOver.HANDED_OVER, "a-1", 1,
        )  # fmt: skip
        row = await conn.fetchrow(
            "SELECT status, retry_count, locked_by, event_metadata,"
            " extract(epoch FROM next_retry_at - now())::float8 AS due_in"
            " FROM daz_retry_queue WHERE event_id = 'e1'"
        )
        assert (row["status"], row["retry_count"], row["locked_by"]) == ("pending", 0, None)
        assert 0.3 < row["due_in"] <= 0.5
        assert json.loads(row["event_metadata"])["hand_overs"] == 1
        history = await queue.history(conn, item.id)
        assert [(h.worker_id, h.outcome) for h in history] == [("b:1:1", "released")]
        assert await queue.acquire(conn, "b:1:1", batch_size=1, lock_timeout=30) == []
        payload = json.loads(await asyncio.wait_for(notes.get(), timeout=10))
        assert payload == {"channel": "x", "delay": 0.5}
        again = await _offer(conn, item, "x")  # the lease it held is gone
        assert again.verdict is HandOver.LOST

    pg.run(check)


def test_the_verdicts_stay_unserved_exhausted_and_a_channel_between_holders(pg):
    """Only-elsewhere offers stay with the node holding the channel (or when nobody
    does); a channel no node holds or lists is unserved (nothing changed); one listed by a
    live node but held by none, or held by a node no longer heard from (a failover under
    way), is handed over with the longer delay; past the bound an offer is exhausted and
    the item stays claimed."""

    async def check(conn: Any) -> None:
        await sql.heartbeat_and_renew(conn, node=NODE_A, ttl=30)
        assert await sql.claim(conn, kind="channel", name="x", node_id="a-1", ttl=30)
        for n, channel in enumerate(["x", "y", "z"]):
            await queue.enqueue(conn, _item(f"e{n}", channel))
        claimed = [await _claim(conn, "b:1:1") for _ in range(3)]
        x, y, z = sorted(claimed, key=lambda i: i.channel or "")
        stay = await _offer(conn, x, "x", node="a-1", only_elsewhere=True)
        assert (stay.verdict, stay.holder) == (HandOver.STAY, "a-1")
        assert (await _offer(conn, y, "y", only_elsewhere=True)).verdict is HandOver.STAY
        unserved = await _offer(conn, z, "z")
        assert (unserved.verdict, unserved.holder) == (HandOver.UNSERVED, None)
        still = await queue.get(conn, z.id)
        assert still is not None
        assert still.status.value == "processing"
        between = await _offer(conn, y, "y")
        assert (between.verdict, between.holder) == (HandOver.HANDED_OVER, None)
        due_in = await conn.fetchval(
            "SELECT extract(epoch FROM next_retry_at - now())::float8 FROM daz_retry_queue"
            " WHERE id = $1",
            y.id,
        )
        assert 4.5 < due_in <= 5.0
        # the bound: one hand-over allowed, the second offer is exhausted
        assert (await _offer(conn, x, "x", max_hand_overs=1)).verdict is HandOver.HANDED_OVER
        await conn.execute("UPDATE daz_retry_queue SET next_retry_at = now() WHERE id = $1", x.id)
        x2 = await _claim(conn, "b:1:1")
        assert x2.id == x.id
        exhausted = await _offer(conn, x2, "x", max_hand_overs=1)
        assert (exhausted.verdict, exhausted.hand_overs) == (HandOver.EXHAUSTED, 1)
        item = await queue.get(conn, x.id)
        assert item is not None
        assert (item.status.value, item.retry_count) == ("processing", 0)
        # its holder no longer heard from (the lease not run out yet): a failover is under
        # way, so the longer delay
        await conn.execute(
            "UPDATE daz_cluster_nodes SET heartbeat_at = now() - interval '1 minute'"
        )
        await queue.enqueue(conn, _item("e9", "x"))
        orphan = await _claim(conn, "b:1:1")
        assert orphan.event_id == "e9"
        result = await _offer(conn, orphan, "x")
        assert (result.verdict, result.holder) == (HandOver.HANDED_OVER, "a-1")
        due_in = await conn.fetchval(
            "SELECT extract(epoch FROM next_retry_at - now())::float8 FROM daz_retry_queue"
            " WHERE id = $1",
            orphan.id,
        )
        assert 4.5 < due_in <= 5.0

    pg.run(check)
