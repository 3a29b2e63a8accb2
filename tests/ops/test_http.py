"""The health and metrics endpoints over a real loopback socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
import trio
from probes import Journal, spec, supervisor
from prometheus_client.parser import text_string_to_metric_families

from daz_actors import ChildSpec, EventBus, Registry, Supervisor
from daz_actors.cytube.connection import ConnectionParams, CytubeConnection
from daz_actors.cytube.events import ConnectionStatus
from daz_actors.ops.http import serve_http
from daz_actors.ops.metrics import Sources, connections_in
from daz_actors.runtime.breaker import BreakerState
from daz_actors.storage.queue_types import QueueStats, RetryStatus
from daz_actors.storage.sql_messages import GatewayStatus
from daz_actors.testing import fast_policy, open_tree, wait_until


def gateway_status(**changes: Any) -> GatewayStatus:
    base = GatewayStatus(
        connected=True,
        database="postgresql://daz:***@127.0.0.1/daz",
        breaker=BreakerState.CLOSED,
        failure_ratio=0.0,
        breaker_transitions=0,
        calls=0,
        failures=0,
        in_flight=0,
    )
    return attrs.evolve(base, **changes)


@attrs.define
class FakeGateway:
    """Stands in for `SqlClient.status`: answers its current status, raises, or hangs."""

    status: GatewayStatus = attrs.field(factory=gateway_status)
    error: Exception | None = None
    hang: bool = False

    async def __call__(self) -> GatewayStatus:
        if self.hang:
            await trio.sleep_forever()
        if self.error is not None:
            raise self.error
        return self.status


def connection(channel: str, status: ConnectionStatus) -> CytubeConnection:
    conn = CytubeConnection(ConnectionParams(server="http://127.0.0.1:9", channel=channel))
    conn.status = status
    return conn


@asynccontextmanager
async def serving(sources: Sources) -> AsyncIterator[httpx.AsyncClient]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, sources)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
        nursery.cancel_scope.cancel()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def two_probes() -> tuple[Journal, Supervisor]:
    journal = Journal()
    return journal, supervisor("root", [spec(journal, "a"), spec(journal, "b")], fast_policy())


async def test_healthz_follows_the_root_supervisor():
    """/healthz answers 200 ok while the root runs and 503 once it has stopped."""
    _, root = two_probes()
    async with serving(Sources(tree=None)) as no_tree:
        response = await no_tree.get("/healthz")
        assert response.status_code == 503
        assert response.json() == {"status": "down"}
    async with open_tree(root) as tree, serving(Sources(tree=tree)) as client:
        response = await client.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        assert response.headers["content-type"] == "application/json"
        tree.stop()
        await wait_until(lambda: not root.running)
        assert (await client.get("/healthz")).status_code == 503


async def test_readyz_ready_when_database_and_rooms_are_up():
    """/readyz answers 200, every component UP, with the database connected and rooms joined."""
    _, root = two_probes()
    rooms = [
        connection("lobby", ConnectionStatus.JOINED),
        connection("den", ConnectionStatus.JOINED),
    ]
    async with open_tree(root) as tree:
        sources = Sources(tree=tree, gateway_status=FakeGateway(), connections=lambda: rooms)
        async with serving(sources) as client:
            response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["components"]) == {"tree", "database", "room:lobby", "room:den"}
    for component in body["components"].values():
        assert component["status"] == "UP"
        assert isinstance(component["reason"], str)
    assert body["components"]["room:lobby"]["reason"] == "joined"


async def test_readyz_fails_on_a_down_database_and_recovers():
    """/readyz answers 503 naming the database while it is down, and 200 once it is back."""
    gateway = FakeGateway(error=ConnectionRefusedError("connection refused"))
    sources = Sources(gateway_status=gateway, probe_timeout=0.2)
    async with serving(sources) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        database = response.json()["components"]["database"]
        assert database["status"] == "DOWN"
        assert "connection refused" in database["reason"]

        gateway.error = None
        gateway.status = gateway_status(connected=False)
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert "not connected" in response.json()["components"]["database"]["reason"]

        gateway.status = gateway_status(breaker=BreakerState.OPEN)
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["components"]["database"]["reason"] == "circuit breaker open"

        gateway.hang = True
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert "no answer" in response.json()["components"]["database"]["reason"]

        gateway.hang = False
        gateway.status = gateway_status()
        response = await client.get("/readyz")
        assert response.status_code == 200
        assert response.json()["components"] == {
            "database": {"status": "UP", "reason": "breaker closed"}
        }


async def test_readyz_fails_while_a_room_is_not_joined():
    """/readyz answers 503 with the room DOWN and its connection status as the reason."""
    lobby = connection("lobby", ConnectionStatus.DISCONNECTED)
    sources = Sources(gateway_status=FakeGateway(), connections=lambda: [lobby])
    async with serving(sources) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["status"] == "not ready"
        assert response.json()["components"]["room:lobby"] == {
            "status": "DOWN",
            "reason": "disconnected",
        }
        assert response.json()["components"]["database"]["status"] == "UP"
        lobby.status = ConnectionStatus.JOINED
        assert (await client.get("/readyz")).status_code == 200


async def test_restart_metrics_move_when_a_child_crashes():
    """daz_actor_restarts_total rises for the crashed child only, and states are gauges."""
    _, root = two_probes()
    async with open_tree(root) as tree, serving(Sources(tree=tree)) as client:
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        before = samples(response.text)
        assert before[("daz_actor_restarts_total", (("actor", "a"),))] == 0
        assert before[("daz_actor_state", (("actor", "a"), ("state", "running")))] == 1
        assert before[("daz_actor_state", (("actor", "a"), ("state", "stopped")))] == 0

        with pytest.raises(Exception, match="crashed"):
            await root.ref("a").ask("crash")
        await wait_until(lambda: root.which_children()[0].restarts == 1)
        await wait_until(lambda: all(c.state.value == "running" for c in root.which_children()))

        after = samples((await client.get("/metrics")).text)
        assert after[("daz_actor_restarts_total", (("actor", "a"),))] == 1
        assert after[("daz_actor_restarts_total", (("actor", "b"),))] == 0


async def test_nested_actors_are_labelled_by_path():
    """A child of a nested supervisor is labelled with its path from the root."""
    journal = Journal()
    registry, bus = Registry(), EventBus()
    inner = supervisor("inner", [spec(journal, "leaf")], fast_policy(), registry, bus)
    root = Supervisor(
        "root",
        [ChildSpec(name="inner", start=inner)],
        policy=fast_policy(),
        registry=registry,
        bus=bus,
    )
    async with open_tree(root) as tree, serving(Sources(tree=tree)) as client:
        found = samples((await client.get("/metrics")).text)
    assert ("daz_actor_restarts_total", (("actor", "inner"),)) in found
    assert ("daz_actor_restarts_total", (("actor", "inner/leaf"),)) in found


async def test_sql_queue_and_chat_metrics_follow_their_sources():
    """SQL, queue and chat metrics show the sources' current values at each scrape."""
    gateway = FakeGateway()
    queue: list[QueueStats] = []
    lobby = connection("lobby", ConnectionStatus.JOINED)

    async def queue_stats() -> list[QueueStats]:
        return queue

    sources = Sources(gateway_status=gateway, queue_stats=queue_stats, connections=lambda: [lobby])
    async with serving(sources) as client:
        first = samples((await client.get("/metrics")).text)
        assert first[("daz_sql_connected", ())] == 1
        assert first[("daz_sql_calls_total", ())] == 0
        assert first[("daz_sql_breaker_state", (("state", "closed"),))] == 1
        assert first[("daz_queue_items", (("status", "pending"),))] == 0
        assert first[("daz_cytube_connected", (("channel", "lobby"),))] == 1
        assert first[("daz_chat_events_received_total", (("channel", "lobby"),))] == 0

        gateway.status = gateway_status(calls=7, failures=2, breaker=BreakerState.OPEN)
        row = QueueStats(
            status=RetryStatus.PENDING,
            event_type="chat",
            plugin=None,
            item_count=3,
            oldest_created_at=None,  # type: ignore[arg-type]
            earliest_next_retry_at=None,  # type: ignore[arg-type]
            max_retry_count=1,
            avg_retry_count=0.5,
        )
        queue.extend(
            [
                row,
                attrs.evolve(row, plugin="p"),
                attrs.evolve(row, status=RetryStatus.DEAD_LETTER, item_count=1),
            ]
        )
        lobby.received, lobby.sender.sent, lobby.reconnects = 5, 2, 1
        lobby.status = ConnectionStatus.DISCONNECTED

        second = samples((await client.get("/metrics")).text)
        assert second[("daz_sql_calls_total", ())] == 7
        assert second[("daz_sql_failures_total", ())] == 2
        assert second[("daz_sql_breaker_state", (("state", "closed"),))] == 0
        assert second[("daz_sql_breaker_state", (("state", "open"),))] == 1
        assert second[("daz_queue_items", (("status", "pending"),))] == 6
        assert second[("daz_queue_items", (("status", "dead_letter"),))] == 1
        assert second[("daz_cytube_connected", (("channel", "lobby"),))] == 0
        assert second[("daz_cytube_reconnects_total", (("channel", "lobby"),))] == 1
        assert second[("daz_chat_events_received_total", (("channel", "lobby"),))] == 5
        assert second[("daz_chat_messages_sent_total", (("channel", "lobby"),))] == 2

        gateway.error = OSError("gone")
        third = samples((await client.get("/metrics")).text)
        assert third[("daz_sql_connected", ())] == 0
        assert ("daz_sql_calls_total", ()) not in third


