"""`daz-actors nodes`: the table and the JSON, from the rows of schema 0012."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from daz_actors.cluster import sql


def nodes(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daz_actors.app.cli", "nodes", "--database-url", dsn, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def node(node_id: str, channels: tuple[str, ...]) -> sql.NodeInfo:
    return sql.NodeInfo(
        node_id=node_id, name="h", host="host1", pid=42, version="0.1", weight=1.0,
        channels=channels,
    )  # fmt: skip


def test_nodes_lists_each_node_its_heartbeat_and_what_it_holds_and_what_nobody_holds(pg):
    """Two nodes, one stopped in order; the live one holds a channel and the cleanup: the
    table and the JSON say so, and name the channel no node holds."""

    async def setup(conn: Any) -> None:
        await sql.heartbeat_and_renew(conn, node=node("a-1", ("x", "y")), ttl=15)
        await sql.heartbeat_and_renew(conn, node=node("b-1", ("x", "y")), ttl=15)
        await sql.claim(conn, kind="channel", name="x", node_id="a-1", ttl=15)
        await sql.claim(conn, kind="singleton", name="retry.cleanup", node_id="a-1", ttl=15)
        await sql.claim(conn, kind="channel", name="y", node_id="b-1", ttl=15)
        await sql.stop_node(conn, node_id="b-1")

    pg.run(setup)
    table = nodes(pg.dsn)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "NODE", "HOST", "PID", "STATE", "HEARTBEAT", "CHANNELS", "SINGLETONS",
    ]  # fmt: skip
    a = next(line for line in lines if line.startswith("a-1"))
    assert a.split()[3:4] == ["live"]
    assert a.split()[-2:] == ["x", "retry.cleanup"]
    b = next(line for line in lines if line.startswith("b-1"))
    assert b.split()[3] == "stopped"
    assert lines[-1] == "channels no node holds: y"
    report = json.loads(nodes(pg.dsn, "--json").stdout)
    by_id = {n["node_id"]: n for n in report["nodes"]}
    assert by_id["a-1"]["channels"] == ["x"]
    assert by_id["a-1"]["singletons"] == ["retry.cleanup"]
    assert by_id["b-1"]["state"] == "stopped"
    assert by_id["b-1"]["channels"] == []
    assert report["unheld_channels"] == ["y"]


def test_nodes_on_a_database_without_a_cluster_says_so(pg):
    """No node ever registered: one clear line, exit 0."""
    result = nodes(pg.dsn)
    assert result.returncode == 0, result.stderr
    assert "no node has registered in this database" in result.stdout
