"""The lease keeper's own connections to PostgreSQL (not the SQL gateway's pool).

Heartbeats and renewals must not queue behind the chat log's writes: under load a
renewal stuck in the gateway's pool would make a node leave channels it holds for no
reason (and the churn adds load). So the keeper has a small pool of its own (two
connections: a tick and a release may overlap) on its trio-asyncio loop; each call is
one transaction and crosses the bridge once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import trio
import trio_asyncio

from daz_actors.runtime.errors import DazActorsError
from daz_actors.storage.embedded_pg import redact_dsn

__all__ = ["DB_FAILED", "ClusterDb", "ClusterDbError"]

T = TypeVar("T")


class ClusterDbError(DazActorsError, ConnectionError):
    """A cluster statement did not go through (the database is unreachable or slow)."""


DB_FAILED: tuple[type[Exception], ...] = (ClusterDbError,)


class ClusterDb:
    """A two-connection pool, opened on first use and again after it broke."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool: Any = None

    async def _open(self) -> Any:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=2, timeout=10, command_timeout=30
            )
        return self._pool

    async def _run(self, fn: Callable[[Any], Awaitable[T]], timeout: float) -> T:
        async def call() -> T:
            pool = await self._open()
            async with pool.acquire() as conn, conn.transaction():
                return await fn(conn)

        return await asyncio.wait_for(call(), timeout)

    async def transaction(
        self, fn: Callable[[Any], Awaitable[T]], *, name: str, timeout: float
    ) -> T:
        """``await fn(conn)`` in a transaction within `timeout` s; `ClusterDbError` if not."""
        try:
            with trio.fail_after(timeout + 1):  # beside asyncio's own deadline
                result: T = await trio_asyncio.aio_as_trio(self._run)(fn, timeout)
                return result
        except (
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            TimeoutError,
            trio.TooSlowError,
        ) as exc:
            reason = str(exc) or type(exc).__name__
            raise ClusterDbError(f"{name} on {redact_dsn(self.dsn)}: {reason}") from None

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with trio.move_on_after(2):
                await trio_asyncio.aio_as_trio(pool.close)()