async def test_unknown_path_is_404_and_wrong_method_is_405():
    """An unknown path answers 404 JSON; a POST to a route answers 405 with an Allow header."""
    async with serving(Sources()) as client:
        missing = await client.get("/nope")
        assert missing.status_code == 404
        assert missing.json() == {"error": "not found", "path": "/nope"}
        wrong = await client.post("/metrics", content=b"x")
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "GET, HEAD"
        assert wrong.json()["method"] == "POST"
        head = await client.head("/healthz")
        assert head.status_code == 503
        assert head.content == b""
        with_query = await client.get("/readyz?verbose=1")
        assert with_query.status_code == 200


async def test_malformed_request_gets_400():
    """Bytes that are not HTTP get a 400 and the connection closed."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, Sources())
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            received = b""
            while chunk := await stream.receive_some(4096):
                received += chunk
        assert received.startswith(b"HTTP/1.1 400 ")
        nursery.cancel_scope.cancel()


async def test_connections_are_found_in_the_tree():
    """`connections_in` finds room connections nested anywhere below a supervisor."""
    registry, bus = Registry(), EventBus()
    lobby = connection("lobby", ConnectionStatus.JOINED)
    room = Supervisor(
        "room:lobby", [ChildSpec(name="connection", start=lobby)], registry=registry, bus=bus
    )
    rooms = Supervisor(
        "rooms", [ChildSpec(name="room:lobby", start=room)], registry=registry, bus=bus
    )
    assert connections_in(rooms) == [lobby]
