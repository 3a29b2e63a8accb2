"""Several `daz-actors run` processes on one PostgreSQL and one local CyTube server.

What the chat server itself sees is the judge: who is in each channel, every session
entering and leaving (``presence``), and any moment two sessions of the bot's account
were in one channel (``overlaps``).
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
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

from daz_actors.testing import poll

cytube_peer_factory = fixtures.cytube_peer_factory

CHANNELS = [f"room{n}" for n in range(1, 7)]
TTL, RENEW, MARGIN = 3.0, 0.5, 1.0


async def nodes_json(config: Path, dsn: str) -> dict[str, Any]:
    """What `daz-actors nodes --json` prints for the cluster of `config` on `dsn`."""
    result = await trio.run_process(
        [sys.executable, "-m", "daz_actors.app.cli", "nodes", "--json", "--config", str(config),
         "--database-url", dsn],
        capture_stdout=True,
        capture_stderr=True,
    )  # fmt: skip
    report: dict[str, Any] = json.loads(result.stdout)
    return report


async def scrape(node: NodeProcess) -> str:
    """The node's /metrics."""
    await node.wait_for(r"http://127\.0\.0\.1:\d+")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.http_port}") as client:
        response = await client.get("/metrics")
    response.raise_for_status()
    return response.text


def start_peer(factory: Callable[..., Any]) -> Any:
    # every node connects from 127.0.0.1: no per-IP connection budget in these tests
    peer = factory(conn_burst=1000, ping_interval=1, ping_timeout=1.0)
    peer.add_account(BOT, BOT_PASSWORD)
    return peer


async def server_state(peer: Any) -> dict[str, Any]:
    state: dict[str, Any] = await trio.to_thread.run_sync(peer.state)
    return state


async def each_joined_once(peer: Any, channels: list[str]) -> dict[str, Any] | None:
    state = await server_state(peer)
    if all(len(bot_sessions(state, c)) == 1 for c in channels):
        return state
    return None


async def leases(conn: Any) -> dict[str, tuple[str | None, int, bool]]:
    rows = await trio_asyncio.aio_as_trio(conn.fetch)(
        "SELECT name, holder, token, expires_at > now() AS valid FROM daz_leases"
        " WHERE kind = 'channel'"
    )
    return {r["name"]: (r["holder"], r["token"], r["valid"]) for r in rows}


