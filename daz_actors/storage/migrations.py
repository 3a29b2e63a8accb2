"""Versioned SQL migrations: ``schema/NNNN_name.up.sql`` with its ``NNNN_name.down.sql``.

Applied versions are recorded in ``daz_schema_migrations``. A run (`migrate` or `rollback`)
holds a session advisory lock, so two processes starting at once apply each migration once:
the second waits, then finds the work done. Each migration runs in its own transaction,
statement by statement, so a failure rolls that migration back whole and the error names the
file and the statement (its number and first line).

A plugin's migrations are a sequence of their own (``plugin="tell"``): numbered from 1 in the
plugin's folder, recorded in ``daz_plugin_migrations`` (plugin, version; core migration
0011), applied and rolled back apart from the core's and from other plugins'.

These are asyncio coroutines over one asyncpg connection; from trio, call each through
``trio_asyncio.aio_as_trio`` once.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import attrs

from daz_actors.storage.errors import MigrationError

__all__ = [
    "AppliedMigration",
    "Migration",
    "MigrationError",
    "MigrationStatus",
    "default_source",
    "load_migrations",
    "migrate",
    "migration_lock",
    "rollback",
    "split_sql",
    "status",
]

# pg_advisory_lock key: the bytes "dazmigr" as a number, so it collides with nothing else
ADVISORY_LOCK_KEY = 0x64617A6D696772

_FILE_NAME = re.compile(r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9_\-]+)\.(?P<dir>up|down)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS daz_schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@attrs.frozen(kw_only=True)
class Migration:
    """One numbered migration and its rollback."""

    # the number in the file name; applied in increasing order
    version: int
    # the rest of the file name, e.g. "retry_queue"
    name: str
    # file name of the forward script
    up_file: str
    # text of the forward script
    up_sql: str = attrs.field(repr=False)
    # file name of the rollback script
    down_file: str
    # text of the rollback script
    down_sql: str = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class AppliedMigration:
    """A row of ``daz_schema_migrations``."""

    # migration version
    version: int
    # migration name
    name: str
    # when it was applied
    applied_at: datetime


@attrs.frozen(kw_only=True)
class MigrationStatus:
    """Which migrations are applied and which are waiting."""

    # rows of daz_schema_migrations, by version
    applied: tuple[AppliedMigration, ...]
    # known migrations not yet applied, by version
    pending: tuple[Migration, ...]
    # applied versions with no file here (the database is newer than this code)
    unknown: tuple[int, ...]

    @property
    def current_version(self) -> int:
        """The highest applied version, 0 for none."""
        return max((m.version for m in self.applied), default=0)


MigrationSource = Path | Traversable


def default_source() -> Traversable:
    """The migrations folder: ``daz_actors/schema`` when installed, else the repo's ``schema/``.

    A wheel carries the top-level ``schema/`` folder as ``daz_actors/schema`` (hatchling
    force-include); an editable install or a checkout has it next to the package.
    """
    packaged = importlib.resources.files("daz_actors").joinpath("schema")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "schema"


def load_migrations(source: MigrationSource | None = None) -> tuple[Migration, ...]:
    """Read every migration in ``source`` (default `default_source`), sorted by version.

    Raises `MigrationError` for a duplicate version, an up file without its down file (or
    the reverse), or a name that does not follow ``NNNN_name.(up|down).sql``.
    """
    folder = default_source() if source is None else source
    if not folder.is_dir():
        raise MigrationError(f"migrations folder {folder} does not exist")
    found: dict[int, dict[str, tuple[str, str, str]]] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(
                f"migration file {entry.name!r} is not named NNNN_name.up.sql / NNNN_name.down.sql",
                file=entry.name,
            )
        version = int(match["version"])
        slot = found.setdefault(version, {})
        if match["dir"] in slot:
            raise MigrationError(
                f"two migration files for version {version} ({match['dir']}): "
                f"{slot[match['dir']][0]!r} and {entry.name!r}",
                file=entry.name,
            )
        slot[match["dir"]] = (entry.name, match["name"], entry.read_text(encoding="utf-8"))
    migrations = []
    for version in sorted(found):
        slot = found[version]
        if "up" not in slot or "down" not in slot:
            have = next(iter(slot.values()))[0]
            missing = "up" if "up" not in slot else "down"
            raise MigrationError(
                f"migration {version} has {have!r} but no {missing} file", file=have
            )
        up_file, up_name, up_sql = slot["up"]
        down_file, down_name, down_sql = slot["down"]
        if up_name != down_name:
            raise MigrationError(
                f"migration {version}: {up_file!r} and {down_file!r} disagree on the name",
                file=down_file,
            )
        if version <= 0:
            raise MigrationError(f"migration versions start at 1: {up_file!r}", file=up_file)
        migrations.append(
            Migration(
                version=version,
                name=up_name,
                up_file=up_file,
                up_sql=up_sql,
                down_file=down_file,
                down_sql=down_sql,
            )
        )
    return tuple(migrations)


_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$")


def split_sql(script: str) -> list[str]:
    """Split a SQL script into statements at top-level semicolons.

    Semicolons inside quotes (``'...'``, ``"..."``, ``E'...'``), dollar-quoted bodies
    (``$$...$$``, ``$tag$...$tag$``) and comments (``--`` and nested ``/* */``) do not split.
    Statements that are only whitespace and comments are dropped.
    """
    statements: list[str] = []
    start = 0
    i = 0
    n = len(script)
    has_code = False
    while i < n:
        c = script[i]
        if c == "-" and script.startswith("--", i):
            end = script.find("\n", i)
            i = n if end == -1 else end + 1
            continue
        if c == "/" and script.startswith("/*", i):
            depth = 0
            while i < n:
                if script.startswith("/*", i):
                    depth += 1
                    i += 2
                elif script.startswith("*/", i):
                    depth -= 1
                    i += 2
                    if depth == 0:
                        break
                else:
                    i += 1
            continue
        if c == ";":
            if has_code:
                statements.append(script[start:i].strip())
            start = i + 1
            has_code = False
            i += 1
            continue
        if not c.isspace():
            has_code = True
        if c == "'":
            escapes = i > 0 and script[i - 1] in "eE" and (i < 2 or not script[i - 2].isalnum())
            i += 1
            while i < n:
                if escapes and script[i] == "\\":
                    i += 2
                    continue
                if script[i] == "'":
                    if script.startswith("''", i):
                        i += 2
                        continue
                    break
                i += 1
            i += 1
            continue
        if c == '"':
            end = script.find('"', i + 1)
            while end != -1 and script.startswith('""', end):
                end = script.find('"', end + 2)
            i = n if end == -1 else end + 1
            continue
        if c == "$" and (i == 0 or not (script[i - 1].isalnum() or script[i - 1] == "_")):
            match = _DOLLAR_TAG.match(script, i)
            if match is not None:
                tag = match.group(0)
                end = script.find(tag, match.end())
                i = n if end == -1 else end + len(tag)
                continue
        i += 1
    if has_code:
        statements.append(script[start:].strip())
    return statements


def _first_line(statement: str) -> str:
    for line in statement.splitlines():
        text = line.strip()
        if text and not text.startswith("--"):
            return text
    return statement.strip()


PLUGIN_TABLE = "daz_plugin_migrations"  # created by core migration 0011


async def _ensure_table(conn: Any, plugin: str | None = None) -> None:
    if plugin is None:
        await conn.execute(_CREATE_TABLE)
        return
    if not await conn.fetchval(f"SELECT to_regclass('{PLUGIN_TABLE}') IS NOT NULL"):
        raise MigrationError(
            f"plugin {plugin!r}: the core migrations are not applied yet (no {PLUGIN_TABLE} "
            "table, migration 0011): run `daz-actors migrate` first"
        )


async def _applied(conn: Any, plugin: str | None = None) -> dict[int, AppliedMigration]:
    if plugin is None:
        rows = await conn.fetch(
            "SELECT version, name, applied_at FROM daz_schema_migrations ORDER BY version"
        )
    else:
        rows = await conn.fetch(
            f"SELECT version, name, applied_at FROM {PLUGIN_TABLE} WHERE plugin = $1"
            " ORDER BY version",
            plugin,
        )
    return {
        row["version"]: AppliedMigration(
            version=row["version"], name=row["name"], applied_at=row["applied_at"]
        )
        for row in rows
    }


async def _run_script(conn: Any, file: str, script: str) -> None:
    import asyncpg

    statements = split_sql(script)
    for number, statement in enumerate(statements, start=1):
        try:
            await conn.execute(statement)
        except asyncpg.PostgresError as exc:
            sqlstate = getattr(exc, "sqlstate", None)
            raise MigrationError(
                f"{file}: statement {number} of {len(statements)} failed "
                f"({type(exc).__name__}, SQLSTATE {sqlstate}): {exc}\n"
                f"  statement starts: {_first_line(statement)}",
                file=file,
                statement_number=number,
                statement=statement,
            ) from exc


@asynccontextmanager
async def migration_lock(conn: Any) -> AsyncIterator[None]:
    """Hold the migration advisory lock across several `migrate` / `rollback` calls (the
    core's, then each plugin's), so another process's run sees all of them or none.

    Session advisory locks stack: the calls inside take it again and give back only their
    own hold."""
    if conn.is_in_transaction():
        raise MigrationError("migrations need a connection that is not inside a transaction")
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


class _Locked:
    """Hold the migration advisory lock (and make sure the version table exists)."""

    def __init__(self, conn: Any, plugin: str | None = None) -> None:
        self._conn = conn
        self._plugin = plugin

    async def __aenter__(self) -> None:
        if self._conn.is_in_transaction():
            raise MigrationError("migrations need a connection that is not inside a transaction")
        await self._conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        try:
            await _ensure_table(self._conn, self._plugin)
        except BaseException:
            await self._conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self._conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


async def _record(conn: Any, migration: Migration, plugin: str | None) -> None:
    if plugin is None:
        await conn.execute(
            "INSERT INTO daz_schema_migrations (version, name) VALUES ($1, $2)",
            migration.version,
            migration.name,
        )
    else:
        await conn.execute(
            f"INSERT INTO {PLUGIN_TABLE} (plugin, version, name) VALUES ($1, $2, $3)",
            plugin,
            migration.version,
            migration.name,
        )


async def _unrecord(conn: Any, version: int, plugin: str | None) -> None:
    if plugin is None:
        await conn.execute("DELETE FROM daz_schema_migrations WHERE version = $1", version)
    else:
        await conn.execute(
            f"DELETE FROM {PLUGIN_TABLE} WHERE plugin = $1 AND version = $2", plugin, version
        )


def _check_target(migrations: Sequence[Migration], version: int, what: str) -> None:
    if version < 0 or (version != 0 and version not in {m.version for m in migrations}):
        known = ", ".join(str(m.version) for m in migrations) or "none"
        raise MigrationError(f"{what}: no migration {version} (known: 0, {known})")


async def migrate(
    conn: Any,
    to: int | None = None,
    *,
    source: MigrationSource | None = None,
    migrations: Iterable[Migration] | None = None,
    plugin: str | None = None,
) -> list[Migration]:
    """Apply pending migrations up to version ``to`` (default: the latest); return those applied.

    Each migration runs in its own transaction; a failing one is rolled back whole and
    raises `MigrationError` naming the file and statement, after the earlier ones stay
    committed. ``source`` is the folder to read (default `default_source`); ``migrations``
    overrides it with already loaded ones.
    """
    known = tuple(migrations) if migrations is not None else load_migrations(source)
    if to is not None:
        _check_target(known, to, "migrate --to")
    applied_now: list[Migration] = []
    async with _Locked(conn, plugin):
        applied = await _applied(conn, plugin)
        for migration in known:
            if to is not None and migration.version > to:
                break
            if migration.version in applied:
                continue
            async with conn.transaction():
                await _run_script(conn, migration.up_file, migration.up_sql)
                await _record(conn, migration, plugin)
            applied_now.append(migration)
    return applied_now


async def rollback(
    conn: Any,
    to_version: int,
    *,
    source: MigrationSource | None = None,
    migrations: Iterable[Migration] | None = None,
    plugin: str | None = None,
) -> list[Migration]:
    """Roll back applied migrations newer than ``to_version`` (0: all), newest first.

    Returns the migrations rolled back. Each rollback runs in its own transaction and a
    failing one raises `MigrationError` naming the file and statement.
    """
    known = tuple(migrations) if migrations is not None else load_migrations(source)
    _check_target(known, to_version, "migrate --rollback")
    by_version = {m.version: m for m in known}
    rolled_back: list[Migration] = []
    async with _Locked(conn, plugin):
        applied = await _applied(conn, plugin)
        for version in sorted(applied, reverse=True):
            if version <= to_version:
                break
            migration = by_version.get(version)
            if migration is None:
                owner = "daz-actors" if plugin is None else f"the plugin {plugin!r}"
                raise MigrationError(
                    f"cannot roll back migration {version}: no file for it in this version "
                    f"of {owner}"
                )
            async with conn.transaction():
                await _run_script(conn, migration.down_file, migration.down_sql)
                await _unrecord(conn, version, plugin)
            rolled_back.append(migration)
    return rolled_back


async def status(
    conn: Any,
    *,
    source: MigrationSource | None = None,
    migrations: Iterable[Migration] | None = None,
    plugin: str | None = None,
) -> MigrationStatus:
    """Report applied, pending and unknown migrations (without changing anything)."""
    known = tuple(migrations) if migrations is not None else load_migrations(source)
    table = "daz_schema_migrations" if plugin is None else PLUGIN_TABLE
    exists = await conn.fetchval(f"SELECT to_regclass('{table}') IS NOT NULL")
    applied = await _applied(conn, plugin) if exists else {}
    known_versions = {m.version for m in known}
    return MigrationStatus(
        applied=tuple(applied[v] for v in sorted(applied)),
        pending=tuple(m for m in known if m.version not in applied),
        unknown=tuple(v for v in sorted(applied) if v not in known_versions),
    )
