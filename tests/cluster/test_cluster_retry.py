"""Retry items on two real nodes sharing one queue: each done once, by the node holding
its channel, as the chat server sees it.

The queue's claim knows nothing of channels, so a fresh item goes to whichever node's
worker asks first. To make the node *without* the channel claim it for sure, these tests
pause the holder (SIGSTOP, well inside its lease: it keeps its channels) while the item
becomes due, and let it go on once the other node has handed the item back.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import trio
import trio_asyncio
from cluster_nodes import (
    BOT,
    BOT_PASSWORD,
    NodeProcess,
    bot_sessions,
    node_config,
    stop_all,
)
from cytube_peer import fixtures

from daz_actors.cytube.intents import COMMAND_RUN, SAY, CommandRun, Say
from daz_actors.retry.intents import intent_data
from daz_actors.storage import queue
from daz_actors.storage.queue_types import NewItem
from daz_actors.testing import poll

cytube_peer_factory = fixtures.cytube_peer_factory

CHANNELS = ["room1", "room2"]
# a pause of a second or two must not cost the holder its lease: ttl - margin = 6 s
TTL, RENEW, MARGIN = 8.0, 1.0, 2.0


def start_peer(factory: Callable[..., Any]) -> Any:
    peer = factory(conn_burst=1000, ping_interval=1, ping_timeout=30.0)
    peer.add_account(BOT, BOT_PASSWORD)
    return peer


async def server_state(peer: Any) -> dict[str, Any]:
    state: dict[str, Any] = await trio.to_thread.run_sync(peer.state)
    return state


def bot_lines(state: dict[str, Any], channel: str) -> list[str]:
    """The bot's lines the server broadcast in `channel`."""
    return [
        c["msg"]
        for c in state["chat_received"]
        if c["channel"] == channel
        and (c.get("username") or "").lower() == BOT
        and c.get("outcome") == "broadcast"
    ]


async def holders(conn: Any) -> dict[str, str]:
    rows = await trio_asyncio.aio_as_trio(conn.fetch)(
        "SELECT name, holder FROM daz_leases"
        " WHERE kind = 'channel' AND holder IS NOT NULL AND expires_at > now()"
    )
    return {r["name"]: r["holder"] for r in rows}


async def history(conn: Any, event_id: str) -> list[tuple[str, str | None]]:
    """(worker, outcome) of each attempt of the item `event_id`, in order."""
    rows = await trio_asyncio.aio_as_trio(conn.fetch)(
        "SELECT h.worker_id, h.outcome FROM daz_retry_history h"
        " JOIN daz_retry_queue q ON q.id = h.item_id WHERE q.event_id = $1 ORDER BY h.id",
        event_id,
    )
    return [(r["worker_id"], r["outcome"]) for r in rows]


async def item_row(conn: Any, event_id: str) -> Any:
    return await trio_asyncio.aio_as_trio(conn.fetchrow)(
        "SELECT status, retry_count, event_metadata ->> 'hand_overs' AS hand_overs"
        " FROM daz_retry_queue WHERE event_id = $1",
        event_id,
    )


async def counter(node: NodeProcess, name: str) -> float:
    """The value of counter `name` in the node's /metrics (0 when absent)."""
    await node.wait_for(r"http://127\.0\.0\.1:\d+")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.http_port}") as client:
        response = await client.get("/metrics")
    response.raise_for_status()
    for line in response.text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def of(node: NodeProcess) -> Callable[[str], bool]:
    """Whether a retry worker id (host:pid:index) is one of `node`'s."""
    assert node.process is not None
    pid = str(node.process.pid)
    return lambda worker: worker.split(":")[-2] == pid


