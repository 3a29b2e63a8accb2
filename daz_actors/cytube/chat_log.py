"""The chat log: one row per chat line, private message, join, leave and media change.

Each row is a typed value whose insert is built from this module's code, idempotent by
its event id (``INSERT ... ON CONFLICT (event_id) DO NOTHING``). A write that fails is
queued as an *intent* (``chat.log``, ``pm.log`` or ``channel_event.log``, version 1)
holding the row's fields, never the statement: the handler rebuilds the insert from the
code of the process that runs it, so a migration that changes the tables (with a version
bump and its upgrader here) does not break what was queued before it.
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs

from daz_actors.cytube.chat_text import storable_text
from daz_actors.cytube.events import ChatMessage, MediaChanged, PrivateMessage, UserJoined, UserLeft
from daz_actors.retry.handlers import AttemptContext, HandlerRegistry
from daz_actors.retry.intents import IntentType

__all__ = [
    "CHANNEL_EVENT_LOG",
    "CHAT_LOG",
    "PM_LOG",
    "ChannelEventRow",
    "ChatLine",
    "LogRow",
    "PrivateLine",
    "batch_statements",
    "channel_event_write",
    "chat_write",
    "event_id",
    "private_write",
    "register_log_handlers",
]

# a live line wins over its replay: whichever is written first, is_history ends false
CHAT_SQL = """\
INSERT INTO daz_chat_messages
    (event_id, channel, username, message, sent_at, is_history, received_at, meta,
     raw_message)
VALUES ($1, $2, $3, $4, to_timestamp($5::bigint / 1000.0), $6,
        to_timestamp($7::bigint / 1000.0), $8::jsonb, $9)
ON CONFLICT (event_id) DO UPDATE SET is_history = false
    WHERE daz_chat_messages.is_history AND NOT EXCLUDED.is_history"""

PRIVATE_SQL = """\
INSERT INTO daz_private_messages
    (event_id, channel, from_user, to_user, message, sent_at, received_at, raw_message)
VALUES ($1, $2, $3, $4, $5, to_timestamp($6::bigint / 1000.0),
        to_timestamp($7::bigint / 1000.0), $8)
ON CONFLICT (event_id) DO NOTHING"""

CHANNEL_EVENT_SQL = """\
INSERT INTO daz_channel_events (event_id, kind, channel, username, title, payload, at)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, to_timestamp($7::bigint / 1000.0))
ON CONFLICT (event_id) DO NOTHING"""


# The same inserts for many rows at once: one statement per table, the rows as arrays
# (unnest), each row still idempotent by its event id. See `batch_statements`.
CHAT_BATCH_SQL = """\
INSERT INTO daz_chat_messages
    (event_id, channel, username, message, sent_at, is_history, received_at, meta,
     raw_message)
SELECT e, c, u, m, to_timestamp(s / 1000.0), h, to_timestamp(r / 1000.0), j::jsonb, w
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::bool[],
            $7::int8[], $8::text[], $9::text[]) AS t(e, c, u, m, s, h, r, j, w)
ON CONFLICT (event_id) DO UPDATE SET is_history = false
    WHERE daz_chat_messages.is_history AND NOT EXCLUDED.is_history"""

PRIVATE_BATCH_SQL = """\
INSERT INTO daz_private_messages
    (event_id, channel, from_user, to_user, message, sent_at, received_at, raw_message)
SELECT e, c, f, t, m, to_timestamp(s / 1000.0), to_timestamp(r / 1000.0), w
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[],
            $7::int8[], $8::text[]) AS x(e, c, f, t, m, s, r, w)
