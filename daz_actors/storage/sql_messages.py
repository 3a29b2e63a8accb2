"""Requests to the SQL gateway, its status, and the typed client other actors use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import attrs

from daz_actors.runtime.breaker import BreakerState
from daz_actors.runtime.errors import ActorCrashed, ActorStopped, AskTimeout
from daz_actors.runtime.events import new_id
from daz_actors.runtime.ref import ActorRef
from daz_actors.storage.errors import SqlError

__all__ = [
    "CALL_FAILED",
    "Execute",
    "ExecuteMany",
    "GatewayStatus",
    "GetStatus",
    "Query",
    "RunWithPool",
    "SqlClient",
    "SqlRequest",
    "Transaction",
]

T = TypeVar("T")

# What a call through the gateway raises when it did not succeed: the database's error
# (`SqlError`, incl. the breaker's), no answer in time, or the gateway stopped or crashed
# meanwhile (it is restarted by its supervisor). Catch these, not just SqlError.
CALL_FAILED: tuple[type[Exception], ...] = (SqlError, AskTimeout, ActorStopped, ActorCrashed)

ASK_MARGIN = 5.0  # seconds an ask waits beyond the call's own timeout


@attrs.frozen(kw_only=True)
class SqlRequest:
    """Fields every gateway call has."""

    timeout: float | None = None  # seconds; None: the gateway's default call timeout
    correlation_id: str = attrs.field(factory=new_id)  # carried into failure events
    event_id: str | None = None  # the id of the operation, carried into its failure event


@attrs.frozen(kw_only=True)
class Query(SqlRequest):
    """Fetch rows: the reply is a list of asyncpg records."""

    sql: str
    args: tuple[Any, ...] = ()


@attrs.frozen(kw_only=True)
class Execute(SqlRequest):
    """Run one statement: the reply is the status string (``"INSERT 0 1"``)."""

    sql: str
    args: tuple[Any, ...] = ()


@attrs.frozen(kw_only=True)
class ExecuteMany(SqlRequest):
    """Run one statement for each row of arguments, in one round trip."""

    sql: str
    rows: tuple[tuple[Any, ...], ...]


@attrs.frozen(kw_only=True)
class Transaction(SqlRequest):
    """Run ``await fn(connection)`` (an asyncio coroutine function) inside a transaction.

    The whole function runs on the asyncio side: the trio/asyncio bridge is crossed once,
    however many statements it runs.
    """

    fn: Callable[[Any], Awaitable[Any]]
    name: str = "transaction"  # names the operation in logs and failure events


@attrs.frozen(kw_only=True)
class RunWithPool(SqlRequest):
    """Run ``await fn(pool)`` (an asyncio coroutine function) with the asyncpg pool."""

    fn: Callable[[Any], Awaitable[Any]]
    name: str = "run"  # names the operation in logs and failure events


@attrs.frozen
class GetStatus:
    """Ask the gateway for its `GatewayStatus` (answered without touching the database)."""


@attrs.frozen(kw_only=True)
class GatewayStatus:
    """What the gateway knows about the database right now."""

    connected: bool  # a pool exists
    database: str  # the URL with any password redacted
    breaker: BreakerState
    failure_ratio: float  # in the breaker's window
    breaker_transitions: int  # state changes so far
    calls: int  # calls handled
    failures: int  # calls that failed
    in_flight: int  # calls running now


class SqlClient:
    """Typed calls to the SQL gateway through its ref.

    Errors: `SqlError` (with ``retryable`` and ``code``), `CircuitOpen` and
    `DatabaseUnavailable` (both retryable); `AskTimeout` only if the gateway itself
    does not answer.
    """

    def __init__(self, ref: ActorRef, *, default_timeout: float = 15.0) -> None:
        self.ref = ref
        self.default_timeout = default_timeout

    async def _call(self, request: SqlRequest) -> Any:
        timeout = request.timeout if request.timeout is not None else self.default_timeout
        return await self.ref.ask(request, timeout=timeout + ASK_MARGIN)

    async def query(self, sql: str, *args: Any, timeout: float | None = None) -> list[Any]:
        """Rows of `sql` (asyncpg records, indexable by column name)."""
        rows: list[Any] = await self._call(Query(sql=sql, args=args, timeout=timeout))
        return rows

    async def query_value(self, sql: str, *args: Any, timeout: float | None = None) -> Any:
        """The first column of the first row, or None when there is no row."""
        rows = await self.query(sql, *args, timeout=timeout)
        return rows[0][0] if rows else None

    async def execute(
        self,
        sql: str,
        *args: Any,
        timeout: float | None = None,
        event_id: str | None = None,
        correlation_id: str | None = None,
    ) -> str:
        """Run one statement; its status string.

        `event_id` names the write in its failure event and log line. Nothing is queued
        when it fails: the caller gets the error (and may queue an intent of its own).
        """
        request = Execute(sql=sql, args=args, timeout=timeout, event_id=event_id)
        if correlation_id:
            request = attrs.evolve(request, correlation_id=correlation_id)
        status: str = await self._call(request)
        return status

    async def executemany(
        self,
        sql: str,
        rows: Sequence[Sequence[Any]],
        *,
        timeout: float | None = None,
        event_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Run `sql` once per row, in one round trip (`event_id` as for `execute`)."""
        request = ExecuteMany(
            sql=sql, rows=tuple(tuple(r) for r in rows), timeout=timeout, event_id=event_id
        )
        if correlation_id:
            request = attrs.evolve(request, correlation_id=correlation_id)
        await self._call(request)

    async def transaction(
        self,
        fn: Callable[[Any], Awaitable[T]],
        *,
        name: str = "transaction",
        timeout: float | None = None,
    ) -> T:
        """``await fn(conn)`` on asyncio inside a transaction; its result."""
        result: T = await self._call(Transaction(fn=fn, name=name, timeout=timeout))
        return result

    async def run(
        self, fn: Callable[[Any], Awaitable[T]], *, name: str = "run", timeout: float | None = None
    ) -> T:
        """``await fn(pool)`` on asyncio; its result."""
        result: T = await self._call(RunWithPool(fn=fn, name=name, timeout=timeout))
        return result

    async def status(self) -> GatewayStatus:
        """The gateway's status (connection, breaker)."""
        status: GatewayStatus = await self.ref.ask(GetStatus(), timeout=self.default_timeout)
        return status
