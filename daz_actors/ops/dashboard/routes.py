"""The dashboard's pages, its JSON and event stream, and its actions (Starlette routes)."""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import jinja2
import trio
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from daz_actors.ops.dashboard.forms import (
    BadInput,
    filter_query,
    read_action,
    read_filter,
    read_int,
    read_limit,
)
from daz_actors.ops.dashboard.nodes import cluster_nodes
from daz_actors.ops.dashboard.security import CSRF_FIELD, SESSION_COOKIE, Guard
from daz_actors.ops.dashboard.settings import Dashboard
from daz_actors.ops.dashboard.views import iso, live_state, pretty_json
from daz_actors.ops.metrics import Sources
from daz_actors.runtime.redaction import redact
from daz_actors.storage import queue, queue_browse
from daz_actors.storage.queue_browse import Action, ItemFilter
from daz_actors.storage.queue_types import QueueInputError, RetryStatus

__all__ = ["dashboard_routes"]

log = logging.getLogger("daz_actors.dashboard")

T = TypeVar("T")
Endpoint = Callable[[Request], Awaitable[Response]]

OVERVIEW_REFRESH_MIN = 3.0  # seconds between the overview's refreshes, at least
OVERVIEW_REFRESH_FACTOR = 10  # ... and at least this many times what its queries took
ALERTS_SHOWN = 50  # the newest alerts listed on the overview (all are counted)

_FINAL = frozenset({RetryStatus.COMPLETED, RetryStatus.FAILED, RetryStatus.DEAD_LETTER})


class _Unavailable(Exception):
    """The database did not answer a page's query."""


