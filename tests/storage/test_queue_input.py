"""Bad input to the queue gets a clear error and writes nothing."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from daz_actors.storage import queue
from daz_actors.storage.queue_types import NewItem, QueueInputError


def item(event_id: str = "e", **kwargs: Any) -> NewItem:
    """A queue item with defaults for everything but what the test sets."""
    kwargs.setdefault("event_type", "chat.send")
    return NewItem(event_id=event_id, **kwargs)


BAD: dict[str, tuple[Callable[[], NewItem], str]] = {
    "object payload": (lambda: item(event_data={"x": object()}), "event_data: not JSON"),
    "set payload": (lambda: item(event_data={1, 2}), "event_data: not JSON"),
    "nan payload": (lambda: item(event_data={"x": math.nan}), "event_data: not JSON"),
    "nul in payload": (lambda: item(event_data={"x": "a\x00b"}), "event_data: .*NUL"),
    "bad metadata": (lambda: item(event_metadata=[b"bytes"]), "event_metadata: not JSON"),
    "bad checkpoint": (lambda: item(checkpoint={"f": print}), "checkpoint: not JSON"),
    "oversized": (lambda: item(event_data="x" * (1024 * 1024)), "event_data: payload .* limit"),
    "priority 0": (lambda: item(priority=0), "priority: must be an integer from 1 to 10"),
    "priority 11": (lambda: item(priority=11), "priority: must be an integer from 1 to 10"),
    "priority bool": (lambda: item(priority=True), "priority"),
    "negative delay": (lambda: item(retry_delay=-1), "retry_delay: must be at least 0"),
    "negative max delay": (lambda: item(max_delay=-0.5), "max_delay: must be at least 0"),
    "infinite delay": (lambda: item(retry_delay=math.inf), "retry_delay: must be a finite"),
    "zero timeout": (lambda: item(attempt_timeout=0), "attempt_timeout: must be positive"),
    "multiplier below 1": (lambda: item(backoff_multiplier=0.5), "backoff_multiplier"),
    "negative retries": (lambda: item(max_retries=-1), "max_retries"),
    "empty event id": (lambda: item(event_id=""), "event_id: must be a non-empty string"),
    "naive datetime": (lambda: item(not_before=datetime(2030, 1, 1)), "not_before: .*timezone"),
    "tags as string": (lambda: item(tags="abc"), "tags: must be a sequence"),
    "never runnable": (
        lambda: item(
            not_before=datetime.fromisoformat("2030-01-02T00:00:00+00:00"),
            expires_at=datetime.fromisoformat("2030-01-01T00:00:00+00:00"),
        ),
        "expires_at: .* not after not_before",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_item_is_refused_and_nothing_written(pg: Any, case: str) -> None:
    """Each kind of bad input raises QueueInputError naming the field, alone or in a batch."""
    make, message = BAD[case]

    async def body(conn: Any) -> None:
        with pytest.raises(QueueInputError, match=message):
            await queue.enqueue(conn, make())
        with pytest.raises(QueueInputError, match=message):
            await queue.enqueue_many(conn, [item("good-first"), make()])
        assert await conn.fetchval("SELECT count(*) FROM daz_retry_queue") == 0

    pg.run(body)


def test_payload_limit_is_configurable(pg: Any) -> None:
    """A smaller limit refuses what the default accepts; the limit itself must be positive."""
    payload = {"text": "é" * 600}  # 1,200 bytes as UTF-8

    async def body(conn: Any) -> None:
        with pytest.raises(QueueInputError, match="limit is 1000"):
            await queue.enqueue(conn, item(event_data=payload), max_payload_bytes=1000)
        with pytest.raises(QueueInputError, match="max_payload_bytes"):
            await queue.enqueue(conn, item(), max_payload_bytes=0)
        assert await conn.fetchval("SELECT count(*) FROM daz_retry_queue") == 0
        assert await queue.enqueue(conn, item(event_data=payload), max_payload_bytes=2000)

    pg.run(body)


def test_query_arguments_are_validated(pg: Any) -> None:
    """acquire and cleanup refuse nonsense arguments before running any SQL."""

    async def body(conn: Any) -> None:
        with pytest.raises(QueueInputError, match="batch_size"):
            await queue.acquire(conn, "w", batch_size=0)
        with pytest.raises(QueueInputError, match="worker_id"):
            await queue.acquire(conn, "")
        with pytest.raises(QueueInputError, match="lock_timeout"):
            await queue.acquire(conn, "w", lock_timeout=-1)
        with pytest.raises(QueueInputError, match="retention_days"):
            await queue.cleanup(conn, retention_days=-1)
        with pytest.raises(QueueInputError, match="items: expected a sequence"):
            await queue.enqueue_many(conn, item())  # type: ignore[arg-type]
        assert await conn.fetchval("SELECT count(*) FROM daz_retry_history") == 0

    pg.run(body)


def test_queue_input_error_is_a_value_error() -> None:
    """Callers may catch bad input as ValueError."""
    assert issubclass(QueueInputError, ValueError)
    assert queue.QueueInputError is QueueInputError
