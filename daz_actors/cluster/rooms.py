"""The ``rooms`` subtree of a cluster node: the lease keeper, and a room per held channel.

Same names as in a single process (``rooms``, ``room:<channel>``, its ``connection`` and
``event-router``), so the health monitor, the retry handlers and `!debug` find them; only
which rooms run changes: the keeper starts a room when this node wins the channel's lease
and stops it when the lease is lost or given back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import partial

from daz_actors.cluster.hand_over import HandOverWaker, wake_retry_workers
from daz_actors.cluster.keeper import KEEPER_NAME, LeaseKeeper
from daz_actors.cluster.node import ClusterNode, LeaseFence
from daz_actors.cytube.names import room_name
from daz_actors.cytube.rooms import RoomsParams, room_spec
from daz_actors.runtime.errors import NoSuchActor
from daz_actors.runtime.kinds import BuildContext
from daz_actors.runtime.supervision_policy import Strategy, SupervisorPolicy
from daz_actors.runtime.supervisor import ChildSpec, Supervisor

__all__ = ["build_clustered_rooms"]

ROOM_PREFIX = room_name("")


class _SupervisedRooms:
    """`RoomControl` over the rooms supervisor."""

    def __init__(self, params: RoomsParams, ctx: BuildContext) -> None:
        self.params = params
        self.ctx = ctx
        self.supervisor: Supervisor | None = None

    def _sup(self) -> Supervisor:
        assert self.supervisor is not None
        return self.supervisor

    async def start_room(self, channel: str, fence: LeaseFence) -> None:
        await self._sup().start_child(room_spec(channel, self.params, self.ctx, fence=fence))

    async def stop_room(self, channel: str) -> None:
        with contextlib.suppress(NoSuchActor):
            await self._sup().terminate_child(room_name(channel))

    def running_rooms(self) -> Sequence[str]:
        return [
            info.name.removeprefix(ROOM_PREFIX)
            for info in self._sup().which_children()
            if info.name.startswith(ROOM_PREFIX)
        ]


def build_clustered_rooms(params: RoomsParams, node: ClusterNode, ctx: BuildContext) -> Supervisor:
    """The ``rooms`` kind on a cluster node: `params.channels` are the channels this node
    may serve; it joins those it holds the lease of."""
    node.channels = params.channels
    dsn = ctx.resources.get("database_url")
    if not isinstance(dsn, str):
        raise RuntimeError("a cluster node's rooms need the 'database_url' resource")
    rooms = _SupervisedRooms(params, ctx)
    supervisor = Supervisor(
        ctx.name,
        [
            ChildSpec(
                name=KEEPER_NAME,
                start=LeaseKeeper(
                    node,
                    rooms,
                    dsn=dsn,
                    waker=HandOverWaker(node, partial(wake_retry_workers, ctx.registry)),
                ),
                shutdown_timeout=10.0,
            )
        ],
        policy=SupervisorPolicy(strategy=Strategy.ONE_FOR_ONE),
        registry=ctx.registry,
        bus=ctx.bus,
    )
    rooms.supervisor = supervisor
    return supervisor