def _script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element (no ``</script>`` can close it early)."""
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    seconds = (end - start).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("daz_actors.ops.dashboard", "templates"),
        autoescape=jinja2.select_autoescape(("html",)),
        undefined=jinja2.StrictUndefined,
        auto_reload=False,  # the templates are package data: never look at them again
    )
    env.filters["iso"] = iso
    env.filters["redact"] = lambda text: None if text is None else redact(str(text))
    env.globals["duration"] = _duration
    env.globals["statuses"] = [s.value for s in RetryStatus]
    return env


class _Pages:
    def __init__(self, dashboard: Dashboard, sources: Sources) -> None:
        self.dashboard = dashboard
        self.settings = dashboard.settings
        self.sources = sources
        self.guard = Guard(dashboard.settings)
        self.env = _environment()

    # --- plumbing ------------------------------------------------------------------------

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response:
        csrf, new = self.guard.csrf_token(request)
        html = self.env.get_template(template).render(
            csrf=csrf,
            csrf_field=CSRF_FIELD,
            read_only=self.settings.read_only,
            has_token=self.settings.token is not None,
            path=request.url.path,
            refresh_ms=int(self.settings.refresh_seconds * 1000),
            **context,
        )
        response = HTMLResponse(html, status)
        if new:
            self.guard.set_csrf_cookie(response, csrf)
        return response

    def error(self, request: Request, status: int, message: str) -> Response:
        return self.render(request, "error.html", status, title="Error", message=message)

    async def db(self, fn: Callable[[Any], Awaitable[T]], name: str) -> T:
        database = self.dashboard.database
        if database is None:
            raise _Unavailable("no database is configured")
        try:
            with trio.fail_after(self.dashboard.query_timeout):
                return await database.run(fn, name=f"dashboard.{name}")
        except trio.TooSlowError:
            raise _Unavailable(
                f"the database did not answer within {self.dashboard.query_timeout} s"
            ) from None
        except QueueInputError:
            raise
        except Exception as exc:
            log.warning("dashboard query %s failed: %s", name, redact(str(exc)))
            raise _Unavailable(redact(f"{type(exc).__name__}: {exc}")) from None

    def page(self, endpoint: Endpoint, *, api: bool = False) -> Endpoint:
        """`endpoint` behind the token, with bad input and database trouble as error pages."""

        async def guarded(request: Request) -> Response:
            if not self.guard.host_ok(request):
                return PlainTextResponse(
                    "the dashboard answers only loopback hosts (127.0.0.1, localhost) unless"
                    " an access token is configured",
                    403,
                )
            if not self.guard.allowed(request):
                if api:
                    return JSONResponse({"error": "access token required"}, 401)
                target = urllib.parse.quote(request.url.path, safe="/")
                return RedirectResponse(f"/login?next={target}", 303)
            try:
                return await endpoint(request)
            except (BadInput, QueueInputError) as exc:
                if api:
                    return JSONResponse({"error": str(exc)}, 400)
                return self.error(request, 400, str(exc))
            except _Unavailable as exc:
                if api:
                    return JSONResponse({"error": f"database unavailable: {exc}"}, 503)
                return self.error(request, 503, f"database unavailable: {exc}")

        return guarded

    async def form(self, request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > 65536:
            raise BadInput("form: too large")
        pairs = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        return dict(pairs)

    def who(self, request: Request) -> str:
        host = request.client.host if request.client else "unknown"
        return f"dashboard@{host}"

    # --- login ---------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        next_path = request.query_params.get("next", "/")
        if request.method == "GET":
            return self.render(request, "login.html", title="Log in", next=next_path, failed=False)
        form = await self.form(request)
        if not self.guard.csrf_ok(request, form):
            return self.error(request, 403, "the form's CSRF token did not match: reload the page")
        next_path = form.get("next", "/")
        if not next_path.startswith("/") or next_path[1:2] in ("/", "\\"):
            next_path = "/"  # only a path of this site: never //host or /\host
        if not self.guard.token_matches(form.get("token", "")):
            return self.render(
                request, "login.html", 401, title="Log in", next=next_path, failed=True
            )
        response = RedirectResponse(next_path, 303)
        response.set_cookie(
            SESSION_COOKIE, self.guard.session_value(), httponly=True, samesite="strict"
        )
        return response

    # --- overview ------------------------------------------------------------------------

    async def overview_data(self) -> dict[str, Any]:
        started = trio.current_time()
        counts = await self.db(queue_browse.overview, "overview")
        series = await self.db(queue_browse.throughput, "throughput")
        alerts = await self.db(lambda conn: queue.alerts(conn, newest=ALERTS_SHOWN), "alerts")
        alert_counts = await self.db(queue_browse.alert_counts, "alert_counts")
        took = trio.current_time() - started
        return {
            # the page asks again after this long: counting a million rows takes a while,
            # and a page left open must not keep the database busy
            "refresh_ms": int(max(OVERVIEW_REFRESH_MIN, took * OVERVIEW_REFRESH_FACTOR) * 1000),
            "alert_counts": alert_counts,
            "total": counts.total,
            "by_status": counts.by_status,
            "by_event_type": counts.by_event_type,
            "by_plugin": counts.by_plugin,
            "by_channel": counts.by_channel,
            "series": [
                {"minute": m.minute.isoformat(), "completed": m.completed, "failed": m.failed}
                for m in series
            ],
            "alerts": [
                {
                    "type": a.alert_type.value,
                    "severity": a.severity,
                    "item_id": a.item_id,
                    "event_type": a.event_type,
                    "status": a.status.value,
                    "error": None if a.last_error is None else redact(a.last_error)[:200],
                    "since": iso(a.since),
                }
                for a in alerts
            ],
        }

    async def overview(self, request: Request) -> Response:
        data = await self.overview_data()
        actions = await self.db(queue_browse.recent_actions, "actions")
        nodes = await self.db(cluster_nodes, "cluster_nodes")
        return self.render(
            request,
            "overview.html",
            title="Overview",
            data=data,
            data_json=_script_json(data),
            actions=actions,
            nodes=nodes,
        )

    async def overview_api(self, request: Request) -> Response:
        return JSONResponse(await self.overview_data())

    # --- items ---------------------------------------------------------------------------

    async def items(self, request: Request) -> Response:
        params = request.query_params
        where = read_filter(params)
        before = read_int(params, "before")
        limit = read_limit(params)

        async def fetch(conn: Any) -> queue_browse.ItemPage:
            return await queue_browse.page(conn, where, before=before, limit=limit)

        found = await self.db(fetch, "items")
        next_link = (
            None
            if found.next_before is None
            else "/items?" + filter_query(where, before=found.next_before, limit=limit)
        )
        return self.render(
            request,
            "items.html",
            title="Items",
            where=where,
            params={
                k: params.get(k, "")
                for k in ("status", "type", "plugin", "channel", "since", "until", "error")
            },
            page=found,
            next_link=next_link,
            first_link="/items?" + filter_query(where, limit=limit) if before else None,
            query=filter_query(where),
            notice=params.get("notice"),
        )

    async def item(self, request: Request) -> Response:
        item_id = int(request.path_params["item_id"])
        found = await self.db(lambda conn: queue.get(conn, item_id), "item")
        if found is None:
            return self.error(request, 404, f"no queue item {item_id}")
        attempts = await self.db(lambda conn: queue.history(conn, item_id), "history")
        return self.render(
            request,
            "item.html",
            title=f"Item {item_id}",
            item=found,
            attempts=attempts,
            data_json=pretty_json(found.event_data),
            metadata_json=pretty_json(found.event_metadata),
            checkpoint_json=None if found.checkpoint is None else pretty_json(found.checkpoint),
            final=found.status in _FINAL,
            notice=request.query_params.get("notice"),
        )

    async def item_api(self, request: Request) -> Response:
        item_id = int(request.path_params["item_id"])
        found = await self.db(lambda conn: queue.get(conn, item_id), "item")
        if found is None:
            return JSONResponse({"error": f"no queue item {item_id}"}, 404)
        attempts = await self.db(lambda conn: queue.history(conn, item_id), "history")
        return JSONResponse(
            {
                "id": found.id,
                "status": found.status.value,
                "retry_count": found.retry_count,
                "attempts": len(attempts),
                "last_error": None if found.last_error is None else redact(found.last_error),
            }
        )

    # --- actions -------------------------------------------------------------------------

    def _target(self, params: Any) -> tuple[ItemFilter | None, int | None]:
        item_id = read_int(params, "id", low=1)
        return (None, item_id) if item_id is not None else (read_filter(params), None)

    async def confirm(self, request: Request) -> Response:
        if self.settings.read_only:
            return self.error(request, 403, "the dashboard is read-only")
        params = request.query_params
        action = read_action(params)
        where, item_id = self._target(params)
        max_id: int = await self.db(
            lambda conn: conn.fetchval("SELECT coalesce(max(id), 0) FROM daz_retry_queue"),
            "max_id",
        )
        counted = await self.db(
            lambda conn: (
                queue_browse.count(conn, where or ItemFilter(), action=action, max_id=max_id)
                if item_id is None
                else self._count_one(conn, action, item_id)
            ),
            "count",
        )
        return self.render(
            request,
            "confirm.html",
            title=f"Confirm {action.value}",
            action=action,
            statuses=", ".join(s.value.replace("_", " ") for s in action.statuses),
            where=where,
            item_id=item_id,
            count=counted,
            max_bulk=queue_browse.MAX_BULK,
            max_id=max_id,
            hidden=dict(urllib.parse.parse_qsl(filter_query(where))) if where else {},
            back=f"/items/{item_id}"
            if item_id
            else "/items?" + filter_query(where or ItemFilter()),
        )

    @staticmethod
    async def _count_one(conn: Any, action: Action, item_id: int) -> int:
        args: list[Any] = [item_id]
        clause = ItemFilter().where(args, statuses=action.statuses)
        return int(
            await conn.fetchval(
                f"SELECT count(*) FROM daz_retry_queue WHERE id = $1 AND {clause}", *args
            )
        )

    async def act(self, request: Request) -> Response:
        if self.settings.read_only:
            return self.error(request, 403, "the dashboard is read-only")
        form = await self.form(request)
        if not self.guard.csrf_ok(request, form):
            return self.error(request, 403, "the form's CSRF token did not match: reload the page")
        action = read_action(form)
        where, item_id = self._target(form)
        max_id = read_int(form, "max_id")
        by = self.who(request)
        done = await self.db(
            lambda conn: queue_browse.act(
                conn,
                action,
                by=by,
                where=where,
                max_id=max_id,
                ids=None if item_id is None else [item_id],
            ),
            "act",
        )
        verb = {Action.REQUEUE: "requeued", Action.REPLAY: "replayed", Action.PURGE: "purged"}
        n = len(done)
        notice = f"{verb[action]} {n} item{'s' if n != 1 else ''}"
        log.info("%s by %s (%s)", notice, by, where.describe() if where else f"item {item_id}")
        if item_id is not None and action is not Action.PURGE:
            target = f"/items/{item_id}?" + urllib.parse.urlencode({"notice": notice})
        else:
            target = "/items?" + filter_query(where or ItemFilter(), notice=notice)
        return RedirectResponse(target, 303)

    # --- tree ----------------------------------------------------------------------------

    async def tree(self, request: Request) -> Response:
        state = live_state(self.sources)
        return self.render(request, "tree.html", title="Tree", state_json=_script_json(state))

    async def tree_api(self, request: Request) -> Response:
        return JSONResponse(live_state(self.sources))

    async def tree_events(self, request: Request) -> Response:
        interval = self.settings.refresh_seconds

        async def stream() -> AsyncIterator[str]:
            last = None
            quiet = 0.0
            while True:
                state = live_state(self.sources)
                body = json.dumps({k: v for k, v in state.items() if k != "at"})
                if body != last or quiet >= 15:
                    yield f"data: {json.dumps(state)}\n\n"
                    last, quiet = body, 0.0
                await trio.sleep(interval)
                quiet += interval

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    # --- routes --------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        page = self.page

        def api(endpoint: Endpoint) -> Endpoint:
            return self.page(endpoint, api=True)

        return [
            Route("/", page(self.overview)),
            Route("/login", self.page_login(), methods=["GET", "POST"]),
            Route("/api/overview", api(self.overview_api)),
            Route("/items", page(self.items)),
            Route("/items/{item_id:int}", page(self.item)),
            Route("/api/items/{item_id:int}", api(self.item_api)),
            Route("/actions/confirm", page(self.confirm)),
            Route("/actions", page(self.act), methods=["POST"]),
            Route("/tree", page(self.tree)),
            Route("/api/tree", api(self.tree_api)),
            Route("/tree/events", api(self.tree_events)),
            Mount(
                "/static",
                app=StaticFiles(packages=[("daz_actors.ops.dashboard", "static")]),
                name="static",
            ),
        ]

    def page_login(self) -> Endpoint:
        async def login(request: Request) -> Response:
            if not self.guard.host_ok(request):
                return PlainTextResponse("the dashboard answers only loopback hosts", 403)
            try:
                return await self.login(request)
            except BadInput as exc:
                return self.error(request, 400, str(exc))

        return login


def dashboard_routes(dashboard: Dashboard, sources: Sources) -> list[BaseRoute]:
    """The dashboard's routes, to mount beside the health endpoints."""
    return _Pages(dashboard, sources).routes()
