"""The dashboard over a million items: pages served vs the same SQL run directly.

    python -m bench.dashboard [--items 1000000] [--reps 15] [--database-url URL]

Loads `--items` queue items (85% completed, 3% dead letters, 2% failed, 10% pending; five
event types, four channels and five plugins, some without; changes spread over two days)
and one history row per finished item, into a fresh database (embedded PostgreSQL by
default), then VACUUM ANALYZE.

The project's side: the dashboard as `daz-actors run` serves it (Starlette on Hypercorn's
trio worker, its queries through the SQL gateway actor, Jinja2 templates), asked by an
httpx client in the same process (so the client's own cost counts against the dashboard).
The baseline: the very statements that page ran (recorded from one served request: same
text, same arguments), run one after the other on one plain asyncpg connection on asyncio.
Each page is asked `--reps` times, alternating with the baseline; the medians are compared.
Target: served / direct under 1.5.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import trio

from daz_actors.ops.dashboard import Dashboard
from daz_actors.ops.http import serve_http
from daz_actors.ops.metrics import Sources
from daz_actors.runtime.bus import EventBus
from daz_actors.runtime.registry import Registry
from daz_actors.runtime.supervisor import ChildSpec, Supervisor
from daz_actors.storage.embedded_pg import open_database, redact_dsn
from daz_actors.storage.migrations import migrate
from daz_actors.storage.sql_gateway import GATEWAY_NAME, SqlGateway, SqlGatewayParams
from daz_actors.storage.sql_messages import SqlClient
from daz_actors.testing import fast_policy, open_tree

T = TypeVar("T")
BENCH_DB = "daz_bench_dashboard"
CHUNK = 200_000

LOAD = """
INSERT INTO daz_retry_queue (event_id, event_type, channel_name, plugin_name, status,
                             retry_count, last_error, last_error_code, event_data,
                             created_at, updated_at, completed_at)
SELECT 'bench-' || g,
       (ARRAY['chat.log', 'cytube.send', 'command.reply', 'plugin.seen', 'plugin.tell'])[1 + g % 5],
       (ARRAY['lobby', 'den', 'music', NULL])[1 + g % 4],
       (ARRAY['seen', 'tell', 'remind', 'quote', NULL])[1 + (g / 7) % 5],
       s.status,
       CASE WHEN s.status IN ('dead_letter', 'failed') THEN 3 ELSE 0 END,
       CASE WHEN s.status IN ('dead_letter', 'failed') THEN
           (ARRAY['connection timeout after 30 s', 'permission denied for table daz_tell',
                  'relation "daz_seen" does not exist', 'websocket closed (1006)'
           ])[1 + (g / 100) % 4]
       END,
       CASE WHEN s.status IN ('dead_letter', 'failed') THEN 'bench' END,
       jsonb_build_object('channel', 'lobby', 'text', 'hello ' || g),
       t.at - interval '1 second', t.at,
       CASE WHEN s.status = 'completed' THEN t.at END
FROM generate_series($1::bigint, $2::bigint) g
CROSS JOIN LATERAL (SELECT CASE WHEN g % 100 < 85 THEN 'completed'
                                WHEN g % 100 < 88 THEN 'dead_letter'
                                WHEN g % 100 < 90 THEN 'failed'
                                ELSE 'pending' END AS status) s
CROSS JOIN LATERAL (SELECT now() - ($3::bigint - g) * interval '172 milliseconds' AS at) t
"""

HISTORY = """
INSERT INTO daz_retry_history (item_id, event_id, attempt, worker_id, lock_token, started_at,
                               finished_at, outcome, error)
SELECT id, event_id, 1, 'retry-worker-' || (id % 4 + 1), gen_random_uuid(),
       updated_at - interval '20 milliseconds', updated_at,
       CASE status WHEN 'completed' THEN 'completed' WHEN 'dead_letter' THEN 'dead_letter'
                   ELSE 'failed' END,
       last_error
FROM daz_retry_queue WHERE status IN ('completed', 'dead_letter', 'failed')
  AND id BETWEEN $1 AND $2
"""


def _with_db(dsn: str, name: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


async def _prepare(admin_dsn: str, items: int) -> str:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {BENCH_DB}")
    finally:
        await conn.close()
    dsn = _with_db(admin_dsn, BENCH_DB)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        started = time.perf_counter()
        for first in range(1, items + 1, CHUNK):
            last = min(items, first + CHUNK - 1)
            await conn.execute(LOAD, first, last, items)
            await conn.execute(HISTORY, first, last)
        await conn.execute("VACUUM ANALYZE daz_retry_queue")
        await conn.execute("VACUUM ANALYZE daz_retry_history")
        print(f"loaded {items:,} items and their history in {time.perf_counter() - started:.0f} s")
    finally:
        await conn.close()
    return dsn


async def _drop(admin_dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    finally:
        await conn.close()


class _Recording:
    """An executor that notes every statement (method, text, arguments) it passes on."""

    def __init__(self, conn: Any, log: list[tuple[str, str, tuple[Any, ...]]]) -> None:
        self.conn = conn
        self.log = log

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        async def call(query: str, *args: Any) -> Any:
            self.log.append((method, query, args))
            return await getattr(self.conn, method)(query, *args)

        return call


class _Database:
    """The gateway's client, recording the statements of the next page while asked to."""

    def __init__(self, client: SqlClient) -> None:
        self.client = client
        self.log: list[tuple[str, str, tuple[Any, ...]]] | None = None

    async def run(self, fn: Callable[[Any], Awaitable[T]], *, name: str = "run") -> T:
        log = self.log
        if log is None:
            return await self.client.run(fn, name=name)
        return await self.client.run(lambda pool: fn(_Recording(pool, log)), name=name)


