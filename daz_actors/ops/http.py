"""Health, metrics and the operators' dashboard over HTTP: Starlette served by Hypercorn's
trio worker, in the process's own trio run.

- ``/healthz``: liveness, 200 while the tree's root supervisor runs, else 503.
- ``/readyz``: readiness, 200 when the database is connected (and its breaker not open)
  and every room is joined, else 503; the JSON body lists every component's status.
- ``/metrics``: the Prometheus text exposition (see `daz_actors.ops.metrics`).
- everything else, when a `Dashboard` is given: the dashboard (`daz_actors.ops.dashboard`).

The three endpoints answer GET and HEAD only (405 with ``Allow: GET, HEAD`` otherwise) and
need no token. Bound to loopback unless told otherwise; the dashboard refuses any other
address without an access token (`DashboardRefused`, raised before anything listens).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from daz_actors.ops.dashboard import Dashboard, check_exposure, dashboard_routes
from daz_actors.ops.metrics import CONTENT_TYPE, Metrics, Sources, snapshot
from daz_actors.ops.readiness import Component as Component
from daz_actors.ops.readiness import readiness as readiness

__all__ = ["Component", "build_app", "readiness", "serve_http"]

log = logging.getLogger("daz_actors.http")

IDLE_TIMEOUT = 30.0  # seconds a kept-alive connection may sit between requests
SERVER_HEADER = "daz-actors"
ALLOWED = "GET, HEAD"
_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, sort_keys=True).encode() + b"\n"
    return Response(body, status, headers=headers, media_type="application/json")


Endpoint = Callable[[Request], Awaitable[Response]]


def _get_only(endpoint: Endpoint) -> Endpoint:
    """`endpoint` for GET and HEAD; 405 with an Allow header for any other method."""

    async def guarded(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _json(
                405, {"error": "method not allowed", "method": request.method}, {"allow": ALLOWED}
            )
        return await endpoint(request)

    return guarded


def _health_routes(sources: Sources, metrics: Metrics) -> list[BaseRoute]:
    async def healthz(request: Request) -> Response:
        tree = sources.tree
        if tree is not None and tree.root.running:
            return _json(200, {"status": "ok"})
        return _json(503, {"status": "down"})

    async def readyz(request: Request) -> Response:
        components = readiness(await snapshot(sources))
        ready = all(c.status == "UP" for c in components.values())
        body = {
            "status": "ready" if ready else "not ready",
            "components": {
                name: {"status": c.status, "reason": c.reason} for name, c in components.items()
            },
        }
        return _json(200 if ready else 503, body)

    async def render_metrics(request: Request) -> Response:
        body = metrics.render(await snapshot(sources))
        return Response(body, 200, headers={"content-type": CONTENT_TYPE})

    return [
        Route(path, _get_only(endpoint), methods=_ANY_METHOD)
        for path, endpoint in (
            ("/healthz", healthz),
            ("/readyz", readyz),
            ("/metrics", render_metrics),
        )
    ]


async def _not_found(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.status_code != 404:
        return _json(exc.status_code, {"error": exc.detail})
    return _json(404, {"error": "not found", "path": request.url.path})


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _json(500, {"error": "internal error"})


def build_app(
    sources: Sources, metrics: Metrics | None = None, dashboard: Dashboard | None = None
) -> Starlette:
    """The ASGI application: the health endpoints, and the dashboard if one is given."""
    metrics = metrics if metrics is not None else Metrics()
    routes = _health_routes(sources, metrics)
    if dashboard is not None:
        routes += dashboard_routes(dashboard, sources)
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _not_found, Exception: _internal_error},
    )


class _Headers:
    """ASGI middleware: every response says who served it and is never cached."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.append((b"server", SERVER_HEADER.encode()))
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_http(
    sources: Sources,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    metrics: Metrics | None = None,
    dashboard: Dashboard | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the health and metrics endpoints (and the dashboard, if given) until cancelled.

    ``port = await nursery.start(serve_http, sources)`` returns the bound port (useful
    with the default ``port=0``: any free port). `metrics` defaults to a fresh `Metrics`.
    Raises `DashboardRefused` before binding when the dashboard would be exposed beyond
    loopback without an access token, and `OSError` when the address cannot be bound.
    """
    if dashboard is not None:
        check_exposure(host, dashboard.settings)
    app = _Headers(build_app(sources, metrics, dashboard))
    config = HypercornConfig()
    config.bind = [_bind_address(host, port)]
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = logging.getLogger("daz_actors.http.server")
    config.keep_alive_timeout = IDLE_TIMEOUT
    config.graceful_timeout = 0.5
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(serve, app, config))
        bound = int(binds[0].rsplit(":", 1)[1])
        what = "/healthz /readyz /metrics" + (" and the dashboard" if dashboard else "")
        log.info("serving %s on http://%s", what, _bind_address(host, bound))
        task_status.started(bound)
