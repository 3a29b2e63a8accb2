"""The actor kinds that ship with daz-actors."""

from __future__ import annotations

from daz_actors.cluster.node import ClusterNode
from daz_actors.cluster.rooms import build_clustered_rooms
from daz_actors.cytube.rooms import RoomsParams, build_rooms
from daz_actors.ops.health import HealthParams, build_health_monitor
from daz_actors.retry.failure_log import FailureLogParams, build_failure_log
from daz_actors.retry.kind import RetryParams, build_retry
from daz_actors.runtime.actor import Startable
from daz_actors.runtime.kinds import ActorKind, ActorKinds, BuildContext
from daz_actors.storage.sql_gateway import SqlGatewayParams, build_sql_gateway

__all__ = ["CLUSTER_NODE", "default_kinds"]

CLUSTER_NODE = "cluster_node"  # the resource holding this process's `ClusterNode`, if any


def _build_rooms(params: RoomsParams, ctx: BuildContext) -> Startable:
    """Every configured channel in a single process; on a cluster node, those whose lease
    this node holds (daz_actors/cluster/rooms.py)."""
    node = ctx.resources.get(CLUSTER_NODE)
    if isinstance(node, ClusterNode):
        return build_clustered_rooms(params, node, ctx)
    return build_rooms(params, ctx)


def default_kinds() -> ActorKinds:
    """A fresh registry holding every built-in kind; add your own to it."""
    kinds = ActorKinds()
    kinds.add(
        ActorKind(
            name="failure-log",
            params=FailureLogParams,
            build=build_failure_log,
            description="logs failure events from the bus",
        )
    )
    kinds.add(
        ActorKind(
            name="sql-gateway",
            params=SqlGatewayParams,
            build=build_sql_gateway,
            description="owns the PostgreSQL pool: queries, timeouts, circuit breaker",
        )
    )
    kinds.add(
        ActorKind(
            name="retry",
            params=RetryParams,
            build=build_retry,
            description="the retry subtree: failure capture, dispatcher and workers",
        )
    )
    kinds.add(
        ActorKind(
            name="rooms",
            params=RoomsParams,
            build=_build_rooms,
            description="one room (connection + event router) per CyTube channel",
        )
    )
    kinds.add(
        ActorKind(
            name="health-monitor",
            params=HealthParams,
            build=build_health_monitor,
            description="periodic health checks; restarts what stays DOWN",
        )
    )
    return kinds
