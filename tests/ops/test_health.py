"""The health monitor: state transitions and recovery actions against real parts."""

from __future__ import annotations

from typing import Any

import httpx
import trio
from cytube_peer import fixtures

from daz_actors import (
    Actor,
    ChildSpec,
    EventBus,
    Registry,
    SqlClient,
    Supervisor,
    actor_factory,
)
from daz_actors.cytube.connection import ConnectionParams, CytubeConnection
from daz_actors.cytube.events import ConnectionStatus
from daz_actors.ops.health import CheckNow, Health, HealthMonitor, HealthParams
from daz_actors.ops.http import serve_http
from daz_actors.ops.metrics import Sources
from daz_actors.storage.sql_gateway import SqlGateway, SqlGatewayParams
from daz_actors.testing import fast_policy, open_tree, poll, wait_until

cytube_peer = fixtures.cytube_peer
cytube_peer_factory = fixtures.cytube_peer_factory


class Sink(Actor):
    """Stands in for the event router."""

    async def handle(self, message: Any) -> Any:
        return None


def verdict(monitor: HealthMonitor, name: str) -> Health | None:
    report = monitor.latest
    if report is None:
        return None
    return next((c.health for c in report.components if c.name == name), None)


async def test_a_stuck_connection_is_restarted_through_its_supervisor(cytube_peer):
    """A room whose mediaUpdates stop is DOWN; past the grace period the monitor restarts
    the room (a recovery action), and the room joins again."""
    cytube_peer.add_account("bot", "secret")
    registry, bus = Registry(), EventBus()
    connection = CytubeConnection(
        ConnectionParams(
            server=cytube_peer.url,
            channel="lobby",
            name="bot",
            password="secret",
            reconnect_initial=0.1,
            reconnect_max=0.5,
        )
    )
    room = Supervisor(
        "room:lobby",
        [
            ChildSpec(name="connection", start=connection),
            ChildSpec(name="event-router", start=actor_factory(Sink)),
        ],
        policy=fast_policy(),
        registry=registry,
        bus=bus,
        prefix="room:lobby/",
    )
    rooms = Supervisor(
        "rooms", [ChildSpec(name="room:lobby", start=room)], policy=fast_policy(),
        registry=registry, bus=bus,
    )  # fmt: skip
    holder: list[Supervisor] = []
    params = HealthParams(interval=0.2, grace_period=0.5, media_stuck_after=1.5)
    monitor = HealthMonitor(params, lambda: holder[0] if holder else None)
    root = Supervisor(
        "daz",
        [ChildSpec(name="rooms", start=rooms), ChildSpec(name="health-monitor", start=monitor)],
        policy=fast_policy(),
        registry=registry,
        bus=bus,
    )
    holder.append(root)
    async with open_tree(root):
        await wait_until(lambda: connection.last_media_update is not None, timeout=20)
        assert verdict(monitor, "room:lobby") in (None, Health.UP)
        await trio.to_thread.run_sync(cytube_peer.stop_media, "lobby")
        await wait_until(lambda: verdict(monitor, "room:lobby") is Health.DOWN, timeout=20)
        await wait_until(lambda: monitor.recoveries >= 1, timeout=20)
        await wait_until(lambda: rooms.which_children()[0].restarts >= 1, timeout=20)
        await wait_until(lambda: connection.status is ConnectionStatus.JOINED, timeout=20)
        assert root.which_children()[1].restarts == 0  # the monitor itself never crashed


async def test_a_down_database_fails_readyz_and_it_recovers(own_server):
    """With PostgreSQL stopped the monitor's checks open the breaker and /readyz says 503
    with the database DOWN; with it back, /readyz is 200 again."""
    registry, bus = Registry(), EventBus()
    gateway = SqlGateway(
        SqlGatewayParams(breaker_min_calls=2, breaker_open_seconds=0.3, reconnect_initial=0.05),
        own_server.url,
    )
    holder: list[Supervisor] = []
    params = HealthParams(interval=0.1, grace_period=3600)
    monitor = HealthMonitor(params, lambda: holder[0] if holder else None)
    root = Supervisor(
        "daz",
        [ChildSpec(name="sql-gateway", start=gateway),
         ChildSpec(name="health-monitor", start=monitor)],
        policy=fast_policy(), registry=registry, bus=bus,
    )  # fmt: skip
    holder.append(root)
    async with open_tree(root) as tree, trio.open_nursery() as nursery:
        sources = Sources(
            tree=tree, gateway_status=SqlClient(registry.lookup("sql-gateway")).status
        )
        port = await nursery.start(serve_http, sources)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def readyz_is(code: int) -> dict[str, Any]:
                async def answered() -> tuple[dict[str, Any]] | None:
                    response = await client.get("/readyz")
                    return (dict(response.json()),) if response.status_code == code else None

                return (await poll(answered, timeout=60))[0]

            await gateway.connected.wait()
            await readyz_is(200)
            await trio.to_thread.run_sync(own_server.handle.stop)
            body = await readyz_is(503)
            assert body["components"]["database"]["status"] == "DOWN"
            await wait_until(lambda: verdict(monitor, "database") is Health.DOWN, timeout=30)
            await trio.to_thread.run_sync(own_server.handle.start)
            await readyz_is(200)
            await wait_until(lambda: verdict(monitor, "database") is Health.UP, timeout=30)
        nursery.cancel_scope.cancel()


