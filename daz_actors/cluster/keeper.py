"""The lease keeper: heartbeats, renews, claims and gives back leases; starts and stops rooms.

Every `renew_every` seconds, in one transaction on its own connections (cluster/db.py:
not the SQL gateway's pool, where renewals would queue behind the chat log), the keeper
heartbeats this node, renews every lease it holds and reads all nodes and leases. A lease
renewed moves its fence's deadline to (time the renewal was sent) + ttl - leave_margin;
a lease not renewed closes its fence at once. Then placement (cluster/placement.py) says
which channels this node should hold: it claims the free ones placed on it and gives back
those placed elsewhere. Each held channel has a task (`_room_life`) that starts the room
with its fence, waits for the fence to close (lost, expired, given back), stops the room,
and only then releases the lease in the database: the room has left the channel before
any other node can claim it.

If the database cannot be reached, nothing is renewed, and each fence closes on its own
at its deadline (a timer on the monotonic clock, so also when the process was paused):
the rooms leave before their leases can have expired anywhere else. Once the database is
back, the node claims its channels again like any other node.

An orderly stop (SIGTERM) sets `ClusterNode.stopping` (the runner does, as the shutdown
begins): the keeper stops ticking, closes every fence at once, so every room leaves its
channel, and gives each lease back as soon as that room's websocket is closed (the
connection tells the fence, `vacated`); then it marks the node stopped. The other nodes
take the channels at their next tick. When the keeper's own turn to stop comes (after
the rooms: it is the rooms supervisor's first child) it does the same for anything left.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol

import asyncpg
import trio
import trio_asyncio

from daz_actors.cluster import sql
from daz_actors.cluster.db import DB_FAILED, ClusterDb
from daz_actors.cluster.hand_over import HANDED_OVER_CHANNEL, HandOverWaker
from daz_actors.cluster.node import SINGLETON_JOBS, ClusterNode, LeaseFence
from daz_actors.cluster.placement import NodeView, place
from daz_actors.runtime.actor import ActorContext
from daz_actors.runtime.backoff import BackoffPolicy, Jitter
from daz_actors.runtime.log_summary import RepeatedWarnings
from daz_actors.storage.embedded_pg import redact_dsn

__all__ = ["KEEPER_NAME", "LeaseKeeper", "RoomControl"]

log = logging.getLogger("daz_actors.cluster")

KEEPER_NAME = "lease-keeper"
STOP_TIMEOUT = 5.0  # seconds an orderly stop may spend giving the leases back
VACATE_TIMEOUT = 5.0  # seconds a closed room may take to close its websocket
NOTIFY_CHANNEL = "daz_leases"  # a lease was given back somewhere (schema 0012's trigger)
LISTEN_BACKOFF = BackoffPolicy(initial=0.2, multiplier=2.0, max_delay=30.0, jitter=Jitter.FULL)


class RoomControl(Protocol):
    """How the keeper starts and stops this node's rooms."""

    async def start_room(self, channel: str, fence: LeaseFence) -> None: ...

    async def stop_room(self, channel: str) -> None: ...

    def running_rooms(self) -> Sequence[str]: ...


