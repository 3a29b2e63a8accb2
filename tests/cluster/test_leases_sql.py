"""Schema 0012's leases against real PostgreSQL: claims, renewals, releases, tokens."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from daz_actors.cluster import sql

NODE_A = sql.NodeInfo(
    node_id="a-1", name="a", host="h", pid=1, version="0", weight=1.0, channels=("x", "y")
)


def test_a_lease_is_held_by_one_node_and_its_token_increases_on_every_change_of_holder(pg):
    """A claim wins a free lease with a new token; another node cannot claim it while it is
    valid; once released (or expired) the next holder gets a higher token, and the old
    token stops being current."""

    async def check(conn: Any) -> None:
        first = await sql.claim(conn, kind="channel", name="x", node_id="a-1", ttl=30)
        assert first is not None
        assert await sql.claim(conn, kind="channel", name="x", node_id="b-1", ttl=30) is None
        current = "SELECT daz_lease_is_current('channel', 'x', $1)"
        assert await conn.fetchval(current, first) is True
        assert await sql.release(conn, node_id="b-1", kind="channel", names=["x"]) == 0
        assert await sql.release(conn, node_id="a-1", kind="channel", names=["x"]) == 1
        assert await conn.fetchval(current, first) is False
        second = await sql.claim(conn, kind="channel", name="x", node_id="b-1", ttl=0.05)
        assert second is not None
        assert second > first
        await asyncio.sleep(0.1)  # the lease's own TTL running out is the subject here
        assert await conn.fetchval(current, second) is False
        third = await sql.claim(conn, kind="channel", name="x", node_id="a-1", ttl=30)
        assert third is not None
        assert third > second

    pg.run(check)


def test_a_renewal_extends_only_the_valid_leases_of_its_node(pg):
    """The heartbeat renews the valid leases the node names (and reports them): not
    expired ones, not other nodes' ones, not ones it holds but no longer uses; it registers
    the node and reads every node and lease."""

    async def check(conn: Any) -> None:
        x = await sql.claim(conn, kind="channel", name="x", node_id="a-1", ttl=30)
        await sql.claim(conn, kind="channel", name="y", node_id="a-1", ttl=0.05)
        await sql.claim(conn, kind="channel", name="w", node_id="a-1", ttl=30)
        await sql.claim(conn, kind="channel", name="z", node_id="b-1", ttl=30)
        await asyncio.sleep(0.1)  # y's TTL runs out
        wanted = [("channel", "x"), ("channel", "y"), ("channel", "z")]  # w: no longer used
        view = await sql.heartbeat_and_renew(conn, node=NODE_A, ttl=30, renew=wanted)
        assert view.renewed == (("channel", "x", x),)
        assert [n.node_id for n in view.nodes] == ["a-1"]
        assert view.nodes[0].live(ttl=30)
        assert view.nodes[0].channels == ("x", "y")
        assert view.held_by("a-1") == ["w", "x"]  # w runs out at its own time
        assert view.held_by("b-1") == ["z"]

    pg.run(check)


def test_an_orderly_stop_gives_every_lease_back_and_marks_the_node_stopped(pg):
    """`stop_node`: every lease of the node released at once, the node no longer live."""

    async def check(conn: Any) -> None:
        await sql.heartbeat_and_renew(conn, node=NODE_A, ttl=30)
        await sql.claim(conn, kind="channel", name="x", node_id="a-1", ttl=30)
        await sql.claim(conn, kind="singleton", name="retry.cleanup", node_id="a-1", ttl=30)
        assert await sql.stop_node(conn, node_id="a-1") == 2
        view = await sql.cluster_view(conn)
        assert view.nodes[0].stopped
        assert not view.nodes[0].live(ttl=30)
        assert not any(lease.valid for lease in view.leases)
        assert await sql.claim(conn, kind="channel", name="x", node_id="b-1", ttl=30)

    pg.run(check)


@pytest.mark.parametrize(("node", "ttl"), [("", 30), ("a-1", 0), ("a-1", -1)])
def test_a_claim_with_a_bad_node_or_ttl_is_refused_naming_it(pg, node, ttl):
    """An empty node id or a TTL that is not positive is refused with a clear error."""
    import asyncpg

    async def check(conn: Any) -> None:
        with pytest.raises(asyncpg.InvalidParameterValueError, match=r"node|ttl"):
            await sql.claim(conn, kind="channel", name="x", node_id=node, ttl=ttl)

    pg.run(check)
