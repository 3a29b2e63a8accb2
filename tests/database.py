"""Real PostgreSQL for integration tests.

* ``pg_server`` (session): the embedded server in a temporary directory, or the server of
  ``DAZ_TEST_DATABASE_URL``; stopped at the end if these tests started it.
* ``pg_template`` (session): a database migrated once, the template of every test database.
* ``pg`` (per test): a fresh migrated database cloned from the template (``CREATE DATABASE
  ... TEMPLATE``, milliseconds), dropped afterwards. ``pg.run(fn)`` runs ``await fn(conn)``
  on asyncio with a new asyncpg connection; ``async with pg.trio_connection() as conn`` opens
  a trio-asyncio loop and a connection for trio tests (``await conn.call(fn, *args)`` crosses
  the bridge once).
* ``pg_empty`` (per test): a fresh database with no migrations applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import attrs
import pytest
import trio_asyncio

from daz_actors.storage.embedded_pg import start_embedded
from daz_actors.storage.migrations import migrate

T = TypeVar("T")

TEST_URL_ENV = "DAZ_TEST_DATABASE_URL"


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database on the same server."""
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@attrs.frozen
class TrioConnection:
    """An asyncpg connection on a trio-asyncio loop, used from trio."""

    conn: Any

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``await fn(conn, *args, **kwargs)`` on asyncio: one bridge crossing."""
        result: T = await trio_asyncio.aio_as_trio(fn)(self.conn, *args, **kwargs)
        return result


@attrs.frozen
class TestDatabase:
    """A throwaway database of the session's server."""

    __test__ = False  # not a test class, whatever its name says

    # DSN of this database
    dsn: str
    # its name
    name: str

    def run(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``await fn(conn)`` in a fresh asyncio loop with a new connection to this database."""

        async def main() -> T:
            conn = await asyncpg.connect(self.dsn)
            try:
                return await fn(conn)
            finally:
                await conn.close()

        return asyncio.run(main())

    @contextlib.asynccontextmanager
    async def trio_connection(self) -> AsyncIterator[TrioConnection]:
        """From a trio test: a connection to this database on a trio-asyncio loop.

        Opens the loop unless one is already open (so connections can nest).
        """
        async with contextlib.AsyncExitStack() as stack:
            if trio_asyncio.current_loop.get() is None:
                await stack.enter_async_context(trio_asyncio.open_loop())
            conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(self.dsn)
            try:
                yield TrioConnection(conn)
            finally:
                await trio_asyncio.aio_as_trio(conn.close)()


@attrs.frozen
class PgServer:
    """The session's PostgreSQL server."""

    # DSN of the maintenance database (postgres), used to create and drop databases
    admin_dsn: str

    @contextlib.contextmanager
    def database(self, *, template: str | None = None) -> Iterator[TestDatabase]:
        """A new database (cloned from ``template`` if given), dropped on exit."""
        name = f"daz_test_{uuid.uuid4().hex[:12]}"
        clone = f" TEMPLATE {template}" if template else ""
        asyncio.run(_admin(self.admin_dsn, f"CREATE DATABASE {name}{clone}"))
        try:
            yield TestDatabase(dsn=with_database(self.admin_dsn, name), name=name)
        finally:
            asyncio.run(_admin(self.admin_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session-wide PostgreSQL: ``DAZ_TEST_DATABASE_URL`` or an embedded server.

    The embedded cluster lives in its own temporary directory, not under pytest's basetemp:
    run as root, PostgreSQL runs as the ``pgserver`` user and must traverse the directories
    above its cluster, and every new pytest session resets ``/tmp/pytest-of-<user>`` to 0700
    (which kills a server running below it in a concurrent session).
    """
    url = os.environ.get(TEST_URL_ENV)
    if url:
        yield PgServer(admin_dsn=url)
        return
    data_dir = Path(tempfile.mkdtemp(prefix="daz-test-pg-"))
    try:
        yield from _embedded(data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _embedded(data_dir: Path) -> Iterator[PgServer]:
    server = start_embedded(data_dir)
    # a throwaway cluster: durability costs only time here (CREATE DATABASE flushes a lot)
    asyncio.run(
        _admin(
            server.url,
            "ALTER SYSTEM SET fsync = off",
            "ALTER SYSTEM SET full_page_writes = off",
            "SELECT pg_reload_conf()",
        )
    )
    try:
        yield PgServer(admin_dsn=server.url)
    finally:
        server.stop()


@pytest.fixture
def own_server() -> Iterator[Any]:
    """An embedded PostgreSQL of this test's own, so the test can stop and start it
    (``own_server.handle.stop()`` / ``.start()``; ``own_server.url``)."""
    data_dir = Path(tempfile.mkdtemp(prefix="daz-own-pg-"))
    server = start_embedded(data_dir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> Iterator[str]:
    """Name of a database with every migration applied, cloned by each test."""
    with pg_server.database() as template:

        async def apply(conn: Any) -> None:
            await migrate(conn)

        template.run(apply)
        yield template.name


@pytest.fixture
def pg(pg_server: PgServer, pg_template: str) -> Iterator[TestDatabase]:
    """A fresh, migrated database for one test."""
    with pg_server.database(template=pg_template) as database:
        yield database


@pytest.fixture
def pg_empty(pg_server: PgServer) -> Iterator[TestDatabase]:
    """A fresh database without any migration applied."""
    with pg_server.database() as database:
        yield database
