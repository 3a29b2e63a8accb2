"""``daz-actors nodes``: the cluster's nodes, their heartbeat age and the channels each holds."""

from __future__ import annotations

from typing import Any

import click

from daz_actors.app.cli_config import load_cli_config
from daz_actors.app.cli_database import current_choice
from daz_actors.app.cli_queue import _common_options, _print_json, _table, _with_connection
from daz_actors.cluster import sql

__all__ = ["nodes_command", "nodes_report"]


def nodes_report(view: sql.ClusterView, ttl: float) -> dict[str, Any]:
    """What ``nodes --json`` prints: each node with its state and leases, and the channels
    no node holds."""
    nodes = []
    for node in view.nodes:
        state = "stopped" if node.stopped else "live" if node.live(ttl) else "silent"
        nodes.append(
            {
                "node_id": node.node_id,
                "name": node.name,
                "host": node.host,
                "pid": node.pid,
                "version": node.version,
                "started_at": node.started_at,
                "state": state,
                "heartbeat_age": round(node.heartbeat_age, 3),
                "weight": node.weight,
                "channels": view.held_by(node.node_id, sql.CHANNEL),
                "singletons": view.held_by(node.node_id, sql.SINGLETON),
                "serves": list(node.channels),
            }
        )
    held = {lease.name for lease in view.leases if lease.kind == sql.CHANNEL and lease.valid}
    wanted = {c for node in view.nodes if node.live(ttl) for c in node.channels}
    return {"ttl": ttl, "nodes": nodes, "unheld_channels": sorted(wanted - held)}


@click.command("nodes")
@_common_options
def nodes_command(as_json: bool) -> None:
    """The nodes sharing this database, their heartbeat age and the channels each holds."""
    ttl = load_cli_config(current_choice().config_file).cluster.ttl
    view: sql.ClusterView = _with_connection(sql.cluster_view)
    report = nodes_report(view, ttl)
    if as_json:
        _print_json(report)
        return
    if not report["nodes"]:
        click.echo("no node has registered in this database (is [cluster] enabled?)")
        return
    click.echo(
        _table(
            ["NODE", "HOST", "PID", "STATE", "HEARTBEAT", "CHANNELS", "SINGLETONS"],
            (
                [
                    n["node_id"],
                    n["host"],
                    n["pid"],
                    n["state"],
                    f"{n['heartbeat_age']:.1f} s ago",
                    ",".join(n["channels"]) or "-",
                    ",".join(n["singletons"]) or "-",
                ]
                for n in report["nodes"]
            ),
            right=(2,),
        )
    )
    if report["unheld_channels"]:
        click.echo(f"channels no node holds: {', '.join(report['unheld_channels'])}")