class _Direct:
    """One plain asyncpg connection on an asyncio loop of its own thread (its statement
    cache warm, like the gateway's pool): runs recorded statements in order."""

    def __init__(self, dsn: str) -> None:
        self.loop = asyncio.SelectorEventLoop()  # not the policy's: trio-asyncio replaces it
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.conn: Any = self._wait(asyncpg.connect(dsn))

    def _wait(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()  # type: ignore[arg-type]

    def time(self, statements: list[tuple[str, str, tuple[Any, ...]]]) -> float:
        """Seconds to run `statements` once, one after the other."""

        async def run() -> float:
            start = time.perf_counter()
            for method, query, args in statements:
                await getattr(self.conn, method)(query, *args)
            return time.perf_counter() - start

        return self._wait(run())

    def close(self) -> None:
        self._wait(self.conn.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


async def _bench(dsn: str, pages: dict[str, str], reps: int) -> None:
    registry, bus = Registry(), EventBus()
    gateway = SqlGateway(SqlGatewayParams(call_timeout=120.0), dsn)
    root = Supervisor(
        "bench",
        [ChildSpec(name="sql-gateway", start=gateway)],
        policy=fast_policy(),
        registry=registry,
        bus=bus,
    )
    async with open_tree(root), trio.open_nursery() as nursery:
        await gateway.connected.wait()
        database = _Database(SqlClient(registry.lookup(GATEWAY_NAME), default_timeout=120.0))
        dashboard = Dashboard(database=database, query_timeout=120.0)
        port = await nursery.start(
            lambda task_status: serve_http(Sources(), dashboard=dashboard, task_status=task_status)
        )
        direct_db = await trio.to_thread.run_sync(_Direct, dsn)
        print(f"{'page':44} {'direct SQL':>11} {'served':>9} {'ratio':>6}  statements")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
            floor: list[float] = []
            for _ in range(max(reps, 50)):
                start = time.perf_counter()
                await client.get("/healthz")
                floor.append(time.perf_counter() - start)
            print(
                f"{'HTTP floor: /healthz, no SQL':44} {'-':>11} "
                f"{statistics.median(floor) * 1000:>6.1f} ms"
            )
            for label, url in pages.items():
                database.log = []
                reply = await client.get(url)  # records the statements; warms both sides
                reply.raise_for_status()
                statements, database.log = database.log, None
                await trio.to_thread.run_sync(direct_db.time, statements)  # warm its cache
                served: list[float] = []
                direct: list[float] = []
                for _ in range(reps):
                    start = time.perf_counter()
                    (await client.get(url)).raise_for_status()
                    served.append(time.perf_counter() - start)
                    direct.append(await trio.to_thread.run_sync(direct_db.time, statements))
                s, d = statistics.median(served), statistics.median(direct)
                print(
                    f"{label:44} {d * 1000:>8.1f} ms {s * 1000:>6.1f} ms {s / d:>6.2f}"
                    f"  {len(statements)}"
                )
        await trio.to_thread.run_sync(direct_db.close)
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument(
        "--database-url", default=None, help="default: DAZ_DATABASE_URL, else embedded"
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="daz-bench-") as tmp,
        open_database(args.database_url, data_dir=Path(tmp)) as db,
    ):
        print(f"database: {redact_dsn(db.url)} ({db.source.value})")
        dsn = asyncio.run(_prepare(db.url, args.items))
        mid = args.items // 2
        pages = {
            "overview /": "/",
            "overview /api/overview (JSON)": "/api/overview",
            "items, no filter (first page)": "/items",
            "items ?status=dead_letter&error=timeout": "/items?status=dead_letter&error=timeout",
            "items ?status=dead_letter&error=<no match>": (
                "/items?status=dead_letter&error=no+such+error"
            ),
            "items ?type=plugin.tell&channel=den (deep)": (
                f"/items?type=plugin.tell&channel=den&before={mid}"
            ),
            "items ?plugin=quote&since=6h ago": "/items?plugin=quote&since="
            + urllib.parse.quote(
                time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 6 * 3600))
            ),
            "confirm requeue of dead letters with timeout": (
                "/actions/confirm?action=requeue&error=timeout"
            ),
        }
        try:
            trio.run(_bench, dsn, pages, args.reps)
        finally:
            asyncio.run(_drop(db.url))
        print(f"load: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