class LeaseKeeper:
    """A `Startable`: this node's heartbeat, leases and rooms."""

    def __init__(
        self,
        node: ClusterNode,
        rooms: RoomControl,
        *,
        dsn: str,
        waker: HandOverWaker | None = None,
    ) -> None:
        self.node = node
        self.rooms = rooms
        self.dsn = dsn  # the keeper's own connections: renewals, claims, LISTEN
        # wakes this node's retry workers for items handed over to it (schema 0016)
        self.waker = waker
        self.notifications = 0  # leases-given-back notifications received
        self._busy: set[str] = set()  # channels whose room is starting, running or stopping
        self._registered = False  # a first heartbeat went through (this incarnation)
        self._wake = trio.Event()
        self._warnings = RepeatedWarnings(log)

    async def __call__(
        self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        ctx.idle = False  # an orderly stop must give the leases back, not be cancelled
        self._registered = False
        db = ClusterDb(self.dsn)
        for fence in [*self.node.fences.values(), *self.node.singletons.values()]:
            fence.close("the lease keeper restarted")  # its rooms must go
        self.node.fences.clear()
        self.node.singletons.clear()
        stopped = False
        async with trio_asyncio.open_loop():
            try:
                async with trio.open_nursery() as nursery:
                    for channel in self.rooms.running_rooms():  # left by an earlier incarnation
                        self._busy.add(channel)
                        nursery.start_soon(self._stop_stale, channel)
                    task_status.started()
                    nursery.start_soon(self._ticks, db, nursery)
                    nursery.start_soon(self._on_stopping, db)
                    nursery.start_soon(self._listen, self.dsn)
                    if self.waker is not None:
                        nursery.start_soon(self.waker.run)
                    await ctx.stop_requested.wait()
                    stopped = True
                    self.node.stopping.set()
                    nursery.cancel_scope.cancel()
            finally:
                for fence in [*self.node.fences.values(), *self.node.singletons.values()]:
                    fence.close("the lease keeper stopped")
                if stopped:  # in order: the rooms have stopped before the keeper
                    await self._give_back_all(db)
                with trio.CancelScope(shield=True):
                    await db.close()

    async def _give_back_all(self, db: ClusterDb) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT) as scope:
            try:
                count = await db.transaction(
                    partial(sql.stop_node, node_id=self.node.node_id),
                    name="cluster.stop",
                    timeout=STOP_TIMEOUT,
                )
            except DB_FAILED as exc:
                log.warning("cluster: could not give the leases back (%s): they expire", exc)
            else:
                self.node.releases += count
                log.info("cluster: node %s stopped, %d leases given back", self.node.node_id, count)
        if scope.cancelled_caught:
            log.warning("cluster: giving the leases back took too long: they expire")

    async def _on_stopping(self, db: ClusterDb) -> None:
        """The process is stopping: leave every channel now, give every lease back."""
        await self.node.stopping.wait()
        self._wake.set()
        # first out of placement, so the others claim each channel as it is given back
        with trio.move_on_after(STOP_TIMEOUT):
            try:
                await db.transaction(
                    partial(sql.mark_stopping, node_id=self.node.node_id),
                    name="cluster.stopping",
                    timeout=STOP_TIMEOUT,
                )
            except DB_FAILED as exc:
                log.warning("cluster: could not mark this node stopping (%s)", exc)
        fences = list(self.node.fences.values())
        for fence in [*fences, *self.node.singletons.values()]:
            fence.close("this process is stopping")
        with trio.move_on_after(VACATE_TIMEOUT):
            for fence in fences:
                await fence.wait_vacated()
        await self._give_back_all(db)

    async def _listen(self, dsn: str) -> None:
        """Tick at once when a lease is given back anywhere (LISTEN daz_leases): a
        handover then takes one claim, not up to a renewal interval. On the same
        connection, LISTEN daz_retry_handed_over feeds the `waker`."""
        attempt = 0
        while True:
            lost = trio.Event()
            conn: Any = None
            try:
                conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(dsn, timeout=10)
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await trio_asyncio.aio_as_trio(conn.add_listener)(NOTIFY_CHANNEL, self._notified)
                if self.waker is not None:
                    await trio_asyncio.aio_as_trio(conn.add_listener)(
                        HANDED_OVER_CHANNEL, self._handed_over
                    )
                attempt = 0
                await lost.wait()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
                delay = LISTEN_BACKOFF.delay(attempt)
                attempt += 1
                self._warnings.warning(
                    "listen", "cluster: cannot LISTEN on %s (%s); renewals only meanwhile",
                    redact_dsn(dsn), e,
                )  # fmt: skip
                await trio.sleep(delay)
            finally:
                if conn is not None and not conn.is_closed():
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await trio_asyncio.aio_as_trio(conn.close)()

    def _notified(self, _conn: Any, _pid: int, _channel: str, _payload: str) -> None:
        self.notifications += 1
        self._wake.set()

    def _handed_over(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if self.waker is not None:
            self.waker.notified(payload)

    async def _stop_stale(self, channel: str) -> None:
        try:
            await self.rooms.stop_room(channel)
        finally:
            self._busy.discard(channel)

    # ------------------------------------------------------------------ ticks

    async def _ticks(self, db: ClusterDb, nursery: trio.Nursery) -> None:
        every = self.node.settings.renew_every
        while not self.node.stopping.is_set():
            started = trio.current_time()
            await self._tick(db, nursery, started)
            with trio.move_on_at(started + every):
                await self._wake.wait()
            self._wake = trio.Event()

    def _deadline(self, sent_at: float) -> float:
        settings = self.node.settings
        return sent_at + settings.ttl - settings.margin

    async def _tick(self, db: ClusterDb, nursery: trio.Nursery, sent_at: float) -> None:
        node, settings = self.node, self.node.settings
        # renewed: what this node uses (open fences), and the channels whose room is still
        # leaving (its lease keeps others out until its websocket is closed)
        renew = sorted(
            {(sql.CHANNEL, c) for c in node.held_channels()}
            | {(sql.CHANNEL, c) for c in self._busy}
            | {(sql.SINGLETON, j) for j, f in node.singletons.items() if f.is_open()}
        )
        try:
            view = await db.transaction(
                partial(sql.heartbeat_and_renew, node=node.info(), ttl=settings.ttl, renew=renew),
                name="cluster.tick",
                timeout=settings.renew_every,
            )
        except DB_FAILED as exc:
            node.ticks_failed += 1
            self._warnings.warning(
                "tick", "cluster: cannot reach the database to renew leases (%s); holding %s",
                exc, node.held_channels() or "none",
            )  # fmt: skip
            return
        node.view, node.view_at = view, trio.current_time()
        self._apply_renewals(view, self._deadline(sent_at))
        if not self._registered:
            # claim nothing on the first heartbeat: nodes started together all register
            # first, so the first one up does not take every channel only to hand most of
            # them over once the others have settled
            self._registered = True
            return
        claims, gives = self._decide(view)
        jobs = self._free_singletons(view)
        if claims or jobs:
            await self._claim(db, nursery, claims, jobs)
        orphans = [  # held in the database but unused here (a release that failed, ...)
            c for c in view.held_by(node.node_id) if c not in self._busy and c not in node.fences
        ]
        if orphans:
            log.info("cluster: releasing leases this node does not use: %s", orphans)
            await self._release(db, *orphans)
        for channel in gives:
            fence = node.fences.get(channel)
            if fence is not None and fence.is_open():
                # its room task stops the room, then releases the lease
                fence.close("placement gives it to another node")

    def _apply_renewals(self, view: sql.ClusterView, deadline: float) -> None:
        node = self.node
        renewed = {(kind, name): token for kind, name, token in view.renewed}
        for kind, fences in ((sql.CHANNEL, node.fences), (sql.SINGLETON, node.singletons)):
            for name, fence in list(fences.items()):
                if not fence.is_open():
                    continue
                if renewed.get((kind, name)) == fence.token and fence.extend(deadline):
                    node.renewals += 1
                else:
                    node.losses += 1
                    fence.close("lost the lease (expired or taken)")
        for job, fence in list(node.singletons.items()):
            if not fence.is_open():
                del node.singletons[job]

    def _decide(self, view: sql.ClusterView) -> tuple[list[str], list[str]]:
        """The channels to claim and the channels to give back, by placement."""
        node, settings = self.node, self.node.settings
        live = [n for n in view.nodes if n.live(settings.ttl)]
        nodes = [
            NodeView(
                node_id=n.node_id,
                name=n.name,
                weight=n.weight,
                age=n.age,
                channels=frozenset(n.channels),
            )
            for n in live
        ]
        holders = {
            lease.name: lease.holder
            for lease in view.leases
            if lease.kind == sql.CHANNEL and lease.valid and lease.holder is not None
        }
        channels = {c for n in live for c in n.channels}
        placed = place(channels, nodes, holders, settings.rules())
        me = node.node_id
        held = set(node.held_channels())
        claims = sorted(
            channel
            for channel, target in placed.items()
            if target == me
            and channel not in held
            and channel not in self._busy
            and holders.get(channel) in (None, me)
        )
        gives = sorted(channel for channel in held if placed.get(channel) != me)
        return claims, gives

    def _free_singletons(self, view: sql.ClusterView) -> list[str]:
        valid = {lease.name for lease in view.leases if lease.kind == sql.SINGLETON and lease.valid}
        return [
            job for job in SINGLETON_JOBS if job not in valid and job not in self.node.singletons
        ]

    async def _claim(
        self, db: ClusterDb, nursery: trio.Nursery, channels: list[str], jobs: list[str]
    ) -> None:
        node, settings = self.node, self.node.settings
        wanted = [(sql.CHANNEL, c) for c in channels] + [(sql.SINGLETON, j) for j in jobs]
        sent_at = trio.current_time()
        try:
            won = await db.transaction(
                partial(_claim_all, wanted=wanted, node_id=node.node_id, ttl=settings.ttl),
                name="cluster.claim",
                timeout=settings.renew_every,
            )
        except DB_FAILED as exc:
            self._warnings.warning("claim", "cluster: cannot claim leases (%s)", exc)
            return
        deadline = self._deadline(sent_at)
        for (kind, name), token in won.items():
            fence = LeaseFence(token, deadline)
            node.claims += 1
            if kind == sql.SINGLETON:
                node.singletons[name] = fence
                log.info("cluster: this node now runs %s (token %d)", name, token)
            else:
                node.fences[name] = fence
                self._busy.add(name)
                nursery.start_soon(self._room_life, db, name, fence)

    async def _room_life(self, db: ClusterDb, channel: str, fence: LeaseFence) -> None:
        """Start the room under `fence`; once the fence closes, stop it and release."""
        try:
            log.info("cluster: holding %s (token %s); joining it", channel, fence.token)
            try:
                await self.rooms.start_room(channel, fence)
            except Exception as exc:  # the room could not start: give the channel back
                log.error("cluster: room %s failed to start: %r", channel, exc)
                fence.close("the room failed to start")
            else:
                await fence.wait_closed()
                log.warning("cluster: leaving %s: %s", channel, fence.reason)
                with trio.move_on_after(VACATE_TIMEOUT):
                    await fence.wait_vacated()  # the websocket is closed: out of the channel
                    log.info("cluster: left %s", channel)
                    await self._release(db, channel)
                await self.rooms.stop_room(channel)
            await self._release(db, channel)  # a no-op if it was released above
        finally:
            self._busy.discard(channel)
            if self.node.fences.get(channel) is fence:
                del self.node.fences[channel]
            self._wake.set()

    async def _release(self, db: ClusterDb, *channels: str) -> None:
        try:
            count = await db.transaction(
                partial(
                    sql.release, node_id=self.node.node_id, kind=sql.CHANNEL, names=list(channels)
                ),
                name="cluster.release",
                timeout=self.node.settings.renew_every,
            )
        except DB_FAILED as exc:
            log.info("cluster: could not release %s (%s): it expires", channels, exc)
        else:
            self.node.releases += count


async def _claim_all(
    conn: Any, *, wanted: list[tuple[str, str]], node_id: str, ttl: float
) -> dict[tuple[str, str], int]:
    won: dict[tuple[str, str], int] = {}
    for kind, name in wanted:
        token = await sql.claim(conn, kind=kind, name=name, node_id=node_id, ttl=ttl)
        if token is not None:
            won[(kind, name)] = token
    return won