ON CONFLICT (event_id) DO NOTHING"""

CHANNEL_EVENT_BATCH_SQL = """\
INSERT INTO daz_channel_events (event_id, kind, channel, username, title, payload, at)
SELECT e, k, c, u, t, p::jsonb, to_timestamp(a / 1000.0)
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::int8[]) AS x(e, k, c, u, t, p, a)
ON CONFLICT (event_id) DO NOTHING"""


def event_id(*fields: object) -> str:
    """A deterministic id: sha256 of the fields as a JSON array.

    Text with a lone surrogate is hashed as it is ("surrogatepass"): two lines that differ
    only there keep two ids, and valid text hashes as it always did.
    """
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _clean(value: Any) -> Any:
    """`value` as PostgreSQL text and jsonb take it (NUL characters and lone surrogates
    become U+FFFD, see docs/chat-log.md), JSON-able."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {_clean(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return _clean(str(value))


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class LogRow(abc.ABC):
    """What every row type offers the router: its table, id, statement and arguments."""

    table: ClassVar[str]
    sql: ClassVar[str]
    batch_sql: ClassVar[str]  # the insert of many rows of this type: `batch_statements`
    event_id: str

    @abc.abstractmethod
    def args(self) -> tuple[Any, ...]:
        """The statement's arguments, in its order."""


@attrs.frozen(kw_only=True)
class ChatLine(LogRow):
    """A chat line (intent ``chat.log`` v2; v1 had no ``raw_message``)."""

    table: ClassVar[str] = "daz_chat_messages"
    sql: ClassVar[str] = CHAT_SQL
    batch_sql: ClassVar[str] = CHAT_BATCH_SQL

    event_id: str
    channel: str
    username: str
    message: str  # as a reader sees it (entities unescaped, tags reduced to their text)
    sent_ms: int  # the server's time of the line, ms since the epoch
    is_history: bool  # replayed by the server on join
    received_ms: int  # when the bot received it
    meta: Any  # the server's meta object (JSON)
    raw_message: str  # what the server sent

    def args(self) -> tuple[Any, ...]:
        return (
            self.event_id, self.channel, self.username, self.message, self.sent_ms,
            self.is_history, self.received_ms, _json(self.meta), self.raw_message,
        )  # fmt: skip


@attrs.frozen(kw_only=True)
class PrivateLine(LogRow):
    """A private message (intent ``pm.log`` v2; v1 had no ``raw_message``)."""

    table: ClassVar[str] = "daz_private_messages"
    sql: ClassVar[str] = PRIVATE_SQL
    batch_sql: ClassVar[str] = PRIVATE_BATCH_SQL

    event_id: str
    channel: str
    from_user: str
    to_user: str
    message: str  # as a reader sees it
    sent_ms: int
    received_ms: int
    raw_message: str  # what the server sent

    def args(self) -> tuple[Any, ...]:
        return (
            self.event_id, self.channel, self.from_user, self.to_user, self.message,
            self.sent_ms, self.received_ms, self.raw_message,
        )  # fmt: skip


@attrs.frozen(kw_only=True)
class ChannelEventRow(LogRow):
    """A join, leave or media change (intent ``channel_event.log`` v1)."""

    table: ClassVar[str] = "daz_channel_events"
    sql: ClassVar[str] = CHANNEL_EVENT_SQL
    batch_sql: ClassVar[str] = CHANNEL_EVENT_BATCH_SQL

    event_id: str
    kind: str  # "join", "leave" or "media"
    channel: str
    username: str | None
    title: str | None
    payload: Any  # JSON
    at_ms: int  # when the bot received it

    def args(self) -> tuple[Any, ...]:
        return (
            self.event_id, self.kind, self.channel, self.username, self.title,
            _json(self.payload), self.at_ms,
        )  # fmt: skip


def _occurrence(seq: int) -> tuple[int, ...]:
    # the first occurrence keeps the id rows had before occurrences were counted
    return (seq,) if seq else ()


def chat_write(event: ChatMessage, received_ms: int) -> ChatLine:
    """The row of a chat line (its id ignores `received_ms` and `history`; it is channel,
    user, server time and raw text, plus the occurrence number from the second identical
    line in one millisecond on)."""
    return ChatLine(
        event_id=event_id(
            "chat", event.channel, event.username, event.time, event.msg,
            *_occurrence(event.seq),
        ),
        channel=_clean(event.channel),
        username=_clean(event.username),
        message=_clean(event.text),
        sent_ms=int(event.time),
        is_history=bool(event.history),
        received_ms=int(received_ms),
        meta=_clean(event.meta),
        raw_message=_clean(event.msg),
    )


