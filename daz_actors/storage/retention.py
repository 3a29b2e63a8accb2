"""Pruning a table by age, one bounded batch at a time (schema 0010).

A `TableRetention` names a table, its timestamp column and how many days of rows to keep;
`prune_batch` deletes at most `batch_size` of its oldest rows past that age in one
statement (its own short transaction: a huge table never holds one long lock) and returns
how many went. The caller repeats it until a batch comes back short (see
`daz_actors.retry.cleanup`). Table and column names are checked to be plain identifiers
when the rule is made: they are written into the statement, never taken from chat.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from daz_actors.runtime.validators import at_most, positive

__all__ = ["MAX_RETENTION_DAYS", "TableRetention", "prune_batch"]

MAX_RETENTION_DAYS = 36_500.0  # 100 years; further back is before PostgreSQL's timestamps
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _identifier(_inst: object, attr: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"{attr.name} must be a lower-case SQL identifier, got {value!r}")


@attrs.frozen(kw_only=True)
class TableRetention:
    """Rows of `table` whose `column` is older than `days` days are deleted."""

    table: str = attrs.field(validator=_identifier)
    column: str = attrs.field(validator=_identifier)  # a timestamptz column with an index
    days: float = attrs.field(validator=[positive, at_most(MAX_RETENTION_DAYS)])
    key: str = attrs.field(default="id", validator=_identifier)  # the table's primary key

    def statement(self) -> str:
        """The batch's DELETE: ``$1`` the age in seconds, ``$2`` the batch size."""
        return (
            f"WITH doomed AS MATERIALIZED ("
            f" SELECT {self.key} FROM {self.table}"
            f" WHERE {self.column} < now() - make_interval(secs => $1)"
            f" ORDER BY {self.column} LIMIT $2 FOR UPDATE SKIP LOCKED),"
            f" deleted AS (DELETE FROM {self.table} t USING doomed d"
            f" WHERE t.{self.key} = d.{self.key} RETURNING 1)"
            f" SELECT count(*) FROM deleted"
        )


async def prune_batch(conn: Any, rule: TableRetention, *, batch_size: int) -> int:
    """Delete at most `batch_size` rows of ``rule.table`` past its age; how many went."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    deleted = await conn.fetchval(rule.statement(), rule.days * 86400.0, batch_size)
    return int(deleted)
