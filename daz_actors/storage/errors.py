"""The errors of the storage layer: migrations, queue input and database calls."""

from __future__ import annotations

from daz_actors.runtime.errors import DazActorsError


class MigrationError(DazActorsError, RuntimeError):
    """A migration failed or the migration files are inconsistent.

    For a failed statement, ``file`` names the file, ``statement_number`` counts from 1, and
    the cause is the database's error.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        statement_number: int | None = None,
        statement: str | None = None,
    ) -> None:
        self.file = file
        self.statement_number = statement_number
        self.statement = statement
        super().__init__(message)


class QueueInputError(DazActorsError, ValueError):
    """A queue item was refused before anything was written; the message names the field."""


class SqlError(DazActorsError):
    """A database call failed; `retryable` says whether it may succeed later as it is."""

    def __init__(self, message: str, *, retryable: bool, code: str | None = None) -> None:
        self.retryable = retryable
        self.code = code
        super().__init__(message)


class CircuitOpen(SqlError):
    """The SQL gateway's circuit breaker is open: calls fail fast until a probe succeeds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(message, retryable=True, code="circuit_open")


class DatabaseUnavailable(SqlError):
    """The SQL gateway has no connection pool (PostgreSQL unreachable); it keeps trying."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True, code="database_unavailable")