async def two_nodes_one_channel_each(
    nursery: trio.Nursery,
    conn: Any,
    peer: Any,
    tmp_path: Path,
    *,
    plugins: bool = False,
    timings: tuple[float, float, float] = (TTL, RENEW, MARGIN),
) -> tuple[NodeProcess, NodeProcess, list[NodeProcess]]:
    """Start two nodes; once each holds one channel and is in it: (holder of room1, the
    other, both)."""
    ttl, renew, margin = timings
    config = node_config(
        tmp_path / "node.toml", server=peer.url, channels=CHANNELS, ttl=ttl, renew=renew,
        margin=margin, settle=1.0, plugins=plugins,
    )  # fmt: skip
    nodes = [NodeProcess(f"node{n}", config, conn.dsn, tmp_path / f"node{n}") for n in (1, 2)]
    for node in nodes:
        await node.start(nursery)
    for node in nodes:
        await node.wait_for(r"cluster node \S+", timeout=60)

    async def spread() -> dict[str, str] | None:
        held = await holders(conn.raw)
        state = await server_state(peer)
        one_each = len(held) == 2 and len(set(held.values())) == 2
        joined = all(len(bot_sessions(state, c)) == 1 for c in CHANNELS)
        return held if one_each and joined else None

    held = await poll(spread, timeout=60, interval=0.1)
    holder = next(n for n in nodes if n.node_id == held["room1"])
    other = next(n for n in nodes if n is not holder)
    return holder, other, nodes


class Conn:
    """The test's own connection, and the DSN the nodes use."""

    def __init__(self, raw: Any, dsn: str) -> None:
        self.raw = raw
        self.dsn = dsn


async def handed_back_then_done(
    conn: Any, event_id: str, holder: NodeProcess, other: NodeProcess
) -> list[tuple[str, str | None]]:
    """Wait until `other`'s worker has handed the item back (the holder is paused), let the
    holder go on, wait until the item is completed; its history."""

    async def handed_back() -> bool:
        return any(of(other)(w) and o == "released" for w, o in await history(conn, event_id))

    try:
        await poll(handed_back, timeout=30, interval=0.05)
    finally:
        holder.send(signal.SIGCONT)

    async def completed() -> bool:
        row = await item_row(conn, event_id)
        return row is not None and row["status"] == "completed"

    await poll(completed, timeout=30, interval=0.1)
    return await history(conn, event_id)


