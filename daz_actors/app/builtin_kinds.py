"""The actor kinds that ship with daz-actors."""

from __future__ import annotations

from daz_actors.cytube.rooms import RoomsParams, build_rooms
from daz_actors.ops.health import HealthParams, build_health_monitor
from daz_actors.plugins.kind import PLUGINS_KIND, build_plugins
from daz_actors.retry.failure_log import FailureLogParams, build_failure_log
from daz_actors.retry.kind import RetryParams, build_retry
from daz_actors.runtime.kinds import ActorKind, ActorKinds, NoParams
from daz_actors.storage.sql_gateway import SqlGatewayParams, build_sql_gateway

__all__ = ["default_kinds"]


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
