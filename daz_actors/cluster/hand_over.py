"""Retry items handed to the node that holds their channel (schema 0016).

The retry queue is shared by every node, and its claim knows nothing of channels: any
node's worker may claim a failed reply (``cytube.say``), a command to run again
(``command.run``) or a plugin's line to say once, that only the holder of the channel's
lease can carry out. `ClusterElsewhere` is what the CyTube layer's handlers (and the
plugins' deliveries) call then: one statement, ``daz_retry_hand_over``, releases the item
without counting an attempt, makes it due again after a short delay (so the worker that
handed it back does not take it again at once), counts the hand-over, and notifies
``daz_retry_handed_over``. Each node's lease keeper listens there and, for a channel it
holds, wakes its own retry workers when the item is due (`HandOverWaker`): the holder's
workers are woken for it, the others only poll, so the holder takes it next.

Bounds: an item is handed over at most `MAX_HAND_OVERS` times; past that each attempt
fails as usual (counted, with the item's backoff), so an item no holder ever takes ends
as a dead letter. An item for a channel no node holds or lists in its config is a dead
letter at once ("no node serves channel ...").
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from daz_actors.cluster.node import ClusterNode
from daz_actors.cytube.elsewhere import HandOver, HandOverResult
from daz_actors.retry.handlers import AttemptContext
from daz_actors.retry.worker import Wake
from daz_actors.runtime.registry import Registry

__all__ = [
    "HANDED_OVER_CHANNEL",
    "HELD_DELAY",
    "MAX_HAND_OVERS",
    "ClusterElsewhere",
    "HandOverWaker",
    "hand_over",
    "wake_retry_workers",
]

log = logging.getLogger("daz_actors.cluster")

HANDED_OVER_CHANNEL = "daz_retry_handed_over"  # NOTIFY of schema 0016's function
HELD_DELAY = 0.5  # seconds: an item for a channel another node holds is due again after
MAX_HAND_OVERS = 20  # hand-overs of one item before its attempts count again
WORKER_PREFIX = "retry-worker-"  # the retry workers' registered names (retry/kind.py)


def _seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


async def hand_over(
    conn: Any,
    *,
    item_id: int,
    worker_id: str,
    lock_token: Any,
    channel: str,
    node_id: str,
    live: float,
    delay_held: float,
    delay_unheld: float,
    max_hand_overs: int,
    only_elsewhere: bool,
) -> HandOverResult:
    """Run ``daz_retry_hand_over`` (asyncio side: one crossing)."""
    row = await conn.fetchrow(
        "SELECT verdict, holder, hand_overs"
        " FROM daz_retry_hand_over($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        item_id,
        worker_id,
        lock_token,
        channel,
        node_id,
        _seconds(live),
        _seconds(delay_held),
        _seconds(delay_unheld),
        max_hand_overs,
        only_elsewhere,
    )
    return HandOverResult(
        verdict=HandOver(row["verdict"]), holder=row["holder"], hand_overs=row["hand_overs"]
    )


class ClusterElsewhere:
    """`Elsewhere` (cytube/elsewhere.py) of a cluster node."""

    def __init__(self, node: ClusterNode, *, max_hand_overs: int = MAX_HAND_OVERS) -> None:
        self.node = node
        self.max_hand_overs = max_hand_overs

    async def hand_over(
        self, channel: str, ctx: AttemptContext, *, only_elsewhere: bool = False
    ) -> HandOverResult:
        settings = self.node.settings
        lease = ctx.lease
        result: HandOverResult = await ctx.db.run(
            partial(
                hand_over,
                item_id=lease.item_id,
                worker_id=lease.worker_id,
                lock_token=lease.lock_token,
                channel=channel,
                node_id=self.node.node_id,
                live=settings.ttl,
                delay_held=HELD_DELAY,
                # no node holds it: a failover or handover is under way, which takes about
                # a renewal interval (plus a join) once the old lease is out
                delay_unheld=max(HELD_DELAY, settings.renew_every),
                max_hand_overs=self.max_hand_overs,
                only_elsewhere=only_elsewhere,
            ),
            name="cluster.hand_over",
        )
        if result.verdict is HandOver.HANDED_OVER:
            self.node.retry_handed_over += 1
        return result


def wake_retry_workers(registry: Registry) -> int:
    """Wake this process's retry workers (a full mailbox already holds a wake); how many
    were woken."""
    woken = 0
    for name in registry.names():
        if name.startswith(WORKER_PREFIX):
            ref = registry.get(name)
            if ref is not None and ref.try_send(Wake()):
                woken += 1
    return woken


class HandOverWaker:
    """Wakes this node's retry workers when an item handed over for a channel it holds is
    due. Fed by the lease keeper's LISTEN (`notified`), run by it (`run`)."""

    def __init__(self, node: ClusterNode, wake: Callable[[], object]) -> None:
        self.node = node
        self.wake = wake
        self.received = 0  # hand-over notifications received
        self._due: list[tuple[float, str]] = []  # (trio time, channel)
        self._changed = trio.Event()

    def notified(self, payload: str) -> None:
        """A NOTIFY daz_retry_handed_over arrived (payload: channel and delay, JSON)."""
        try:
            data = json.loads(payload)
            channel = str(data["channel"])
            delay = float(data["delay"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("cluster: bad hand-over notification %r (%s)", payload[:200], exc)
            return
        self.received += 1
        fence = self.node.fences.get(channel)
        if fence is None or not fence.is_open():
            return  # not ours: the holder's workers take it
        # due at most `delay` after the commit that sent this (now(): the transaction start)
        self._due.append((trio.current_time() + delay + 0.01, channel))
        self._changed.set()

    async def run(self) -> None:
        """Wake the workers at each due time (forever; cancelled with the keeper)."""
        while True:
            self._changed = trio.Event()
            if not self._due:
                await self._changed.wait()
                continue
            at = min(t for t, _ in self._due)
            with trio.move_on_at(at):
                await self._changed.wait()
            now = trio.current_time()
            if any(t <= now for t, _ in self._due):
                self._due = [(t, c) for t, c in self._due if t > now]
                self.node.retry_hand_over_wakes += 1
                self.wake()
