"""The cluster's statements (schema 0012), as asyncio coroutines run through the gateway.

Each function takes an asyncpg connection (or pool) and runs on the asyncio side, so one
call crosses the trio/asyncio bridge once (docs/architecture.md).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import attrs

__all__ = [
    "CHANNEL",
    "SINGLETON",
    "ClusterView",
    "LeaseRow",
    "NodeInfo",
    "NodeRow",
    "claim",
    "cluster_view",
    "heartbeat_and_renew",
    "mark_stopping",
    "release",
    "stop_node",
]

CHANNEL = "channel"
SINGLETON = "singleton"
FORGET_AFTER = datetime.timedelta(hours=1)  # a node silent this long leaves the table


@attrs.frozen(kw_only=True)
class NodeInfo:
    """What a node says about itself."""

    node_id: str
    name: str
    host: str
    pid: int
    version: str
    weight: float
    channels: tuple[str, ...]


@attrs.frozen(kw_only=True)
class NodeRow:
    """A node as the database knows it."""

    node_id: str
    name: str
    host: str
    pid: int
    version: str
    started_at: datetime.datetime
    age: float  # seconds since it started (database clock)
    heartbeat_age: float  # seconds since its last heartbeat
    stopped: bool  # it stopped in order
    weight: float
    channels: tuple[str, ...]

    def live(self, ttl: float) -> bool:
        """Running, and heard from within `ttl` seconds."""
        return not self.stopped and self.heartbeat_age < ttl


@attrs.frozen(kw_only=True)
class LeaseRow:
    """A lease as the database knows it."""

    kind: str
    name: str
    holder: str | None
    token: int
    expires_in: float  # seconds; <= 0: expired

    @property
    def valid(self) -> bool:
        return self.holder is not None and self.expires_in > 0


@attrs.frozen(kw_only=True)
class ClusterView:
    """Every node and lease, read in one statement."""

    nodes: tuple[NodeRow, ...]
    leases: tuple[LeaseRow, ...]
    renewed: tuple[tuple[str, str, int], ...] = ()  # (kind, name, token) this node renewed

    def held_by(self, node_id: str, kind: str = CHANNEL) -> list[str]:
        """Names of the valid leases of `kind` that `node_id` holds."""
        return sorted(
            lease.name
            for lease in self.leases
            if lease.kind == kind and lease.holder == node_id and lease.valid
        )


_NODES = """
SELECT node_id, name, host, pid, version, started_at,
       extract(epoch FROM now() - started_at)::float8 AS age,
       extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age,
       stopped_at IS NOT NULL AS stopped, weight, channels
FROM daz_cluster_nodes ORDER BY name, started_at, node_id
"""

_LEASES = """
SELECT kind, name, holder, token, extract(epoch FROM expires_at - now())::float8 AS expires_in
FROM daz_leases ORDER BY kind, name
"""


def _node(row: Any) -> NodeRow:
    return NodeRow(
        node_id=row["node_id"],
        name=row["name"],
        host=row["host"],
        pid=row["pid"],
        version=row["version"],
        started_at=row["started_at"],
        age=row["age"],
        heartbeat_age=row["heartbeat_age"],
        stopped=row["stopped"],
        weight=row["weight"],
        channels=tuple(row["channels"]),
    )


def _lease(row: Any) -> LeaseRow:
    return LeaseRow(
        kind=row["kind"],
        name=row["name"],
        holder=row["holder"],
        token=row["token"],
        expires_in=row["expires_in"],
    )


def _seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


async def cluster_view(conn: Any) -> ClusterView:
    """Every node and lease (for `daz-actors nodes` and /metrics)."""
    nodes = [_node(r) for r in await conn.fetch(_NODES)]
    leases = [_lease(r) for r in await conn.fetch(_LEASES)]
    return ClusterView(nodes=tuple(nodes), leases=tuple(leases))


async def heartbeat_and_renew(
    conn: Any, *, node: NodeInfo, ttl: float, renew: Sequence[tuple[str, str]] = ()
) -> ClusterView:
    """One tick of a node, in one transaction: heartbeat, renew the leases `renew` names
    ((kind, name) pairs: those the node still uses), read every node and lease."""
    await conn.execute(
        """
        INSERT INTO daz_cluster_nodes
            (node_id, name, host, pid, version, started_at, heartbeat_at, weight, channels)
        VALUES ($1, $2, $3, $4, $5, now(), now(), $6, $7)
        ON CONFLICT (node_id) DO UPDATE
            SET heartbeat_at = now(), stopped_at = NULL,
                weight = EXCLUDED.weight, channels = EXCLUDED.channels
        """,
        node.node_id,
        node.name,
        node.host,
        node.pid,
        node.version,
        node.weight,
        list(node.channels),
    )
    renewed = await conn.fetch(
        "SELECT kind, name, token FROM daz_lease_renew($1, $2, $3, $4)",
        node.node_id,
        _seconds(ttl),
        [kind for kind, _ in renew],
        [name for _, name in renew],
    )
    await conn.execute(
        "DELETE FROM daz_cluster_nodes WHERE heartbeat_at < now() - $1::interval", FORGET_AFTER
    )
    view = await cluster_view(conn)
    return attrs.evolve(view, renewed=tuple((r["kind"], r["name"], r["token"]) for r in renewed))


async def claim(conn: Any, *, kind: str, name: str, node_id: str, ttl: float) -> int | None:
    """Claim one lease; its new token, or None when another node holds it."""
    token: int | None = await conn.fetchval(
        "SELECT daz_lease_claim($1, $2, $3, $4)", kind, name, node_id, _seconds(ttl)
    )
    return token


async def release(conn: Any, *, node_id: str, kind: str, names: Sequence[str]) -> int:
    """Give leases back at once; how many were still ours."""
    count: int = await conn.fetchval(
        "SELECT daz_lease_release($1, $2, $3)", node_id, kind, list(names)
    )
    return count


async def mark_stopping(conn: Any, *, node_id: str) -> None:
    """The node begins an orderly stop: the others place nothing more on it."""
    await conn.execute(
        "UPDATE daz_cluster_nodes SET stopped_at = now() WHERE node_id = $1", node_id
    )


async def stop_node(conn: Any, *, node_id: str) -> int:
    """An orderly stop: every lease given back, the node marked stopped; leases released."""
    count: int = await conn.fetchval(
        """
        WITH released AS (
            UPDATE daz_leases SET holder = NULL, expires_at = now()
            WHERE holder = $1 RETURNING 1
        ), stopped AS (
            UPDATE daz_cluster_nodes SET stopped_at = now() WHERE node_id = $1 RETURNING 1
        )
        SELECT count(*)::integer FROM released
        """,
        node_id,
    )
    return count
