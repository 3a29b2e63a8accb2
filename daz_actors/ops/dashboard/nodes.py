"""The cluster's nodes as the overview shows them (``daz-actors nodes`` in a table)."""

from __future__ import annotations

from typing import Any

from daz_actors.cluster.sql import SINGLETON, cluster_view

__all__ = ["cluster_nodes"]


async def cluster_nodes(conn: Any) -> list[dict[str, Any]]:
    """Every registered node, newest heartbeat first: what it is, when it was last heard
    from, and the channels and singleton jobs whose valid lease it holds. Empty for a
    single process outside a cluster (it registers no node)."""
    view = await cluster_view(conn)
    nodes = sorted(view.nodes, key=lambda node: node.heartbeat_age)
    return [
        {
            "name": node.name,
            "node_id": node.node_id,
            "host": node.host,
            "pid": node.pid,
            "version": node.version,
            "heartbeat_age": node.heartbeat_age,
            "stopped": node.stopped,
            "channels": view.held_by(node.node_id),
            "singletons": view.held_by(node.node_id, SINGLETON),
        }
        for node in nodes
    ]