def private_write(event: PrivateMessage, received_ms: int) -> PrivateLine:
    """The row of a private message."""
    return PrivateLine(
        event_id=event_id(
            "pm", event.channel, event.username, event.to, event.time, event.msg,
            *_occurrence(event.seq),
        ),
        channel=_clean(event.channel),
        from_user=_clean(event.username),
        to_user=_clean(event.to),
        message=_clean(event.text),
        sent_ms=int(event.time),
        received_ms=int(received_ms),
        raw_message=_clean(event.msg),
    )


def channel_event_write(
    event: UserJoined | UserLeft | MediaChanged, received_ms: int
) -> ChannelEventRow:
    """The row of a join, leave or media change.

    These events carry no server time, so the time the bot received them is part of
    the id: the same event object logged twice at the same `received_ms` is one row.
    """
    username: str | None = None
    title: str | None = None
    payload: dict[str, Any]
    if isinstance(event, UserJoined):
        kind, username, payload = "join", event.user.name, {"rank": event.user.rank}
    elif isinstance(event, UserLeft):
        kind, username, payload = "leave", event.name, {}
    else:
        kind, title = "media", event.title
        payload = {
            "media_id": event.media_id, "media_type": event.media_type, "seconds": event.seconds
        }  # fmt: skip
    return ChannelEventRow(
        event_id=event_id(kind, event.channel, username, title, payload, received_ms),
        kind=kind,
        channel=_clean(event.channel),
        username=_clean(username),
        title=_clean(title),
        payload=_clean(payload),
        at_ms=int(received_ms),
    )


def _merged(rows: Sequence[LogRow]) -> list[LogRow]:
    """`rows` with one row per event id, as writing them one after the other would leave
    it: the first row's fields, and for a chat line is_history only if every copy was
    history (a live line wins over its replay). One statement may not update a row twice."""
    first: dict[str, LogRow] = {}
    for row in rows:
        kept = first.get(row.event_id)
        if kept is None:
            first[row.event_id] = row
        elif (
            isinstance(kept, ChatLine)
            and isinstance(row, ChatLine)
            and kept.is_history
            and not row.is_history
        ):
            first[row.event_id] = attrs.evolve(kept, is_history=False)
    return list(first.values())


def batch_statements(rows: Sequence[LogRow]) -> list[tuple[str, tuple[Any, ...]]]:
    """The inserts of `rows` (any mix of types): one (statement, arguments) per table, each
    argument an array of one column, the rows in their order. Run them in one transaction;
    the result is the same as running each row's own insert in that order."""
    by_type: dict[type[LogRow], list[LogRow]] = {}
    for row in rows:
        by_type.setdefault(type(row), []).append(row)
    statements: list[tuple[str, tuple[Any, ...]]] = []
    for row_type, group in by_type.items():
        args = [r.args() for r in _merged(group)]
        columns = tuple(list(column) for column in zip(*args, strict=True))
        statements.append((row_type.batch_sql, columns))
    return statements


async def _write(row: LogRow, ctx: AttemptContext) -> None:
    """Run the row's insert again; the item's own id goes with it (no second item)."""
    await ctx.db.execute(row.sql, *row.args(), event_id=ctx.event_id)


def _with_raw_text(args: dict[str, Any]) -> dict[str, Any]:
    """Version 1 to 2: rows queued before the raw text was kept; theirs is the message."""
    return {**args, "raw_message": args.get("message", "")}


CHAT_LOG = IntentType(
    name="chat.log",
    version=2,
    args=ChatLine,
    run=_write,
    upgraders={1: _with_raw_text},
    description="store a chat line",
)
PM_LOG = IntentType(
    name="pm.log",
    version=2,
    args=PrivateLine,
    run=_write,
    upgraders={1: _with_raw_text},
    description="store a private message",
)
CHANNEL_EVENT_LOG = IntentType(
    name="channel_event.log",
    version=1,
    args=ChannelEventRow,
    run=_write,
    description="store a join, leave or media change",
)
LOG_INTENTS: dict[type[LogRow], IntentType[Any]] = {
    ChatLine: CHAT_LOG,
    PrivateLine: PM_LOG,
    ChannelEventRow: CHANNEL_EVENT_LOG,
}


def register_log_handlers(handlers: HandlerRegistry) -> None:
    """Add the handlers of the three log intents to `handlers`."""
    for intent_type in LOG_INTENTS.values():
        handlers.add(intent_type.name, intent_type, description=intent_type.description)
