"""The retry pipeline end to end, beside two baselines measured in the same run.

    python -m bench.retry [--database-url URL] [--items 5000] [--rounds 2] [--quick]

Throughput (jobs/s, no-op handler) for 1 and 4 workers with batch 10 and 50, three ways,
against the same PostgreSQL (embedded by default, default durability: fsync on):

- ``daz end to end``: the REAL retry subtree (`build_retry`: capture, dispatcher with its
  LISTEN connection, workers) beside the SQL gateway actor, in one ``trio.run``, with a
  metrics registry as the application gives them (attempt and call histograms); the items
  are made due all at once and announced with one NOTIFY; the clock stops when the
  workers' completions of every item have been written.
- ``project SQL on asyncio``: plain asyncpg on asyncio running the project's own SQL, one
  pool connection per worker, rows read but not built into `QueueItem`, two ways: the call
  the workers make (``daz_complete_and_acquire``: the completions of a batch with the claim
  of the next, one round trip and one commit per batch; column ``proj 1call``), and the
  two separate functions (``acquire_retry_items`` then ``complete_retry_items``; column
  ``proj 2call``, the baseline of the first figures in bench/README.md).
- ``minimal queue on asyncio``: plain asyncpg on asyncio, a two-column queue table: claim
  with ``FOR UPDATE SKIP LOCKED`` in a materialized CTE, then one batched ``UPDATE ... done``.

The baselines run on asyncio's own selector loop (`bench.plain_asyncio`: once trio-asyncio
is imported, ``asyncio.run`` would run them on trio-asyncio's loop, as it did before issue
15's fourth session). Each figure is the best of ``--rounds`` rounds; the sides alternate
within a round so they see the same machine noise. Ratios are daz / baseline.

CPU per job, each side's least over the rounds: this process's (the client: asyncpg, and
for daz the actors, trio and the bridge) and PostgreSQL's (every process of the server's
postmaster, read from /proc over the timed window: only for a server on this machine).
On a shared 2-core machine the throughput follows the other load; CPU per job much less,
and when the cores are the bottleneck the throughput ratio tends to the CPU ratio.

Wake-up latency: the subtree idle (4 workers, default batch), one item enqueued at a time
from another connection; the time from the enqueue's commit (its INSERT returned) to the
handler starting, median and p99; the next item is enqueued once the previous one's
completion was written.

The `daz_actors` loggers are silenced (CRITICAL) on every side: `daz-actors run` logs at
INFO, where the workers write one line per success, which costs about as much client CPU
again as the rest of the pipeline (bench/README.md, issue 15's fourth session).

The last lines give the machine's load average and the share of one core this process got.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import attrs
import trio
import trio_asyncio
from prometheus_client import CollectorRegistry

from bench.machine_load import LoadReport, process_cpu
from bench.plain_asyncio import run_plain
from bench.queue import make_items, raw_columns, setup, teardown
from daz_actors.app.builtin_kinds import default_kinds
from daz_actors.app.config import load_config
from daz_actors.retry.handlers import AttemptContext, HandlerRegistry
from daz_actors.retry.kind import RetryParams, build_retry
from daz_actors.retry.worker import RetryWorker
from daz_actors.runtime.bus import EventBus
from daz_actors.runtime.kinds import BuildContext
from daz_actors.runtime.registry import Registry
from daz_actors.runtime.supervision_policy import Strategy, SupervisorPolicy
from daz_actors.runtime.supervisor import ChildSpec, Supervisor
from daz_actors.storage import queue
from daz_actors.storage.embedded_pg import open_database, redact_dsn
from daz_actors.storage.queue_types import NewItem, QueueItem
from daz_actors.storage.sql_gateway import SqlGateway, SqlGatewayParams
from daz_actors.testing import open_tree

WORKERS = (1, 4)
BATCHES = (10, 50)
EVENT_TYPE = "bench.noop"
LOCK_TIMEOUT = 300.0

MINIMAL_TABLE = """
CREATE TABLE IF NOT EXISTS bench_minimal_jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending'
);
CREATE INDEX IF NOT EXISTS bench_minimal_pending ON bench_minimal_jobs (id)
    WHERE status = 'pending';