def health_of(report: Any, name: str) -> tuple[Health, str] | None:
    return next(((c.health, c.reason) for c in report.components if c.name == name), None)


async def test_a_room_reconnecting_often_is_degraded(cytube_peer):
    """A room that reconnected more than `max_reconnects_per_check` times since the previous
    check is DEGRADED, saying how often; at the next check with none since, it is UP."""
    cytube_peer.add_account("bot", "secret")
    registry, bus = Registry(), EventBus()
    connection = CytubeConnection(
        ConnectionParams(server=cytube_peer.url, channel="lobby", name="bot",
                         password="secret", reconnect_initial=0.05, reconnect_max=0.1)
    )  # fmt: skip
    room = Supervisor(
        "room:lobby",
        [ChildSpec(name="connection", start=connection),
         ChildSpec(name="event-router", start=actor_factory(Sink))],
        policy=fast_policy(), registry=registry, bus=bus, prefix="room:lobby/",
    )  # fmt: skip
    holder: list[Supervisor] = []
    params = HealthParams(interval=3600, max_reconnects_per_check=1)  # checks when asked
    monitor = HealthMonitor(params, lambda: holder[0] if holder else None)
    root = Supervisor(
        "daz",
        [ChildSpec(name="room:lobby", start=room),
         ChildSpec(name="health-monitor", start=monitor)],
        policy=fast_policy(), registry=registry, bus=bus,
    )  # fmt: skip
    holder.append(root)
    async with open_tree(root):
        checker = registry.lookup("health-monitor")
        await wait_until(lambda: connection.status is ConnectionStatus.JOINED, timeout=20)
        report = await checker.ask(CheckNow(), timeout=10)
        assert (health_of(report, "room:lobby") or (None,))[0] is Health.UP
        for n in (1, 2):
            await trio.to_thread.run_sync(cytube_peer.kick, "lobby", "bot", "again")
            await wait_until(
                lambda n=n: connection.reconnects >= n
                and connection.status is ConnectionStatus.JOINED,
                timeout=20,
            )
        report = await checker.ask(CheckNow(), timeout=10)
        assert health_of(report, "room:lobby") == (
            Health.DEGRADED, "2 reconnects since the last check"
        )  # fmt: skip
        report = await checker.ask(CheckNow(), timeout=10)
        assert (health_of(report, "room:lobby") or (None,))[0] is Health.UP


async def test_a_database_round_trip_over_its_threshold_is_degraded(pg):
    """The same database is DEGRADED for a monitor whose latency threshold a round trip
    exceeds, and UP for one whose threshold it does not."""
    registry, bus = Registry(), EventBus()
    strict = HealthMonitor(HealthParams(interval=3600, db_latency_degraded=1e-9), lambda: None)
    lenient = HealthMonitor(HealthParams(interval=3600, db_latency_degraded=30), lambda: None)
    gateway = SqlGateway(SqlGatewayParams(), pg.dsn)
    root = Supervisor(
        "daz",
        [ChildSpec(name="sql-gateway", start=gateway),
         ChildSpec(name="strict", start=strict), ChildSpec(name="lenient", start=lenient)],
        policy=fast_policy(), registry=registry, bus=bus,
    )  # fmt: skip
    async with open_tree(root):
        await gateway.connected.wait()
        slow = await registry.lookup("strict").ask(CheckNow(), timeout=10)
        fine = await registry.lookup("lenient").ask(CheckNow(), timeout=10)
    health, reason = health_of(slow, "database") or (None, "")
    assert health is Health.DEGRADED
    assert reason.startswith("round trip ")
    assert (health_of(fine, "database") or (None,))[0] is Health.UP
