"""The ``rooms`` actor kind: one ``room:<channel>`` subtree per configured channel.

Each room is a one_for_all supervisor of its ``connection`` and ``event-router``
(registered as ``room:<channel>/connection`` and ``room:<channel>/event-router``): if one
of them crashes both restart together. Rooms are children of the ``rooms`` supervisor, so
a channel can be added at run time with ``await rooms.start_child(room_spec(...))``.
"""

from __future__ import annotations

import attrs

from daz_actors.cytube.connection import CytubeConnection
from daz_actors.cytube.fence import OPEN, Fence
from daz_actors.cytube.names import CONNECTION, ROUTER, room_name, router_name
from daz_actors.cytube.room_params import RoomsParams as RoomsParams
from daz_actors.cytube.router import build_router
from daz_actors.runtime.kinds import BuildContext
from daz_actors.runtime.supervision_policy import Strategy, SupervisorPolicy
from daz_actors.runtime.supervisor import ChildSpec, Supervisor

__all__ = ["RoomsParams", "build_rooms", "room_spec"]


def room_spec(
    channel: str, params: RoomsParams, ctx: BuildContext, *, fence: Fence = OPEN
) -> ChildSpec:
    """The ``room:<channel>`` child: a one_for_all supervisor of connection and router.

    `fence` (daz_actors/cytube/fence.py) says whether the room may act in its channel: a
    single process's rooms always may; a cluster node's only while it holds the lease.
    """
    name = room_name(channel)
    router_ctx = attrs.evolve(ctx, name=router_name(channel))
    room = Supervisor(
        name,
        [
            ChildSpec(
                name=CONNECTION, start=CytubeConnection(params.connection(channel), fence=fence)
            ),
            ChildSpec(
                name=ROUTER,
                start=build_router(params.router(channel), router_ctx),
                mailbox_size=1000,
                redeliver=3,  # its writes are idempotent: a line it crashed on is not lost
            ),
        ],
        policy=SupervisorPolicy(strategy=Strategy.ONE_FOR_ALL),
        registry=ctx.registry,
        bus=ctx.bus,
        prefix=f"{name}/",
    )
    return ChildSpec(name=name, start=room, shutdown_timeout=None)


def build_rooms(params: RoomsParams, ctx: BuildContext) -> Supervisor:
    """Factory of the ``rooms`` kind."""
    return Supervisor(
        ctx.name,
        [room_spec(channel, params, ctx) for channel in params.channels],
        policy=SupervisorPolicy(strategy=Strategy.ONE_FOR_ONE),
        registry=ctx.registry,
        bus=ctx.bus,
    )