async def test_a_failed_reply_and_command_claimed_by_a_node_without_the_channel_are_done_once(
    pg, tmp_path: Path, cytube_peer_factory
):
    """A ``cytube.say`` and a ``command.run`` for room1 (held by one node), claimed by the
    other node's worker: that worker hands each back without an attempt, the holder's
    worker carries it out, and the server sees the line once, in room1, and the command's
    answer once, in room1; nothing in room2, no attempt counted but the holder's."""
    peer = start_peer(cytube_peer_factory)
    nodes: list[NodeProcess] = []
    try:
        async with trio.open_nursery() as nursery, trio_asyncio.open_loop():
            raw = await trio_asyncio.aio_as_trio(asyncpg.connect)(pg.dsn)
            try:
                holder, other, nodes = await two_nodes_one_channel_each(
                    nursery, Conn(raw, pg.dsn), peer, tmp_path
                )
                before = await server_state(peer)
                said = {c: list(bot_lines(before, c)) for c in CHANNELS}

                # --- a failed reply (as room1's connection queues it), claimed by the other
                text = "a line said again, once"
                say = NewItem(
                    event_id="say-1",
                    event_type=SAY.name,
                    event_data=intent_data(SAY.intent(Say(channel="room1", msg=text))),
                    channel="room1",
                    operation_type="cytube_command",
                    max_retries=5,
                    retry_delay=0.2,
                    attempt_timeout=4.5,
                )
                holder.send(signal.SIGSTOP)
                await trio_asyncio.aio_as_trio(queue.enqueue)(raw, say)
                steps = await handed_back_then_done(raw, "say-1", holder, other)
                assert steps[-1][1] == "completed", steps
                assert of(holder)(steps[-1][0]), steps
                assert all(of(other)(w) and o == "released" for w, o in steps[:-1]), steps
                row = await item_row(raw, "say-1")
                assert row["retry_count"] == 0  # the hand-backs cost no attempt
                assert int(row["hand_overs"]) == len(steps) - 1

                async def line_seen() -> dict[str, Any] | None:
                    state = await server_state(peer)
                    return state if text in bot_lines(state, "room1") else None

                state = await poll(line_seen, timeout=10)
                assert bot_lines(state, "room1").count(text) == 1
                assert text not in bot_lines(state, "room2")

                # --- a failed command (as room1's router queues it), claimed by the other
                run = CommandRun(
                    channel="room1", command="about", username="dave", rank=0.0, args="",
                    issued_at=time.time(),
                )  # fmt: skip
                item = NewItem(
                    event_id="command-1",
                    event_type=COMMAND_RUN.name,
                    event_data=intent_data(COMMAND_RUN.intent(run)),
                    channel="room1",
                    operation_type="cytube_command",
                    max_retries=5,
                    retry_delay=0.2,
                    attempt_timeout=4.5,
                )
                holder.send(signal.SIGSTOP)
                await trio_asyncio.aio_as_trio(queue.enqueue)(raw, item)
                steps = await handed_back_then_done(raw, "command-1", holder, other)
                assert steps[-1][1] == "completed", steps
                assert of(holder)(steps[-1][0]), steps
                assert all(of(other)(w) and o == "released" for w, o in steps[:-1]), steps
                assert (await item_row(raw, "command-1"))["retry_count"] == 0

                async def answered() -> dict[str, Any] | None:
                    state = await server_state(peer)
                    return (
                        state if len(bot_lines(state, "room1")) > len(said["room1"]) + 1 else None
                    )

                state = await poll(answered, timeout=10)
                new = bot_lines(state, "room1")[len(said["room1"]) :]
                assert len(new) == 2, new  # the line, then the answer: once each
                assert new[0] == text, new
                assert bot_lines(state, "room2") == said["room2"]

                # /metrics: the other node handed both over; the holder was woken for them
                async def counted() -> bool:
                    handed = await counter(other, "daz_cluster_retry_handed_over_total")
                    woken = await counter(holder, "daz_cluster_retry_hand_over_wakes_total")
                    return handed >= 2 and woken >= 1

                await poll(counted, timeout=10)

                # --- a line for a channel no node serves: a dead letter saying so, at once
                nowhere = NewItem(
                    event_id="say-nowhere",
                    event_type=SAY.name,
                    event_data=intent_data(SAY.intent(Say(channel="room9", msg="lost"))),
                    channel="room9",
                    operation_type="cytube_command",
                    max_retries=5,
                    retry_delay=0.2,
                    attempt_timeout=4.5,
                )
                await trio_asyncio.aio_as_trio(queue.enqueue)(raw, nowhere)

                async def dead() -> Any:
                    row = await trio_asyncio.aio_as_trio(raw.fetchrow)(
                        "SELECT status, retry_count, last_error FROM daz_retry_queue"
                        " WHERE event_id = 'say-nowhere'"
                    )
                    return row if row["status"] == "dead_letter" else None

                row = await poll(dead, timeout=20)
                assert row["retry_count"] == 1  # its one attempt
                assert "no node serves channel 'room9'" in row["last_error"]
            finally:
                await trio_asyncio.aio_as_trio(raw.close)()
            await stop_all(nodes)
    finally:
        for node in nodes:
            node.kill_now()


