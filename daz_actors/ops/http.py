"""Health and metrics over HTTP/1.1: ``/healthz``, ``/readyz`` and ``/metrics``.

A small h11 server on `trio.serve_tcp` (no ASGI framework, no extra dependency): GET
(and HEAD) only, bodies ignored, keep-alive honoured, idle connections closed after
`IDLE_TIMEOUT` seconds. Bound to loopback unless told otherwise.

- ``/healthz``: liveness, 200 while the tree's root supervisor runs, else 503.
- ``/readyz``: readiness, 200 when the database is connected (and its breaker not open)
  and every room is joined, else 503; the JSON body lists every component's status.
- ``/metrics``: the Prometheus text exposition (see `daz_actors.ops.metrics`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import h11
import trio

from daz_actors.cytube.events import ConnectionStatus
from daz_actors.cytube.names import room_name
from daz_actors.ops.metrics import CONTENT_TYPE, Metrics, Snapshot, Sources, snapshot
from daz_actors.runtime.breaker import BreakerState

__all__ = ["Component", "Response", "readiness", "serve_http"]

log = logging.getLogger("daz_actors.http")

IDLE_TIMEOUT = 30.0  # seconds a connection may sit between or inside requests
MAX_RECEIVE = 16384
SERVER_HEADER = b"daz-actors"
ALLOWED = b"GET, HEAD"


@attrs.frozen
class Component:
    """One component's readiness."""

    status: str  # "UP" or "DOWN"
    reason: str


@attrs.frozen
class Response:
    """What a route answers."""

    status: int
    body: bytes
    content_type: bytes = b"application/json"
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()


def _json(status: int, payload: Any, *headers: tuple[bytes, bytes]) -> Response:
    return Response(
        status, json.dumps(payload, sort_keys=True).encode() + b"\n", b"application/json", headers
    )


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


class _App:
    def __init__(self, sources: Sources, metrics: Metrics) -> None:
        self.sources = sources
        self.metrics = metrics
        self.routes: dict[str, Callable[[], Awaitable[Response]]] = {
            "/healthz": self.healthz,
            "/readyz": self.readyz,
            "/metrics": self.render_metrics,
        }

    async def __call__(self, method: str, target: str) -> Response:
        path = target.split("?", 1)[0]
        route = self.routes.get(path)
        if route is None:
            return _json(404, {"error": "not found", "path": path})
        if method not in ("GET", "HEAD"):
            return _json(
                405, {"error": "method not allowed", "method": method}, (b"allow", ALLOWED)
            )
        return await route()

    async def healthz(self) -> Response:
        tree = self.sources.tree
        if tree is not None and tree.root.running:
            return _json(200, {"status": "ok"})
        return _json(503, {"status": "down"})

    async def readyz(self) -> Response:
        components = readiness(await snapshot(self.sources))
        ready = all(c.status == "UP" for c in components.values())
        body = {
            "status": "ready" if ready else "not ready",
            "components": {
                name: {"status": c.status, "reason": c.reason} for name, c in components.items()
            },
        }
        return _json(200 if ready else 503, body)

    async def render_metrics(self) -> Response:
        body = self.metrics.render(await snapshot(self.sources))
        return Response(200, body, CONTENT_TYPE.encode())


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> Any:
    """The next h11 event, or None when the peer closed or went idle too long."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            with trio.move_on_after(IDLE_TIMEOUT) as scope:
                data = await stream.receive_some(MAX_RECEIVE)
            if scope.cancelled_caught:
                return None
            conn.receive_data(bytes(data))  # b"" tells h11 the peer closed
            continue
        if isinstance(event, h11.ConnectionClosed):
            return None
        return event


async def _send(
    conn: h11.Connection, stream: trio.abc.Stream, response: Response, *, head: bool
) -> None:
    headers = [
        (b"content-type", response.content_type),
        (b"content-length", str(len(response.body)).encode()),
        (b"server", SERVER_HEADER),
        (b"cache-control", b"no-store"),
        *response.extra_headers,
    ]
    out = conn.send(h11.Response(status_code=response.status, headers=headers))
    if not head and response.body:
        out += conn.send(h11.Data(data=response.body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(out or b"")


async def _serve_connection(app: _App, stream: trio.abc.Stream) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            try:
                request = await _next_event(conn, stream)
                if request is None:
                    return
                assert isinstance(request, h11.Request)
                while True:  # a GET has no body to speak of: read past whatever came
                    event = await _next_event(conn, stream)
                    if event is None:
                        return
                    if isinstance(event, h11.EndOfMessage):
                        break
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    bad = _json(exc.error_status_hint, {"error": "bad request"})
                    await _send(conn, stream, bad, head=False)
                return
            method = request.method.decode("ascii", "replace")
            target = request.target.decode("ascii", "replace")
            try:
                response = await app(method, target)
            except Exception:
                log.exception("%s %s failed", method, target)
                response = _json(500, {"error": "internal error"})
            await _send(conn, stream, response, head=method == "HEAD")
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        await stream.aclose()


async def serve_http(
    sources: Sources,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    metrics: Metrics | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the health and metrics endpoints until cancelled.

    ``port = await nursery.start(serve_http, sources)`` returns the bound port (useful
    with the default ``port=0``: any free port). `metrics` defaults to a fresh `Metrics`.
    """
    app = _App(sources, metrics if metrics is not None else Metrics())
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound: int = listeners[0].socket.getsockname()[1]
    log.info("serving /healthz /readyz /metrics on http://%s:%d", host, bound)

    async def handler(stream: trio.SocketStream) -> None:
        await _serve_connection(app, stream)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(bound)