"""
MINIMAL_CLAIM = """
WITH c AS MATERIALIZED (
    SELECT id FROM bench_minimal_jobs WHERE status = 'pending'
    ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
UPDATE bench_minimal_jobs j SET status = 'running' FROM c WHERE j.id = c.id
RETURNING j.id, j.payload
"""
MINIMAL_DONE = "UPDATE bench_minimal_jobs SET status = 'done' WHERE id = ANY($1::bigint[])"
ACQUIRE_SQL = "SELECT * FROM acquire_retry_items($1, $2, $3)"
COMPLETE_AND_ACQUIRE_SQL = (
    "SELECT completed_ids, item FROM daz_complete_and_acquire($1, $2, $3, $4, $5)"
)
COMPLETE_SQL = "SELECT complete_retry_items($1::bigint[], $2, $3::uuid[]) AS id"


# ---- measuring --------------------------------------------------------------------------


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state first)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()


@attrs.frozen
class ServerCpu:
    """CPU seconds used by one local PostgreSQL server's processes, read from /proc."""

    postmaster: int  # pid of the server's postmaster

    @classmethod
    async def find(cls, dsn: str) -> ServerCpu | None:
        """The server behind `dsn` if it runs on this machine and /proc shows it, else None."""
        conn = await asyncpg.connect(dsn)
        try:
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            return cls(postmaster=int(_proc_stat(backend)[1]))  # while the backend lives
        except (OSError, ValueError, IndexError):
            return None
        finally:
            await conn.close()

    def snapshot(self) -> dict[int, float]:
        """CPU seconds so far of each live process of the server (postmaster, backends,
        WAL writer, ...)."""
        seen: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = _proc_stat(int(entry.name))
            except (OSError, IndexError):
                continue  # exited meanwhile
            if int(entry.name) == self.postmaster or int(fields[1]) == self.postmaster:
                seen[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _TICK
        return seen

    @staticmethod
    def used(before: dict[int, float], after: dict[int, float]) -> float:
        """CPU seconds between two snapshots (a process started between them counts whole;
        one that ended between them is missed)."""
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


@attrs.frozen
class Run:
    """One timed run of one side."""

    jobs: int
    seconds: float
    client_cpu: float  # this process's CPU seconds in the window
    server_cpu: float | None  # PostgreSQL's, None when not measurable

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


class Window:
    """Wall time and CPU (this process, the server) between `start` and `stop`."""

    def __init__(self, server: ServerCpu | None) -> None:
        self.server = server

    def start(self) -> None:
        self._server0 = self.server.snapshot() if self.server is not None else {}
        self._cpu0 = process_cpu()
        self._t0 = time.perf_counter()

    def stop(self, jobs: int) -> Run:
        seconds = time.perf_counter() - self._t0
        client = process_cpu() - self._cpu0
        server = (
            ServerCpu.used(self._server0, self.server.snapshot())
            if self.server is not None
            else None
        )
        return Run(jobs=jobs, seconds=seconds, client_cpu=client, server_cpu=server)


# ---- preparing the tables ------------------------------------------------------------------


async def _reset_queue(dsn: str, count: int, *, due: bool) -> None:
    """Empty the queue, then `count` items (due now, or due in a day), vacuumed."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE daz_retry_queue, daz_retry_history RESTART IDENTITY")
        items = [attrs.evolve(i, event_type=EVENT_TYPE) for i in make_items("r", count)]
        for start in range(0, count, 1000):
            await conn.fetch(queue._ENQUEUE_MANY, *raw_columns(items[start : start + 1000]))
        if not due:
            await conn.execute(
                "UPDATE daz_retry_queue SET next_retry_at = now() + interval '1 day'"
            )
        await conn.execute("VACUUM ANALYZE daz_retry_queue")
        await conn.execute("VACUUM ANALYZE daz_retry_history")
    finally:
        await conn.close()


async def _make_due(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE daz_retry_queue SET next_retry_at = now()")
        await conn.execute("VACUUM ANALYZE daz_retry_queue")
    finally:
        await conn.close()


async def _reset_minimal(dsn: str, count: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(MINIMAL_TABLE)
        await conn.execute("TRUNCATE bench_minimal_jobs RESTART IDENTITY")
        await conn.execute(
            "INSERT INTO bench_minimal_jobs (payload) "
            "SELECT jsonb_build_object('n', n, 'text', 'hello') FROM generate_series(1, $1) n",
            count,
        )
        await conn.execute("VACUUM ANALYZE bench_minimal_jobs")
    finally:
        await conn.close()


# ---- baselines: asyncpg on asyncio ---------------------------------------------------------


def _aio_workers(
    dsn: str, workers: int, loop_body: Callable[[Any, int], Any], server: ServerCpu | None
) -> Run:
    async def main() -> Run:
        pool = await asyncpg.create_pool(dsn, min_size=workers, max_size=workers)
        try:
            window = Window(server)
            window.start()
            done = await asyncio.gather(*(loop_body(pool, n) for n in range(workers)))
            return window.stop(sum(done))
        finally:
            await pool.close()

    return run_plain(main())


def minimal_rate(
    dsn: str, workers: int, batch: int, count: int, server: ServerCpu | None = None
) -> Run:
    asyncio.run(_reset_minimal(dsn, count))

    async def body(pool: Any, _n: int) -> int:
        done = 0
        async with pool.acquire() as conn:
            while rows := await conn.fetch(MINIMAL_CLAIM, batch):
                for row in rows:  # the no-op handler sees each job
                    _ = row["payload"]
                await conn.execute(MINIMAL_DONE, [r["id"] for r in rows])
                done += len(rows)
        return done

    return _aio_workers(dsn, workers, body, server)


def project_sql_rate(
    dsn: str, workers: int, batch: int, count: int, server: ServerCpu | None = None
) -> Run:
    """The project's two functions, one call each per batch (two round trips, two commits)."""
    asyncio.run(_reset_queue(dsn, count, due=False))
    asyncio.run(_make_due(dsn))  # the same table state as the end-to-end run

    async def body(pool: Any, n: int) -> int:
        done = 0
        worker = f"aio-{n}"
        async with pool.acquire() as conn:
            while rows := await conn.fetch(ACQUIRE_SQL, worker, batch, LOCK_TIMEOUT):
                for row in rows:
                    _ = row["event_data"]
                await conn.fetch(
                    COMPLETE_SQL, [r["id"] for r in rows], worker, [r["lock_token"] for r in rows]
                )
                done += len(rows)
        return done

    return _aio_workers(dsn, workers, body, server)


def project_call_rate(
    dsn: str, workers: int, batch: int, count: int, server: ServerCpu | None = None
) -> Run:
    """The call the workers make: a batch's completions with the next claim, one round trip."""
    asyncio.run(_reset_queue(dsn, count, due=False))
    asyncio.run(_make_due(dsn))

    async def body(pool: Any, n: int) -> int:
        done = 0
        worker = f"aio-{n}"
        ids: list[int] = []
        tokens: list[Any] = []
        async with pool.acquire() as conn:
            while True:
                rows = await conn.fetch(
                    COMPLETE_AND_ACQUIRE_SQL, worker, ids, tokens, batch, LOCK_TIMEOUT
                )
                done += len(rows[0]["completed_ids"]) if rows else 0
                items = [item for row in rows if (item := row["item"]) is not None]
                if not items:
                    return done
                for item in items:
                    _ = item["event_data"]
                ids = [item["id"] for item in items]
                tokens = [item["lock_token"] for item in items]

    return _aio_workers(dsn, workers, body, server)


# ---- the project: the retry subtree --------------------------------------------------------


def _subtree(
    dsn: str, handlers: HandlerRegistry, workers: int, batch: int, data_dir: Path
) -> tuple[Supervisor, list[RetryWorker]]:
    config = attrs.evolve(load_config(None, default_kinds()), data_dir=data_dir)
    registry, bus = Registry(), EventBus()
    # as the application runs them: the workers observe each attempt's duration and the
    # gateway each call's (`app/runner.py` passes its registry the same way)
    metrics = CollectorRegistry()
    context = BuildContext(
        name="retry",
        config=config,
        registry=registry,
        bus=bus,
        resources={"database_url": dsn, "retry_handlers": handlers, "metrics_registry": metrics},
    )
    # a long poll interval: the NOTIFY is what starts the work (as for enqueued items)
    params = RetryParams(
        worker_count=workers, batch_size=batch, lock_timeout=LOCK_TIMEOUT, poll_interval=60.0
    )
    retry = build_retry(params, context)
    root = Supervisor(
        "storage",
        [
            ChildSpec(
                name="sql-gateway", start=SqlGateway(SqlGatewayParams(), dsn, metrics=metrics)
            ),
            ChildSpec(name="retry", start=retry, shutdown_timeout=None),
        ],
        policy=SupervisorPolicy(strategy=Strategy.REST_FOR_ONE),
        registry=registry,
        bus=bus,
    )
    found = [s for s in root.startables() if isinstance(s, RetryWorker)]
    return root, found


async def _until(predicate: Callable[[], bool], timeout: float, every: float = 0.001) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polling a counter with a deadline
            await trio.sleep(every)


def daz_rate(
    dsn: str,
    workers: int,
    batch: int,
    count: int,
    data_dir: Path,
    server: ServerCpu | None = None,
) -> Run:
    asyncio.run(_reset_queue(dsn, count, due=False))
    handlers = HandlerRegistry()

    @handlers.register(EVENT_TYPE)
    async def noop(item: QueueItem, ctx: AttemptContext) -> None:
        return None

    root, found = _subtree(dsn, handlers, workers, batch, data_dir)

    async def main() -> Run:
        async with trio_asyncio.open_loop(), open_tree(root):
            dispatcher = next(s for s in root.startables() if hasattr(s, "listening"))
            await _until(lambda: bool(dispatcher.listening), 30)
            await trio.sleep(0.2)  # let the start-up wake find nothing due and go idle
            await trio_asyncio.aio_as_trio(_make_due)(dsn)
            window = Window(server)
            window.start()
            conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(dsn)
            await trio_asyncio.aio_as_trio(conn.execute)(f"NOTIFY {queue.NOTIFY_CHANNEL}, '1'")
            await trio_asyncio.aio_as_trio(conn.close)()
            # polled every 20 ms: a finer poll costs this process CPU (counted as the daz
            # side's: at 5 ms, sampled, about 8% of the trio thread's time) for a precision
            # the seconds-long run does not need
            await _until(lambda: sum(w.stats.completed for w in found) >= count, 600, 0.02)
            return window.stop(count)

    return trio.run(main)


def wakeup_latency(dsn: str, samples: int, data_dir: Path) -> list[float]:
    asyncio.run(_reset_queue(dsn, 0, due=True))
    started: dict[str, float] = {}
    handlers = HandlerRegistry()

    @handlers.register(EVENT_TYPE)
    async def stamp(item: QueueItem, ctx: AttemptContext) -> None:
        started[item.event_id] = time.perf_counter()

    root, found = _subtree(dsn, handlers, 4, RetryParams().batch_size, data_dir)

    async def main() -> list[float]:
        latencies: list[float] = []
        async with trio_asyncio.open_loop(), open_tree(root):
            dispatcher = next(s for s in root.startables() if hasattr(s, "listening"))
            await _until(lambda: bool(dispatcher.listening), 30)
            conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(dsn)
            enqueue = trio_asyncio.aio_as_trio(queue.enqueue)
            try:
                for n in range(samples + 10):  # the first 10 warm up
                    event_id = f"wake-{n}"
                    await enqueue(conn, NewItem(event_id=event_id, event_type=EVENT_TYPE))
                    committed = time.perf_counter()
                    await _until(lambda n=n: sum(w.stats.completed for w in found) > n, 30)
                    if n >= 10:
                        latencies.append(started[event_id] - committed)
                    await trio.sleep(0.005)  # the workers go back to waiting
            finally:
                await trio_asyncio.aio_as_trio(conn.close)()
        return latencies

    return trio.run(main)


# ---- output -------------------------------------------------------------------------------


SIDES = ("minimal", "proj 2call", "proj 1call", "daz e2e")


def _us(seconds: float | None, jobs: int) -> str:
    return "-" if seconds is None else f"{seconds / jobs * 1e6:,.0f}"


def throughput(
    dsn: str, data_dir: Path, args: argparse.Namespace, server: ServerCpu | None
) -> None:
    """The throughput table, then the CPU per job of each side."""
    print(
        f"\nthroughput, {args.items} no-op items, best of {args.rounds} rounds (jobs/s)\n"
        f"{'workers':>7} {'batch':>5}" + "".join(f" {side:>10}" for side in SIDES)
        + f" {'daz/minimal':>11} {'daz/2call':>9} {'daz/1call':>9}"
    )  # fmt: skip
    cpu_lines = []
    for workers in args.workers:
        for batch in args.batches:
            runs: dict[str, list[Run]] = {side: [] for side in SIDES}
            for _ in range(args.rounds):
                runs["minimal"].append(minimal_rate(dsn, workers, batch, args.items, server))
                runs["proj 2call"].append(project_sql_rate(dsn, workers, batch, args.items, server))
                runs["proj 1call"].append(
                    project_call_rate(dsn, workers, batch, args.items, server)
                )
                runs["daz e2e"].append(daz_rate(dsn, workers, batch, args.items, data_dir, server))
            m, p2, p1, d = (max(r.rate for r in runs[side]) for side in SIDES)
            print(
                f"{workers:>7} {batch:>5} {m:>10,.0f} {p2:>10,.0f} {p1:>10,.0f} {d:>10,.0f}"
                f" {d / m:>11.2f} {d / p2:>9.2f} {d / p1:>9.2f}",
                flush=True,
            )
            cells = []
            for side in SIDES:
                client = min(r.client_cpu / r.jobs for r in runs[side])
                servers = [r.server_cpu / r.jobs for r in runs[side] if r.server_cpu is not None]
                server_us = f"{min(servers) * 1e6:,.0f}" if servers else "-"
                cells.append(f" {client * 1e6:>5,.0f} {server_us:>5}")
            cpu_lines.append(f"{workers:>7} {batch:>5}" + "".join(cells))
    print(
        "\nCPU per job, least of the rounds (us): client (this process) and PostgreSQL\n"
        f"{'workers':>7} {'batch':>5}" + "".join(f" {side:>11}" for side in SIDES)
    )  # fmt: skip
    print("\n".join(cpu_lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default=None, help="default: DAZ_DATABASE_URL, else embedded"
    )
    parser.add_argument("--items", type=int, default=5000, help="items per throughput run")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per figure (best kept)")
    parser.add_argument("--samples", type=int, default=300, help="wake-up latency samples")
    parser.add_argument("--quick", action="store_true", help="smoke run: too small for figures")
    parser.add_argument("--only", choices=("throughput", "latency"), default=None)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=list(WORKERS), help="worker counts to run"
    )
    parser.add_argument(
        "--batches", type=int, nargs="+", default=list(BATCHES), help="batch sizes to run"
    )
    args = parser.parse_args()
    if args.quick:
        args.items, args.rounds, args.samples = 500, 1, 30
    import logging

    logging.getLogger("daz_actors").setLevel(logging.CRITICAL)
    load = LoadReport()
    with (
        tempfile.TemporaryDirectory(prefix="daz-bench-") as tmp,
        open_database(args.database_url, data_dir=Path(tmp) / "pg") as db,
    ):
        print(f"database: {redact_dsn(db.url)} ({db.source.value})")
        dsn = asyncio.run(setup(db.url))
        data_dir = Path(tmp) / "data"
        server = asyncio.run(ServerCpu.find(dsn))
        if args.only in (None, "throughput"):
            throughput(dsn, data_dir, args, server)
        if args.only in (None, "latency"):
            lat = sorted(wakeup_latency(dsn, args.samples, data_dir))
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            print(
                f"\nwake-up latency, enqueue commit to handler start, 4 idle workers, "
                f"{len(lat)} samples: median {statistics.median(lat) * 1000:.2f} ms, "
                f"p99 {p99 * 1000:.2f} ms (targets: 3 ms, 10 ms)"
            )
        asyncio.run(teardown(db.url))
    load.end()


if __name__ == "__main__":
    main()