async def test_plugins_on_two_nodes_answer_once_and_deliver_a_tell_and_a_reminder_once(
    pg, tmp_path: Path, cytube_peer_factory
):
    """The built-in plugins run on both nodes: ``!tell`` and ``!remind`` in room1 are
    answered once (by its holder); the tell is said once when its recipient joins; the
    reminder, due while its holder is paused, is claimed by the other node, handed back
    without an attempt, and said once by the holder. Nothing is said in room2."""
    peer = start_peer(cytube_peer_factory)
    nodes: list[NodeProcess] = []
    try:
        async with trio.open_nursery() as nursery, trio_asyncio.open_loop():
            raw = await trio_asyncio.aio_as_trio(asyncpg.connect)(pg.dsn)
            try:
                holder, other, nodes = await two_nodes_one_channel_each(
                    nursery, Conn(raw, pg.dsn), peer, tmp_path, plugins=True
                )
                room2_before = bot_lines(await server_state(peer), "room2")

                async def said(text: str) -> dict[str, Any] | None:
                    state = await server_state(peer)
                    return state if text in bot_lines(state, "room1") else None

                # --- a tell: answered once, said once when erin joins
                await trio.to_thread.run_sync(peer.say, "room1", "dave", "!tell erin hi there")
                await poll(
                    partial(said, "ok dave, I will tell erin when they are next here"), timeout=20
                )
                await trio.to_thread.run_sync(peer.add_user, "room1", "erin")
                told = "erin, dave asked me to tell you: hi there"
                await poll(partial(said, told), timeout=30)

                async def tell_done() -> Any:
                    row = await trio_asyncio.aio_as_trio(raw.fetchrow)(
                        "SELECT status, retry_count FROM daz_retry_queue"
                        " WHERE event_type = 'tell.deliver'"
                    )
                    return row if row is not None and row["status"] == "completed" else None

                row = await poll(tell_done, timeout=30)
                assert row["retry_count"] == 0

                # --- a reminder falling due while the holder is paused
                await trio.to_thread.run_sync(peer.say, "room1", "dave", "!remind 2s stretch")
                await poll(partial(said, "ok dave, I will remind you in 2s"), timeout=20)
                holder.send(signal.SIGSTOP)
                reminder_id = await trio_asyncio.aio_as_trio(raw.fetchval)(
                    "SELECT id FROM daz_reminders WHERE text = 'stretch'"
                )
                steps = await handed_back_then_done(raw, f"remind:{reminder_id}", holder, other)
                assert steps[-1][1] == "completed", steps
                assert of(holder)(steps[-1][0]), steps
                assert all(of(other)(w) and o == "released" for w, o in steps[:-1]), steps
                assert (await item_row(raw, f"remind:{reminder_id}"))["retry_count"] == 0
                state = await poll(partial(said, "dave: reminder: stretch"), timeout=10)

                lines = bot_lines(state, "room1")
                for text in (
                    "ok dave, I will tell erin when they are next here",
                    told,
                    "ok dave, I will remind you in 2s",
                    "dave: reminder: stretch",
                ):
                    assert lines.count(text) == 1, (text, lines)
                assert bot_lines(state, "room2") == room2_before
                delivered = await trio_asyncio.aio_as_trio(raw.fetchval)(
                    "SELECT (SELECT count(*) FROM daz_tells WHERE delivered_at IS NOT NULL)"
                    " + (SELECT count(*) FROM daz_reminders WHERE delivered_at IS NOT NULL)"
                )
                assert delivered == 2
            finally:
                await trio_asyncio.aio_as_trio(raw.close)()
            await stop_all(nodes)
    finally:
        for node in nodes:
            node.kill_now()


async def test_a_reply_the_server_refused_is_said_once_in_its_channel_whichever_node_claims_it(
    pg, tmp_path: Path, cytube_peer_factory
):
    """The server refuses the holder's answer to ``!about`` (spamFiltered): the failed
    reply is queued and retried by whichever node's worker claims it; a claim by the node
    without room1 is a hand-back ('released', no attempt); once the server accepts the
    bot's lines again the answer is said once, in room1, by the holder."""
    peer = start_peer(cytube_peer_factory)
    nodes: list[NodeProcess] = []
    try:
        async with trio.open_nursery() as nursery, trio_asyncio.open_loop():
            raw = await trio_asyncio.aio_as_trio(asyncpg.connect)(pg.dsn)
            try:
                holder, other, nodes = await two_nodes_one_channel_each(
                    nursery, Conn(raw, pg.dsn), peer, tmp_path
                )
                before = await server_state(peer)
                said = {c: bot_lines(before, c) for c in CHANNELS}
                await trio.to_thread.run_sync(peer.spam_filter, BOT)
                await trio.to_thread.run_sync(peer.say, "room1", "dave", "!about")

                async def queued() -> str | None:
                    event_id: str | None = await trio_asyncio.aio_as_trio(raw.fetchval)(
                        "SELECT event_id FROM daz_retry_queue"
                        " WHERE event_type = 'cytube.say' AND channel_name = 'room1'"
                    )
                    return event_id

                event_id = await poll(queued, timeout=20, interval=0.05)
                await trio.to_thread.run_sync(partial(peer.spam_filter, BOT, on=False))

                async def completed() -> bool:
                    row = await item_row(raw, event_id)
                    return row["status"] == "completed"

                await poll(completed, timeout=30, interval=0.1)
                steps = await history(raw, event_id)
                row = await item_row(raw, event_id)
                assert steps[-1][1] == "completed", steps
                assert of(holder)(steps[-1][0]), steps
                for worker, outcome in steps[:-1]:  # the other's claims cost no attempt
                    assert outcome == ("released" if of(other)(worker) else "failed"), steps
                assert row["retry_count"] == sum(o == "failed" for _, o in steps)

                async def answered() -> dict[str, Any] | None:
                    state = await server_state(peer)
                    new = bot_lines(state, "room1")[len(said["room1"]) :]
                    return state if new else None

                state = await poll(answered, timeout=10)
                assert len(bot_lines(state, "room1")) == len(said["room1"]) + 1
                assert bot_lines(state, "room2") == said["room2"]
                refused = [
                    c
                    for c in state["chat_received"]
                    if c.get("username") == BOT and c.get("outcome") == "spam_filtered"
                ]
                assert refused, "the server did not refuse the first answer"
                assert {c["channel"] for c in refused} == {"room1"}
            finally:
                await trio_asyncio.aio_as_trio(raw.close)()
            await stop_all(nodes)
    finally:
        for node in nodes:
            node.kill_now()