def by_holder(held: dict[str, tuple[str | None, int, bool]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for channel, (holder, _token, valid) in held.items():
        if holder is not None and valid:
            out.setdefault(holder, []).append(channel)
    return out


def joins_after(state: dict[str, Any], channel: str, after_ms: float) -> list[dict[str, Any]]:
    return [
        p
        for p in state["presence"]
        if p["channel"] == channel and p["event"] == "join" and p["time"] >= after_ms
    ]


def leave_of(state: dict[str, Any], sid: str) -> dict[str, Any]:
    return next(p for p in state["presence"] if p["sid"] == sid and p["event"] == "leave")


async def test_three_nodes_share_six_channels_fail_over_hand_over_and_rebalance(
    pg, tmp_path: Path, cytube_peer_factory
):
    """3 nodes, 6 channels: each joined exactly once (2 per node); SIGKILL: the dead
    node's channels are rejoined within the TTL plus a few seconds, and lines said in the
    gap are stored once from the server's history replay; SIGTERM: handover in under 2 s;
    a 4th node: it gets its share, no channel out for longer than one rejoin; and never two
    sessions of the bot in one channel, as the server saw it."""
    peer = start_peer(cytube_peer_factory)
    config = node_config(
        tmp_path / "node.toml",
        server=peer.url,
        channels=CHANNELS,
        ttl=TTL,
        renew=RENEW,
        margin=MARGIN,
        settle=1.0,
    )
    nodes = [NodeProcess(f"node{n}", config, pg.dsn, tmp_path / f"node{n}") for n in range(1, 5)]
    try:
        async with trio.open_nursery() as nursery, trio_asyncio.open_loop():
            conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(pg.dsn)
            try:
                for node in nodes[:3]:
                    await node.start(nursery)
                for node in nodes[:3]:
                    await node.wait_for(r"cluster node \S+", timeout=60)

                # --- every channel joined exactly once, two per node
                async def spread() -> dict[str, list[str]] | None:
                    held = by_holder(await leases(conn))
                    counts = sorted(len(v) for v in held.values())
                    if counts == [2, 2, 2] and await each_joined_once(peer, CHANNELS):
                        return held
                    return None

                held = await poll(spread, timeout=60, interval=0.1)
                assert set(held) == {n.node_id for n in nodes[:3]}

                # --- `daz-actors nodes --json` and /metrics say the same
                report = await nodes_json(config, pg.dsn)
                assert {n["node_id"]: n["channels"] for n in report["nodes"]} == {
                    k: sorted(v) for k, v in held.items()
                }
                assert {n["state"] for n in report["nodes"]} == {"live"}
                assert report["unheld_channels"] == []
                cleaner = [n for n in report["nodes"] if n["singletons"] == ["retry.cleanup"]]
                assert len(cleaner) == 1, report  # the queue cleanup runs on one node
                expected = [
                    f'daz_cluster_node_channels{{node="{node_id}"}} {len(channels)}.0'
                    for node_id, channels in held.items()
                ]

                async def metrics_agree() -> bool:  # as of that node's last heartbeat
                    metrics = await scrape(nodes[1])
                    return all(line in metrics for line in expected)

                await poll(metrics_agree, timeout=10, interval=0.2)

                # --- SIGKILL one node (the one running the cleanup); lines said meanwhile
                victim = next(n for n in nodes[:3] if n.node_id == cleaner[0]["node_id"])
                lost = held[victim.node_id]
                tokens_before = await leases(conn)
                victim.send(signal.SIGKILL)
                await victim.wait()
                killed_at = trio.current_time()
                gap_lines = {c: [f"{c} gap line {i}" for i in range(3)] for c in lost}
                for channel, lines in gap_lines.items():
                    for line in lines:
                        await trio.to_thread.run_sync(peer.say, channel, "carol", line)

                state = await poll(lambda: each_joined_once(peer, CHANNELS), timeout=30)
                rejoined_after = trio.current_time() - killed_at
                print(
                    f"SIGKILL: channels rejoined {rejoined_after:.2f} s after the kill (ttl {TTL})"
                )
                assert rejoined_after < TTL + 5, rejoined_after
                tokens_after = await leases(conn)
                for channel in lost:
                    assert tokens_after[channel][1] > tokens_before[channel][1]
                    assert tokens_after[channel][0] != victim.node_id

                async def stored_once() -> bool:
                    for lines in gap_lines.values():
                        for line in lines:
                            count = await trio_asyncio.aio_as_trio(conn.fetchval)(
                                "SELECT count(*) FROM daz_chat_messages WHERE message = $1", line
                            )
                            if count != 1:
                                return False
                    return True

                assert await poll(stored_once, timeout=20)
                history = await trio_asyncio.aio_as_trio(conn.fetchval)(
                    "SELECT bool_and(is_history) FROM daz_chat_messages"
                    " WHERE message LIKE '%gap line%'"
                )
                assert history is True
                report = await nodes_json(config, pg.dsn)
                cleaner = [n for n in report["nodes"] if n["singletons"] == ["retry.cleanup"]]
                assert len(cleaner) == 1, report
                assert cleaner[0]["node_id"] != victim.node_id  # taken over
                assert cleaner[0]["state"] == "live"

                # --- SIGTERM one node: its channels are taken over within 2 s
                survivors = [n for n in nodes[:3] if n is not victim]
                leaving = next(n for n in survivors if n.node_id != cleaner[0]["node_id"])
                staying = next(n for n in survivors if n is not leaving)
                held = by_holder(await leases(conn))
                handed = held[leaving.node_id]
                before = await server_state(peer)
                old_sids = {c: bot_sessions(before, c)[0] for c in handed}
                leaving.send(signal.SIGTERM)
                assert await leaving.wait() == 0, leaving.log()

                async def taken_over() -> dict[str, Any] | None:
                    state = await each_joined_once(peer, CHANNELS)
                    if state and all(bot_sessions(state, c)[0] != old_sids[c] for c in handed):
                        return state
                    return None

                state = await poll(taken_over, timeout=30)
                for channel in handed:
                    left = leave_of(state, old_sids[channel])
                    join = joins_after(state, channel, left["time"])[0]
                    took = (join["time"] - left["time"]) / 1000
                    print(f"SIGTERM: {channel} handed over in {took} s")
                    assert (join["time"] - left["time"]) / 1000 < 2.0, (
                        left,
                        join,
                        leaving.log(),
                        nodes[2].log(),
                    )

                # --- a new node: it takes its share (half) from the one node left
                newcomer = nodes[3]
                await newcomer.start(nursery)
                await newcomer.wait_for(r"cluster node \S+", timeout=60)

                async def rebalanced() -> dict[str, list[str]] | None:
                    held = by_holder(await leases(conn))
                    if len(held.get(newcomer.node_id or "", [])) == 3 and await each_joined_once(
                        peer, CHANNELS
                    ):
                        return held
                    return None

                held = await poll(rebalanced, timeout=60)
                state = await server_state(peer)
                for channel in held[newcomer.node_id or ""]:
                    # the previous session left, then the newcomer's joined: one rejoin apart
                    joins = [p for p in state["presence"] if p["channel"] == channel]
                    last_join = [p for p in joins if p["event"] == "join"][-1]
                    leaves = [
                        p for p in joins if p["event"] == "leave" and p["time"] <= last_join["time"]
                    ]
                    gap = (last_join["time"] - leaves[-1]["time"]) / 1000
                    print(f"rebalance: {channel} moved with {gap} s out")
                    assert gap < RENEW + 2.0, (channel, gap)

                assert state["overlaps"] == [], state["overlaps"]
            finally:
                await trio_asyncio.aio_as_trio(conn.close)()
            await stop_all([staying, newcomer])
    finally:
        for node in nodes:
            node.kill_now()


def bot_lines_from(state: dict[str, Any], channel: str, sids: set[str] | None = None) -> list[str]:
    return [
        c["sid"]
        for c in state["chat_received"]
        if c["channel"] == channel
        and (c.get("username") or "").lower() == BOT
        and (sids is None or c["sid"] in sids)
    ]


async def test_a_node_paused_past_its_ttl_says_nothing_on_waking_and_rejoins_later(
    pg, tmp_path: Path, cytube_peer_factory
):
    """SIGSTOP one of two nodes past its TTL: the other takes its channels and answers
    there; on SIGCONT the paused node finds its leases gone and says nothing, although its
    old sessions were still open at the server with commands waiting in them (the server
    here neither pings them out nor kicks them as duplicates); later it gets its share
    back. Every command is answered exactly once, as the server saw it."""
    # the stale sessions stay open at the server: the worst case for the paused node
    peer = cytube_peer_factory(
        conn_burst=1000, ping_interval=1, ping_timeout=60.0, duplicate_kick=False
    )
    peer.add_account(BOT, BOT_PASSWORD)
    channels = CHANNELS[:4]
    config = node_config(
        tmp_path / "node.toml",
        server=peer.url,
        channels=channels,
        ttl=TTL,
        renew=RENEW,
        margin=MARGIN,
        settle=1.0,
    )
    nodes = [NodeProcess(f"node{n}", config, pg.dsn, tmp_path / f"node{n}") for n in (1, 2)]
    try:
        async with trio.open_nursery() as nursery, trio_asyncio.open_loop():
            conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(pg.dsn)
            try:
                for node in nodes:
                    await node.start(nursery)
                for node in nodes:
                    await node.wait_for(r"cluster node \S+", timeout=60)

                async def spread() -> dict[str, list[str]] | None:
                    held = by_holder(await leases(conn))
                    counts = sorted(len(v) for v in held.values())
                    if counts == [2, 2] and await each_joined_once(peer, channels):
                        return held
                    return None

                held = await poll(spread, timeout=60, interval=0.1)
                paused, _other = nodes
                theirs = held[paused.node_id or ""]
                state = await server_state(peer)
                stale = {s for c in theirs for s in bot_sessions(state, c)}
                said_before = len([s for c in theirs for s in bot_lines_from(state, c, stale)])

                paused.send(signal.SIGSTOP)
                for channel in theirs:  # waits, unread, in the paused node's sockets
                    await trio.to_thread.run_sync(peer.say, channel, "dave", "!about")

                async def taken() -> dict[str, Any] | None:
                    state = await server_state(peer)
                    new = {c: set(bot_sessions(state, c)) - stale for c in theirs}
                    return state if all(new.values()) else None

                state = await poll(taken, timeout=30)
                for channel in theirs:
                    await trio.to_thread.run_sync(peer.say, channel, "dave", "!about")

                async def answered_once() -> dict[str, Any] | None:
                    state = await server_state(peer)
                    replies = [bot_lines_from(state, c) for c in theirs]
                    return state if all(len(r) >= 1 for r in replies) else None

                await poll(answered_once, timeout=30)
                paused.send(signal.SIGCONT)
                await paused.wait_for(r"leaving room\d: not renewed in time", timeout=30)

                async def stale_gone() -> dict[str, Any] | None:
                    state = await server_state(peer)
                    left = {p["sid"] for p in state["presence"] if p["event"] == "leave"}
                    return state if stale <= left else None

                state = await poll(stale_gone, timeout=30)
                said_after = len([s for c in theirs for s in bot_lines_from(state, c, stale)])
                assert said_after == said_before, "the paused node spoke after waking"
                for channel in theirs:
                    # the first command came before the other node joined: history, not
                    # answered; the second: answered once, by the other node
                    replies = [s for s in bot_lines_from(state, channel) if s not in stale]
                    assert len(replies) == 1, (channel, replies)
                for overlap in state["overlaps"]:  # only while the paused node could not act
                    assert set(overlap["others"]) <= stale, overlap

                # --- awake again, it gets its share back; each command answered once
                async def shared_again() -> bool:
                    held = by_holder(await leases(conn))
                    return sorted(len(v) for v in held.values()) == [2, 2] and bool(
                        await each_joined_once(peer, channels)
                    )

                await poll(shared_again, timeout=60, interval=0.1)
                before = await server_state(peer)
                counts = {c: len(bot_lines_from(before, c)) for c in channels}
                for channel in channels:
                    await trio.to_thread.run_sync(peer.say, channel, "erin", "!about")

                async def each_answered() -> dict[str, Any] | None:
                    state = await server_state(peer)
                    done = all(len(bot_lines_from(state, c)) > counts[c] for c in channels)
                    return state if done else None

                state = await poll(each_answered, timeout=30)
                assert {
                    c: len(bot_lines_from(state, c)) - counts[c] for c in channels
                } == dict.fromkeys(channels, 1)
            finally:
                await trio_asyncio.aio_as_trio(conn.close)()
            await stop_all(nodes)
    finally:
        for node in nodes:
            node.kill_now()


async def test_a_node_that_cannot_renew_leaves_before_its_leases_expire_and_rejoins(
    pg, tmp_path: Path, cytube_peer_factory
):
    """The lease table is locked (the node's renewals hang, as with an unreachable
    database): the node leaves every channel before the leases it last renewed expire, as
    the server's clock and the database's say; unlocked, it claims them again under new
    tokens and rejoins."""
    peer = start_peer(cytube_peer_factory)
    channels = CHANNELS[:2]
    config = node_config(
        tmp_path / "node.toml",
        server=peer.url,
        channels=channels,
        ttl=TTL,
        renew=RENEW,
        margin=MARGIN,
        settle=1.0,
    )
    node = NodeProcess("node1", config, pg.dsn, tmp_path / "node1")
    try:
        async with trio.open_nursery() as nursery, trio_asyncio.open_loop():
            conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(pg.dsn)
            try:
                await node.start(nursery)
                state = await poll(lambda: each_joined_once(peer, channels), timeout=60)
                sids = {c: bot_sessions(state, c)[0] for c in channels}
                before = await leases(conn)
                locked = conn.transaction()
                await trio_asyncio.aio_as_trio(locked.start)()
                await trio_asyncio.aio_as_trio(conn.execute)(
                    "LOCK TABLE daz_leases IN ACCESS EXCLUSIVE MODE"
                )
                rows = await trio_asyncio.aio_as_trio(conn.fetch)(
                    "SELECT name, (extract(epoch FROM expires_at) * 1000)::bigint AS ms"
                    " FROM daz_leases WHERE kind = 'channel'"
                )
                expires_ms = {r["name"]: r["ms"] for r in rows}

                async def left() -> dict[str, Any] | None:
                    state = await server_state(peer)
                    gone = {p["sid"] for p in state["presence"] if p["event"] == "leave"}
                    return state if set(sids.values()) <= gone else None

                state = await poll(left, timeout=30)
                for channel, sid in sids.items():
                    leave_ms = leave_of(state, sid)["time"]
                    print(f"unrenewable: left {channel} {expires_ms[channel] - leave_ms} ms early")
                    assert leave_ms < expires_ms[channel], (channel, leave_ms, expires_ms)
                await trio_asyncio.aio_as_trio(locked.rollback)()

                async def back() -> dict[str, Any] | None:
                    state = await each_joined_once(peer, channels)
                    if state and all(bot_sessions(state, c)[0] != sids[c] for c in channels):
                        return state
                    return None

                await poll(back, timeout=30)
                after = await leases(conn)
                for channel in channels:
                    assert after[channel][1] > before[channel][1]
            finally:
                await trio_asyncio.aio_as_trio(conn.close)()
            node.send(signal.SIGTERM)
            assert await node.wait() == 0, node.log()
    finally:
        node.kill_now()
