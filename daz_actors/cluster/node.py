"""This process as a cluster node: its identity, its fences, what it last saw.

One `ClusterNode` per process, made by the application when ``[cluster] enabled``; the
lease keeper (daz_actors/cluster/keeper.py) fills it, the rooms read their fences from
it, the retry dispatcher asks it whether it may run the once-per-database cleanup, and
/metrics and `daz-actors nodes` show what it saw.
"""

from __future__ import annotations

import os
import secrets
import socket

import trio

from daz_actors._version import __version__
from daz_actors.cluster.settings import ClusterSettings
from daz_actors.cluster.sql import ClusterView, NodeInfo

__all__ = ["SINGLETON_JOBS", "ClusterNode", "LeaseFence"]

# work that runs once per database, each under a singleton lease of this name
SINGLETON_JOBS = ("retry.cleanup",)


class LeaseFence:
    """A room's fence under one lease (one token): open until closed or its deadline.

    The deadline is on trio's clock (the monotonic clock, which runs on while the process
    is stopped): a renewal sent at t extends it to t + ttl - leave_margin. Once past its
    deadline or closed, it never opens again; a lease won back gets a new fence.
    """

    def __init__(self, token: int, deadline: float) -> None:
        self._token = token
        self.deadline = deadline
        self._closed = False
        self.reason = ""  # why it closed
        self._changed = trio.Event()
        self._vacated = trio.Event()

    def __repr__(self) -> str:
        return f"<LeaseFence token={self._token} open={self.is_open()}>"

    @property
    def token(self) -> int | None:
        return self._token

    def is_open(self) -> bool:
        if self._closed:
            return False
        if trio.current_time() >= self.deadline:
            self._closed = True
            self.reason = self.reason or "not renewed in time"
            return False
        return True

    def extend(self, deadline: float) -> bool:
        """Move the deadline later (a renewal went through); False if already closed."""
        if not self.is_open():
            return False
        self.deadline = max(self.deadline, deadline)
        return True

    def close(self, reason: str = "closed") -> None:
        """Close it now (the lease is given back or lost)."""
        if not self._closed:
            self.reason = reason
        self._closed = True
        self._changed.set()
        self._changed = trio.Event()

    async def wait_closed(self) -> None:
        while self.is_open():
            changed = self._changed
            with trio.move_on_at(self.deadline):
                await changed.wait()

    def vacated(self) -> None:
        """The room's connection is out of the channel (told by the connection)."""
        self._vacated.set()

    async def wait_vacated(self) -> None:
        await self._vacated.wait()


class ClusterNode:
    """This process's part in the cluster."""

    def __init__(self, settings: ClusterSettings, *, host: str | None = None) -> None:
        self.settings = settings
        self.host = host or socket.gethostname()
        self.name = settings.name or self.host
        self.pid = os.getpid()
        self.node_id = f"{self.name}-{self.pid}-{secrets.token_hex(3)}"  # unique per process
        self.version = __version__
        self.channels: tuple[str, ...] = ()  # the channels its config lets it serve
        self.fences: dict[str, LeaseFence] = {}  # channel -> the fence of its room
        self.singletons: dict[str, LeaseFence] = {}  # job -> the fence of its lease
        self.stopping = trio.Event()  # set when the process begins its orderly stop
        self.view: ClusterView | None = None  # the last tick's view of the cluster
        self.view_at: float | None = None  # trio time of that view
        # counters, for /metrics
        self.renewals = 0  # leases renewed
        self.claims = 0  # leases won
        self.losses = 0  # leases lost (expired or taken) while held
        self.releases = 0  # leases given back
        self.ticks_failed = 0  # heartbeats that did not reach the database
        self.retry_handed_over = 0  # retry items this node's workers handed to a holder
        self.retry_hand_over_wakes = 0  # retry workers woken for items handed to this node

    def info(self) -> NodeInfo:
        return NodeInfo(
            node_id=self.node_id,
            name=self.name,
            host=self.host,
            pid=self.pid,
            version=self.version,
            weight=self.settings.weight,
            channels=self.channels,
        )

    def may_run(self, job: str) -> bool:
        """True while this node holds the singleton lease of `job` (checked right before
        each run of it)."""
        fence = self.singletons.get(job)
        return fence is not None and fence.is_open()

    def held_channels(self) -> list[str]:
        """The channels whose fence is open now."""
        return sorted(c for c, fence in self.fences.items() if fence.is_open())