async def test_a_failed_reply_for_a_channel_whose_node_died_is_said_once_by_the_next_holder(
    pg, tmp_path: Path, cytube_peer_factory
):
    """room1's node is killed with a failed reply for room1 in the queue: the other node's
    worker hands it back while the dead node's lease runs out and while no node holds the
    channel (no attempt counted), takes room1 over, and says the line once, there."""
    peer = start_peer(cytube_peer_factory)
    nodes: list[NodeProcess] = []
    try:
        async with trio.open_nursery() as nursery, trio_asyncio.open_loop():
            raw = await trio_asyncio.aio_as_trio(asyncpg.connect)(pg.dsn)
            try:
                holder, other, nodes = await two_nodes_one_channel_each(
                    nursery, Conn(raw, pg.dsn), peer, tmp_path, timings=(4.0, 0.5, 1.0)
                )
                before = await server_state(peer)
                said = {c: bot_lines(before, c) for c in CHANNELS}
                holder.send(signal.SIGKILL)
                await holder.wait()
                text = "said by the node that took room1 over"
                say = NewItem(
                    event_id="say-orphan",
                    event_type=SAY.name,
                    event_data=intent_data(SAY.intent(Say(channel="room1", msg=text))),
                    channel="room1",
                    operation_type="cytube_command",
                    max_retries=5,
                    retry_delay=0.2,
                    attempt_timeout=4.5,
                )
                await trio_asyncio.aio_as_trio(queue.enqueue)(raw, say)

                async def completed() -> bool:
                    row = await item_row(raw, "say-orphan")
                    return row["status"] == "completed"

                await poll(completed, timeout=40, interval=0.1)
                steps = await history(raw, "say-orphan")
                assert all(of(other)(w) for w, _ in steps), steps
                assert [o for _, o in steps] == ["released"] * (len(steps) - 1) + ["completed"]
                assert len(steps) >= 2, steps  # handed back at least once while room1 moved
                row = await item_row(raw, "say-orphan")
                assert row["retry_count"] == 0
                assert int(row["hand_overs"]) == len(steps) - 1

                async def line_seen() -> dict[str, Any] | None:
                    state = await server_state(peer)
                    return state if text in bot_lines(state, "room1") else None

                state = await poll(line_seen, timeout=10)
                assert bot_lines(state, "room1").count(text) == 1
                assert bot_lines(state, "room2") == said["room2"]
                assert (await holders(raw))["room1"] == other.node_id
            finally:
                await trio_asyncio.aio_as_trio(raw.close)()
            other.send(signal.SIGTERM)
            assert await other.wait() == 0, other.log()
    finally:
        for node in nodes:
            node.kill_now()
