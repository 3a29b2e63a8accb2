"""Typed, versioned intents: what a queue item means, decoded, upgraded and carried out by
today's code; and the one place that computes a retry's delay."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from legacy_sql import LEGACY_CHAT_SQL
from retry_trees import fetchval, item_in, retry_tree

from daz_actors.cytube.chat_log import CHAT_LOG, CHAT_SQL, ChatLine
from daz_actors.retry.handlers import AttemptContext, HandlerRegistry, PermanentError
from daz_actors.retry.intents import IntentType, intent_data, intent_of
from daz_actors.runtime.backoff import Jitter
from daz_actors.runtime.events import Intent
from daz_actors.storage import queue
from daz_actors.storage.queue_types import NewItem, RetryStatus
from daz_actors.testing import open_tree, poll

# ---------------------------------------------------------------------------- unit


@attrs.frozen(kw_only=True)
class GreetV2:
    name: str
    greeting: str  # new in version 2


async def _nothing(_args: Any, _ctx: AttemptContext) -> None:
    return None


GREET = IntentType(
    name="greet",
    version=2,
    args=GreetV2,
    run=_nothing,
    upgraders={1: lambda args: {**args, "greeting": "hello"}},
)


def test_an_intent_round_trips_through_json() -> None:
    """What is queued is the arguments as JSON; decoding gives the same value back."""
    args = GreetV2(name="ann", greeting="hi")
    intent = GREET.intent(args)
    assert intent == Intent(name="greet", version=2, args={"name": "ann", "greeting": "hi"})
    stored = json.loads(json.dumps(intent_data(intent)))
    assert (
        GREET.decode(Intent(name="greet", version=stored["version"], args=stored["args"])) == args
    )


def test_an_older_version_is_upgraded_by_the_shipped_upgrader() -> None:
    old = Intent(name="greet", version=1, args={"name": "bob"})
    assert GREET.decode(old) == GreetV2(name="bob", greeting="hello")


@pytest.mark.parametrize("version", [0, 3, 99])
def test_an_unknown_version_is_a_permanent_error_naming_name_and_version(version: int) -> None:
    with pytest.raises(PermanentError, match=rf"unknown intent 'greet' version {version}"):
        GREET.decode(Intent(name="greet", version=version, args={"name": "x"}))


def test_bad_arguments_are_a_permanent_error_naming_the_field() -> None:
    with pytest.raises(PermanentError, match=r"greet v2\.greeting: expected a string"):
        GREET.decode(Intent(name="greet", version=2, args={"name": "x", "greeting": 5}))
    with pytest.raises(PermanentError, match=r"greet v2\.greeting: required key is missing"):
        GREET.decode(Intent(name="greet", version=2, args={"name": "x"}))


def test_a_version_bump_without_its_upgrader_is_refused_at_definition() -> None:
    with pytest.raises(ValueError, match=r"no upgrader from version\(s\) \[1\]"):
        IntentType(name="greet", version=2, args=GreetV2, run=_nothing)


def test_an_item_without_an_intent_version_is_refused_with_what_was_expected() -> None:
    item = _fake_item("greet", {"name": "x"})
    with pytest.raises(PermanentError, match="no intent version"):
        intent_of(item)


def _fake_item(event_type: str, data: Any) -> Any:
    return attrs.make_class("FakeItem", ["event_type", "event_data"])(event_type, data)


# ---------------------------------------------------------------------------- integration


def chat_line(n: int) -> ChatLine:
    return ChatLine(
        event_id=f"line-{n}",
        channel="lobby",
        username="ann",
        message=f"line {n}",
        sent_ms=1_700_000_000_000 + n,
        is_history=False,
        received_ms=1_700_000_000_500 + n,
        meta={},
        raw_message=f"line {n}",
    )


async def test_items_queued_before_a_column_rename_complete_with_the_new_code(pg):
    """Items wait in the queue while a migration renames a column of the chat table and a
    new release changes its insert: they complete, because the queue holds what was meant
    (the row's fields), not the statement. An item queued in the old SQL form by an earlier
    version is rewritten as the same intent on the way in, and completes too."""
    legacy_args = chat_line(2).args()[:8]  # the earlier statement had no raw text

    async def setup(conn: Any) -> None:
        await queue.enqueue(
            conn,
            NewItem(event_id="log-1", event_type="chat.log",
                    event_data=intent_data(CHAT_LOG.intent(chat_line(1)))),
        )  # fmt: skip
        await queue.enqueue(
            conn,
            NewItem(event_id="log-2", event_type="sql.exec",
                    event_data={"sql": LEGACY_CHAT_SQL, "args": list(legacy_args)}),
        )  # fmt: skip
        # the migration of the next release
        await conn.execute("ALTER TABLE daz_chat_messages RENAME COLUMN username TO speaker")

    async def write_renamed(row: ChatLine, ctx: AttemptContext) -> None:  # the new code
        await ctx.db.execute(
            CHAT_SQL.replace("channel, username,", "channel, speaker,"), *row.args()
        )

    handlers = HandlerRegistry()
    new_release = IntentType(
        name="chat.log", version=2, args=ChatLine, run=write_renamed, upgraders=CHAT_LOG.upgraders
    )
    handlers.add("chat.log", new_release)
    tree = retry_tree(pg.dsn, handlers)
    async with pg.trio_connection() as db:
        await db.call(setup)
        legacy = await fetchval(
            db, "SELECT event_data::text FROM daz_retry_queue WHERE event_id = 'log-2'"
        )
        async with open_tree(tree.sup):
            await item_in(db, "log-1", RetryStatus.COMPLETED)
            await item_in(db, "log-2", RetryStatus.COMPLETED)
        bodies = await db.call(
            lambda conn: conn.fetch(
                "SELECT speaker, message FROM daz_chat_messages ORDER BY message"
            )
        )
        sql_rows = await fetchval(
            db, "SELECT count(*) FROM daz_retry_queue WHERE event_data::text ~* 'insert into'"
        )
    assert "INSERT" not in legacy
    assert [(r["speaker"], r["message"]) for r in bodies] == [("ann", "line 1"), ("ann", "line 2")]
    assert sql_rows == 0


async def test_unknown_intents_and_foreign_sql_are_dead_letters_with_a_reason(pg):
    """A version this process does not know, and a legacy statement that is not the bot's
    own, are dead letters whose error says what and why; no SQL text stays in the queue."""

    async def setup(conn: Any) -> None:
        future = Intent(name="chat.log", version=7, args={})
        await queue.enqueue(
            conn, NewItem(event_id="future", event_type="chat.log", event_data=intent_data(future))
        )
        await queue.enqueue(
            conn,
            NewItem(event_id="foreign", event_type="sql.exec",
                    event_data={"sql": "DELETE FROM daz_chat_messages", "args": []}),
        )  # fmt: skip

    handlers = HandlerRegistry()
    handlers.add("chat.log", CHAT_LOG)
    tree = retry_tree(pg.dsn, handlers)
    async with pg.trio_connection() as db:
        await db.call(setup)
        foreign = await item_in(db, "foreign", RetryStatus.DEAD_LETTER)  # on the way in
        async with open_tree(tree.sup):
            future = await item_in(db, "future", RetryStatus.DEAD_LETTER)
    assert future.last_error is not None
    assert "unknown intent 'chat.log' version 7" in future.last_error
    assert foreign.last_error is not None
    assert "not one of the bot's own" in foreign.last_error
    assert "DELETE" not in json.dumps(foreign.event_data)


async def test_retry_delays_follow_the_items_policy_with_its_jitter(pg):
    """The worker computes each delay from the item's policy, jitter included (the SQL no
    longer recomputes it): with 25 % proportional jitter on 100 s, every first retry is due
    75 to 125 s after its failure, and the delays spread."""
    count = 12

    async def always_busy(_item: Any, _ctx: AttemptContext) -> None:
        raise TimeoutError("busy")

    handlers = HandlerRegistry()
    handlers.add("busy", always_busy)
    tree = retry_tree(pg.dsn, handlers)
    items = [
        NewItem(event_id=f"b{n}", event_type="busy", retry_delay=100.0, max_delay=1000.0,
                jitter=Jitter.PROPORTIONAL)
        for n in range(count)
    ]  # fmt: skip
    async with pg.trio_connection() as db:
        await db.call(queue.enqueue_many, items)
        async with open_tree(tree.sup):

            async def all_failed_once() -> bool:
                failed: int = await fetchval(
                    db,
                    "SELECT count(*) FROM daz_retry_queue WHERE retry_count = 1"
                    " AND status = 'pending'",
                )
                return failed == count

            await poll(all_failed_once, timeout=30)
        delays = await db.call(
            lambda conn: conn.fetch(
                "SELECT extract(epoch FROM q.next_retry_at - h.finished_at) AS delay"
                " FROM daz_retry_queue q JOIN daz_retry_history h ON h.item_id = q.id"
            )
        )
    seconds = [float(r["delay"]) for r in delays]
    assert len(seconds) == count
    assert all(75.0 - 0.5 <= s <= 125.0 + 0.5 for s in seconds), seconds
    assert max(seconds) - min(seconds) > 5.0, seconds  # spread, not 100 s each
