"""Readiness: each component's UP or DOWN with a reason, judged from a snapshot (what
``/readyz`` answers and the health monitor reads). Kept apart from the HTTP server so that
reading it imports no web stack."""

from __future__ import annotations

import attrs

from daz_actors.cytube.events import ConnectionStatus
from daz_actors.cytube.names import room_name
from daz_actors.ops.metrics import Snapshot
from daz_actors.runtime.breaker import BreakerState

__all__ = ["Component", "readiness"]


@attrs.frozen
class Component:
    """One component's readiness."""

    status: str  # "UP" or "DOWN"
    reason: str


def readiness(snap: Snapshot) -> dict[str, Component]:
    """Every component's readiness, by name (``tree``, ``database``, ``room:<channel>``)."""
    components: dict[str, Component] = {}
    if snap.tree_configured:
        if snap.tree_stopping:
            components["tree"] = Component("DOWN", "stopping")
        elif snap.root_running:
            components["tree"] = Component("UP", "root supervisor running")
        else:
            components["tree"] = Component("DOWN", "root supervisor not running")
    if snap.gateway_configured:
        gw = snap.gateway
        if gw is None:
            components["database"] = Component("DOWN", snap.gateway_error or "no status")
        elif not gw.connected:
            components["database"] = Component("DOWN", f"not connected to {gw.database}")
        elif gw.breaker is BreakerState.OPEN:
            components["database"] = Component("DOWN", "circuit breaker open")
        else:
            components["database"] = Component("UP", f"breaker {gw.breaker.value}")
    for conn in snap.connections:
        joined = conn.status is ConnectionStatus.JOINED
        reason = f"{conn.status.value}: {conn.reason}" if conn.reason else conn.status.value
        components[room_name(conn.channel)] = Component("UP" if joined else "DOWN", reason)
    return components
