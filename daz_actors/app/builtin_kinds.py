"""The actor kinds that ship with daz-actors.

Each kind's parameters live in a light module, and its factory imports the kind's code
when it is first called: reading and checking a config (``daz-actors config check``)
imports no actor, websocket, HTTP or database library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daz_actors.cytube.room_params import RoomsParams
from daz_actors.ops.health_params import HealthParams
from daz_actors.plugins.names import PLUGINS_KIND
from daz_actors.retry.params import FailureLogParams, RetryParams
from daz_actors.runtime.kinds import ActorKind, ActorKinds, BuildContext, NoParams
from daz_actors.storage.gateway_params import SqlGatewayParams

if TYPE_CHECKING:
    from daz_actors.runtime.actor import Startable

CLUSTER_NODE = "cluster_node"  # the resource holding this process's `ClusterNode`, if any

__all__ = ["CLUSTER_NODE", "default_kinds"]


def build_failure_log(params: FailureLogParams, ctx: BuildContext) -> Startable:
    from daz_actors.retry.failure_log import build_failure_log

    return build_failure_log(params, ctx)


def build_sql_gateway(params: SqlGatewayParams, ctx: BuildContext) -> Startable:
    from daz_actors.storage.sql_gateway import build_sql_gateway

    return build_sql_gateway(params, ctx)


def build_retry(params: RetryParams, ctx: BuildContext) -> Startable:
    from daz_actors.retry.kind import build_retry

    return build_retry(params, ctx)


def build_rooms(params: RoomsParams, ctx: BuildContext) -> Startable:
    """Every configured channel in a single process; on a cluster node (the
    ``cluster_node`` resource), those whose lease this node holds (cluster/rooms.py)."""
    node = ctx.resources.get(CLUSTER_NODE)
    if node is not None:
        from daz_actors.cluster.node import ClusterNode
        from daz_actors.cluster.rooms import build_clustered_rooms

        if not isinstance(node, ClusterNode):
            raise TypeError(f"the {CLUSTER_NODE!r} resource must be a ClusterNode")
        return build_clustered_rooms(params, node, ctx)
    from daz_actors.cytube.rooms import build_rooms

    return build_rooms(params, ctx)


def build_plugins(params: NoParams, ctx: BuildContext) -> Startable:
    from daz_actors.plugins.kind import build_plugins

    return build_plugins(params, ctx)


def build_health_monitor(params: HealthParams, ctx: BuildContext) -> Startable:
    from daz_actors.ops.health import build_health_monitor

    return build_health_monitor(params, ctx)


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
            build=build_rooms,
            description="one room (connection + event router) per CyTube channel",
        )
    )
    kinds.add(
        ActorKind(
            name=PLUGINS_KIND,
            params=NoParams,
            build=build_plugins,
            description="the enabled plugins' actors, one supervisor per plugin",
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
