"""The SQL gateway actor: one asyncpg pool for the process, on an asyncio loop of its own.

It serves `Query`, `Execute`, `ExecuteMany`, `Transaction` and `RunWithPool` requests
concurrently (bounded), each with a timeout; classifies errors as retryable or permanent;
publishes ``sql.query.failed`` / ``sql.exec.failed`` failure events (for observation: it
queues nothing; a caller that wants a write retried says so with an intent); keeps a circuit
breaker; and connects (and reconnects) with the shared backoff in the background, so the
gateway reports ready at once and nothing has to restart when PostgreSQL goes away.
Every request crosses the trio/asyncio bridge once, however many statements it runs: the
pool lives on a dedicated asyncio loop in a thread of the gateway's incarnation
(`daz_actors.storage.asyncio_thread`; issue 15 measured it cheaper than trio-asyncio's
hosted loop, see bench/README.md "The bridge"). The functions of `Transaction` and
`RunWithPool` requests run in that thread.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import asyncpg
import trio
from prometheus_client import CollectorRegistry, Counter, Histogram

from daz_actors.runtime.actor import ActorContext
from daz_actors.runtime.breaker import CircuitBreaker
from daz_actors.runtime.bus import EventBus
from daz_actors.runtime.events import FailureEvent, new_id
from daz_actors.runtime.kinds import BuildContext
from daz_actors.runtime.log_summary import RepeatedWarnings
from daz_actors.runtime.mailbox import Ask
from daz_actors.runtime.metric_once import metric_once
from daz_actors.storage.asyncio_thread import AsyncioThread, open_asyncio_thread
from daz_actors.storage.embedded_pg import redact_dsn
from daz_actors.storage.errors import CircuitOpen, DatabaseUnavailable, SqlError
from daz_actors.storage.gateway_params import GATEWAY_NAME as GATEWAY_NAME
from daz_actors.storage.gateway_params import SqlGatewayParams as SqlGatewayParams
from daz_actors.storage.sql_messages import (
    Execute,
    ExecuteMany,
    GatewayStatus,
    GetStatus,
    Query,
    RunWithPool,
    SqlRequest,
    Transaction,
)

__all__ = ["SqlGateway", "SqlGatewayParams", "build_sql_gateway"]

log = logging.getLogger("daz_actors.sql")
# one line per operation and error code per interval: an outage fails every call alike
failed_calls = RepeatedWarnings(log)

POOL_CLOSE_TIMEOUT = 5.0

# the `error_class` label of daz_sql_errors_total: a closed set, every series at 0 from
# the start (a label taken from whatever the driver raised added a series the first time
# each kind of error was seen, which a soak's flat series count cannot tell from a leak)
SQLSTATE_CLASSES = ("08", "22", "23", "40", "42", "53", "55", "57")  # counted apart
GATEWAY_CODES = ("timeout", "circuit_open", "database_unavailable")  # the gateway's own
ERROR_CLASSES = (*SQLSTATE_CLASSES, "sqlstate_other", *GATEWAY_CODES, "client", "unknown")


def error_class(code: str | None) -> str:
    """The `error_class` label of a failed call's code: its SQLSTATE class when one of
    `SQLSTATE_CLASSES`, ``sqlstate_other`` for another SQLSTATE, the gateway's own code
    (timed out, breaker open, not connected), ``client`` for an error of the client side
    named by its type (a lost connection, asyncpg's protocol or interface errors) and
    ``unknown`` for none."""
    if code is None:
        return "unknown"
    if code in GATEWAY_CODES:
        return code
    if len(code) == 5 and code.isalnum() and code.upper() == code:
        return code[:2] if code[:2] in SQLSTATE_CLASSES else "sqlstate_other"
    return "client"


async def _no_session_reset(_conn: Any) -> None:
    """The pool's reset on release: nothing beyond what asyncpg always does.

    asyncpg's default runs ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``
    on every release: a round trip per request (issue 15 measured 7.5% of the retry
    pipeline's Python time there). With a custom reset asyncpg still rolls back a
    transaction left open and drops the connection's listeners; requests through the
    gateway must leave no other session state (no session ``SET``, advisory session lock,
    ``LISTEN`` or ``WITH HOLD`` cursor: use ``SET LOCAL`` inside a transaction). The
    project's own requests leave none (migrations and LISTEN use their own connections).
    """


class GatewayRecord(asyncpg.Record):  # type: ignore[misc]
    """The rows the gateway's pool returns: an `asyncpg.Record` in all but its type.

    asyncpg keeps freed records on a free list per thread (up to 2,000 of each length
    under 20) and takes new ones from the free list of the thread that builds them. The
    pool's rows are built on the gateway's asyncio thread and freed on trio's, so trio's
    list only fills and the asyncio thread's stays empty: up to some 5 MB of records kept
    for nothing, and each ended thread's list is lost with it (the soak's growth, see
    bench/README.md "Soak"). asyncpg uses the free lists for its own class only; rows of a
    subclass are allocated and freed like any object.
    """

    __slots__ = ()


def _errors_counter(metrics: CollectorRegistry) -> Counter:
    counter = Counter(
        "daz_sql_errors",
        "Failed SQL gateway calls by error class (see ERROR_CLASSES) and retryability.",
        ["error_class", "retryable"],
        registry=metrics,
    )
    for name in ERROR_CLASSES:
        for retryable in ("true", "false"):
            counter.labels(name, retryable)
    return counter


def _describe(request: SqlRequest) -> tuple[str, str]:
    """(topic, operation label) of a request, for failure events and logs."""
    if isinstance(request, Query):
        return "sql.query.failed", "query"
    if isinstance(request, Execute | ExecuteMany):
        return "sql.exec.failed", "exec"
    if isinstance(request, Transaction | RunWithPool):
        return "sql.run.failed", request.name
    raise TypeError(f"the SQL gateway does not handle {type(request).__name__}")


def _event_type(request: SqlRequest) -> str:
    """``sql.exec``, ``sql.query`` or ``sql.run``: what failed, for observation.

    The gateway never queues anything behind its caller's back: the caller got the error
    and decides (a caller that wants a write retried publishes its own intent).
    """
    if isinstance(request, Query):
        return "sql.query"
    if isinstance(request, Execute | ExecuteMany):
        return "sql.exec"
    return "sql.run"


async def _run_on_pool(pool: Any, request: SqlRequest) -> Any:
    """The asyncio side of one request: everything here is one bridge crossing."""
    if isinstance(request, Query):
        return await pool.fetch(request.sql, *request.args)
    if isinstance(request, Execute):
        return await pool.execute(request.sql, *request.args)
    if isinstance(request, ExecuteMany):
        return await pool.executemany(request.sql, request.rows)
    if isinstance(request, Transaction):
        async with pool.acquire() as conn, conn.transaction():
            return await request.fn(conn)
    if isinstance(request, RunWithPool):
        return await request.fn(pool)
    raise TypeError(f"the SQL gateway does not handle {type(request).__name__}")


class SqlGateway:
    """The gateway's state; `__call__` runs one incarnation (it is a `Startable`)."""

    def __init__(
        self, params: SqlGatewayParams, dsn: str, *, metrics: CollectorRegistry | None = None
    ) -> None:
        self.params = params
        self._latency: Histogram | None = None
        self._errors: Counter | None = None
        self._latency_by_kind: dict[type, Any] = {}  # the histogram's child per request type
        if metrics is not None:  # shared by every gateway built on this registry
            self._latency = metric_once(
                metrics,
                "daz_sql_call_seconds",
                lambda: Histogram(
                    "daz_sql_call_seconds",
                    "Duration of SQL gateway calls that reached the database.",
                    ["kind"],
                    registry=metrics,
                ),
            )
            self._errors = metric_once(metrics, "daz_sql_errors", partial(_errors_counter, metrics))
        self._dsn = dsn
        self.database = redact_dsn(dsn)
        self.classifier = params.classifier()
        self.breaker = CircuitBreaker(params.breaker_policy())
        self._pool: Any = None
        self.calls = 0
        self.failures = 0
        self.in_flight = 0
        self.connected = trio.Event()  # set once a pool exists (per incarnation)
        self._bus: EventBus | None = None  # where failure events go (the incarnation's)
        self._background: trio.Nursery | None = None  # where they are published from
        self._bridge: AsyncioThread | None = None  # the pool's loop, while it runs
        self._name = GATEWAY_NAME

    def asyncio_tasks(self) -> int:
        """Tasks on this incarnation's asyncio loop (the pool's); 0 if none."""
        bridge = self._bridge
        return 0 if bridge is None else bridge.tasks()

    def status(self) -> GatewayStatus:
        """A snapshot of the gateway's state."""
        return GatewayStatus(
            connected=self._pool is not None,
            database=self.database,
            breaker=self.breaker.state,
            failure_ratio=self.breaker.failure_ratio(),
            breaker_transitions=self.breaker.transitions,
            calls=self.calls,
            failures=self.failures,
            in_flight=self.in_flight,
        )

    async def __call__(
        self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        ctx.idle = False  # an orderly stop lets in-flight calls finish
        self._bus, self._name = ctx.bus, ctx.name
        self.connected = trio.Event()
        limiter = trio.CapacityLimiter(self.params.max_concurrent_calls)
        async with (
            open_asyncio_thread(name=ctx.name) as bridge,
            trio.open_nursery() as background,
        ):
            self._bridge = bridge
            first_attempt = trio.Event()
            background.start_soon(self._keep_connected, bridge, first_attempt)
            # ready once the first connection attempt is over, whatever its outcome: the
            # actors started after this one find a pool if the database is up
            await first_attempt.wait()
            task_status.started()
            async with trio.open_nursery() as calls:
                with trio.CancelScope() as accepting:
                    background.start_soon(self._stop_accepting, ctx, accepting)
                    self._background = background
                    while True:
                        # capacity first: a stop never finds a request taken but not served
                        slot = object()
                        await limiter.acquire_on_behalf_of(slot)
                        item = await ctx.mailbox.get()
                        message = item.message if isinstance(item, Ask) else item
                        if isinstance(message, GetStatus):
                            limiter.release_on_behalf_of(slot)
                            if isinstance(item, Ask):
                                item.reply(self.status())
                            continue
                        calls.start_soon(self._serve, ctx, item, limiter, slot)
            background.cancel_scope.cancel()

    async def _stop_accepting(self, ctx: ActorContext, scope: trio.CancelScope) -> None:
        await ctx.stop_requested.wait()
        scope.cancel()

    async def _keep_connected(self, bridge: AsyncioThread, first_attempt: trio.Event) -> None:
        backoff = self.params.reconnect_backoff()
        attempt = 0
        try:
            while self._pool is None:
                try:
                    with trio.fail_after(self.params.connect_timeout * 2):
                        self._pool = await bridge.run(
                            partial(
                                asyncpg.create_pool,
                                self._dsn,
                                min_size=self.params.pool_min_size,
                                max_size=self.params.pool_max_size,
                                timeout=self.params.connect_timeout,
                                reset=_no_session_reset,
                                record_class=GatewayRecord,
                            )
                        )
                except Exception as exc:  # includes trio.TooSlowError
                    first_attempt.set()
                    delay = backoff.delay(attempt)
                    attempt += 1
                    log.warning(
                        "cannot connect to %s (attempt %d): %s; retrying in %.1f s",
                        self.database,
                        attempt,
                        exc,
                        delay,
                    )
                    await trio.sleep(delay)
            log.info("connected to %s", self.database)
            self.connected.set()
            first_attempt.set()
            await trio.sleep_forever()
        finally:
            pool, self._pool = self._pool, None
            if pool is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(POOL_CLOSE_TIMEOUT) as cs:
                    await bridge.run(pool.close)
                if cs.cancelled_caught:  # on the pool's loop, before the loop stops
                    bridge.loop.call_soon_threadsafe(pool.terminate)

    async def _serve(
        self, ctx: ActorContext, item: Any, limiter: trio.CapacityLimiter, slot: object
    ) -> None:
        ask = item if isinstance(item, Ask) else None
        request = item.message if ask is not None else item
        try:
            result = await self.call(request)
        except SqlError as exc:
            if ask is not None:
                ask.fail(exc)
        except Exception as exc:  # a bug in a caller's function: the caller gets it
            if ask is not None:
                ask.fail(exc)
            else:
                log.error("SQL request %s failed: %r", type(request).__name__, exc)
        except BaseException:
            if ask is not None:
                ask.fail(ctx.interrupted_error("stopped during the call"))
            raise
        else:
            if ask is not None:
                ask.reply(result)
        finally:
            limiter.release_on_behalf_of(slot)

    async def call(self, request: SqlRequest) -> Any:
        """Run one request with its timeout, breaker, classification and failure event."""
        if not isinstance(request, SqlRequest):
            raise TypeError(f"the SQL gateway does not handle {type(request).__name__}")
        topic, operation = _describe(request)
        timeout = request.timeout if request.timeout is not None else self.params.call_timeout
        self.calls += 1
        failed_calls.flush_due()  # the count of a burst of failures that is over
        now = trio.current_time()
        if not self.breaker.allow(now):
            error: SqlError = CircuitOpen(
                f"{operation} refused: circuit breaker open for {self.database}",
                retry_after=self.breaker.retry_after(now),
            )
            self._failed(request, topic, operation, error)
            raise error
        pool, bridge = self._pool, self._bridge
        if pool is None or bridge is None:
            self.breaker.record_failure(now)
            error = DatabaseUnavailable(f"{operation} failed: not connected to {self.database}")
            self._failed(request, topic, operation, error)
            raise error
        self.in_flight += 1
        started = trio.current_time()
        try:
            with trio.fail_after(timeout):
                result = await bridge.run(_run_on_pool, pool, request)
        except trio.TooSlowError:
            error = SqlError(
                f"{operation} timed out after {timeout:g} s", retryable=True, code="timeout"
            )
        # InternalClientError: the client's protocol state broke, typically a connection
        # cut or a call cancelled mid-statement ("cannot switch to state 12; another
        # operation (2) is in progress" when PostgreSQL shuts down); the pool drops that
        # connection. A failed call like the others, never an exception that crashes the
        # caller (a retry worker would leave its items leased until the lock timeout)
        except (
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
            OSError,
        ) as exc:
            verdict = self.classifier.classify(exc)
            error = SqlError(
                f"{operation} failed: {type(exc).__name__}: {exc}",
                retryable=verdict.retryable,
                code=verdict.code,
            )
            error.__cause__ = exc
        except BaseException:
            self.breaker.record_cancelled()
            raise
        else:
            self.breaker.record_success(trio.current_time())
            return result
        finally:
            self.in_flight -= 1
            if self._latency is not None:
                kind = type(request)
                child = self._latency_by_kind.get(kind)
                if child is None:  # `labels()` takes a lock and builds a key: once per kind
                    child = self._latency_by_kind[kind] = self._latency.labels(
                        kind.__name__.lower()
                    )
                child.observe(trio.current_time() - started)
        if error.retryable:
            self.breaker.record_failure(trio.current_time())
        else:  # the database answered: it is healthy, the request was wrong
            self.breaker.record_success(trio.current_time())
        self._failed(request, topic, operation, error)
        raise error

    def _failed(self, request: SqlRequest, topic: str, operation: str, error: SqlError) -> None:
        """Count and log the failure and publish its event without delaying the caller's
        answer.

        (Publishing inline could wait on a full BLOCK subscriber, such as the retry capture,
        while that subscriber waits for this very answer.)
        """
        if self._errors is not None:
            self._errors.labels(error_class(error.code), str(error.retryable).lower()).inc()
        self.failures += 1
        failed_calls.warning(
            f"{operation} {error.code}",
            "%s failed (%s, %s, correlation %s): %s",
            operation,
            error.code,
            "retryable" if error.retryable else "permanent",
            request.correlation_id,
            error,
        )
        if self._bus is not None and self._background is not None:
            self._background.start_soon(
                self._bus.publish,
                topic,
                FailureEvent(
                    topic=topic,
                    source=self._name,
                    operation="sql_operation",
                    event_type=_event_type(request),
                    error=str(error),
                    error_code=error.code,
                    retryable=error.retryable,
                    correlation_id=request.correlation_id,
                    event_id=request.event_id or new_id(),
                ),
            )


def build_sql_gateway(params: SqlGatewayParams, ctx: BuildContext) -> SqlGateway:
    """Factory of the ``sql-gateway`` kind: needs the ``database_url`` resource."""
    try:
        dsn = ctx.resources["database_url"]
    except KeyError:
        raise RuntimeError(
            "the sql-gateway actor needs the 'database_url' resource; "
            "run the tree with `daz-actors run`, which provides it"
        ) from None
    return SqlGateway(params, dsn, metrics=ctx.resources.get("metrics_registry"))
