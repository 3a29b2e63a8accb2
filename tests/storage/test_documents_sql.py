"""The Daz documents' SQL runs as written against the schema and does what they say.

Every statement of the retry queue schema document's "Usage Examples", "Monitoring" and
"Maintenance" sections and every SQL string of the Go integration guide is taken from
the documents (copies in tests/storage/documents/) and run unchanged on a real PostgreSQL.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

DOCUMENTS = Path(__file__).parent / "documents"
SCHEMA_DOC = DOCUMENTS / "retry-queue-schema.md"
GO_DOC = DOCUMENTS / "go-integration-guide.md"
ORIGINALS = Path(__file__).resolve().parents[3] / "shared" / "seeds"


def sql_statements(section: str) -> list[str]:
    """The statements of the ```sql blocks under the markdown heading `section`."""
    text = SCHEMA_DOC.read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```sql\n(.*?)```", text[start : end if end > 0 else None], re.DOTALL)
    statements = []
    for block in blocks:
        for part in block.split(";"):
            lines = [line for line in part.splitlines() if not line.strip().startswith("--")]
            statement = "\n".join(lines).strip()
            if statement:
                statements.append(statement)
    return statements


def go_queries() -> dict[str, str]:
    """The Go guide's SQL strings by constant name, plus its stats query."""
    text = GO_DOC.read_text()
    queries = dict(re.findall(r"(\w+SQL) = `(.*?)`", text, re.DOTALL))
    stats = re.search(r"query := `(.*?)`", text, re.DOTALL)
    assert stats is not None
    queries["stats"] = stats[1]
    return {name: sql.strip() for name, sql in queries.items()}


def test_the_copies_match_the_documents() -> None:
    """The statements tested are the documents' own (when the originals are at hand)."""
    originals = {p.read_text() for p in ORIGINALS.glob("*.txt")} if ORIGINALS.is_dir() else set()
    if not originals:
        pytest.skip("the original documents are not beside this checkout")
    assert SCHEMA_DOC.read_text() in originals
    assert GO_DOC.read_text() in originals


def test_every_section_has_the_statements_the_tests_run() -> None:
    """A document edited so that a statement vanishes fails here, not silently."""
    assert len(sql_statements("Usage Examples")) == 7
    assert len(sql_statements("Monitoring")) == 3
    assert len(sql_statements("Maintenance")) == 2
    assert set(go_queries()) == {
        "insertRetryItemSQL", "acquireRetryItemsSQL", "completeRetryItemSQL",
        "failRetryItemSQL", "stats",
    }  # fmt: skip


def test_the_schema_documents_usage_monitoring_and_maintenance(pg: Any) -> None:
    """Insert (its event id generated), acquire with a lock timeout in seconds, fail and
    complete by worker id, the monitoring views and queries, cleanup without arguments."""
    insert, acquire, complete, fail = sql_statements("Usage Examples")[:4]
    views_stats, views_alerts, stuck = sql_statements("Usage Examples")[4:]
    assert sql_statements("Monitoring") == [views_stats, views_alerts, stuck]
    per_hour, success_rate = sql_statements("Maintenance")

    async def body(conn: Any) -> None:
        # the documents' examples use item 123: give the inserted item that id
        await conn.execute("ALTER TABLE daz_retry_queue ALTER COLUMN id RESTART WITH 123")
        await conn.execute(insert)
        row = await conn.fetchrow("SELECT * FROM daz_retry_queue")
        assert row["id"] == 123
        assert len(row["event_id"]) == 36  # generated
        assert (row["event_type"], row["channel_name"], row["plugin_name"]) == (
            "cytube.event.chatMsg", "RIFFTRAX_MST3K", "sql",
        )  # fmt: skip
        assert (row["max_retries"], row["retry_delay_seconds"], row["priority"]) == (5, 30, 7)
        assert json.loads(row["event_data"])["message"] == "test"

        acquired = await conn.fetch(acquire)
        assert [r["id"] for r in acquired] == [123]
        assert acquired[0]["locked_by"] == "worker-001"

        # another worker cannot fail or complete it (fenced by worker id)
        assert await conn.fetchval(fail.replace("worker-001", "worker-002")) is False
        assert await conn.fetchval(complete.replace("worker-001", "worker-002")) is False

        # "On failure": the attempt is recorded and the retry scheduled after its delay
        assert await conn.fetchval(fail) is True
        item = await conn.fetchrow("SELECT * FROM daz_retry_queue WHERE id = 123")
        assert (item["status"], item["retry_count"]) == ("pending", 1)
        assert (item["last_error"], item["last_error_code"]) == ("Connection timeout", "TIMEOUT")
        due_in = (item["next_retry_at"] - item["updated_at"]).total_seconds()
        assert due_in == pytest.approx(30, abs=0.5)  # retry_delay_seconds 30, first retry

        # "On success", on the next attempt
        await conn.execute("UPDATE daz_retry_queue SET next_retry_at = now() WHERE id = 123")
        assert [r["id"] for r in await conn.fetch(acquire)] == [123]
        assert await conn.fetchval(complete) is True
        assert await conn.fetchval(complete) is False  # once
        item = await conn.fetchrow("SELECT * FROM daz_retry_queue WHERE id = 123")
        assert item["status"] == "completed"
        outcomes = await conn.fetch(
            "SELECT outcome FROM daz_retry_history WHERE item_id = 123 ORDER BY id"
        )
        assert [r["outcome"] for r in outcomes] == ["failed", "completed"]

        # monitoring: a second item held by a worker for two hours is stuck
        await conn.execute(insert.replace("'test'", "'second'"))
        await conn.fetch(acquire)
        await conn.execute(
            "UPDATE daz_retry_queue SET locked_at = now() - interval '2 hours'"
            " WHERE status = 'processing'"
        )
        stats = await conn.fetch(views_stats)
        by_status = {r["status"]: r for r in stats}
        assert by_status["completed"]["plugin"] == "sql"
        assert set(by_status) == {"completed", "processing"}
        alerts = await conn.fetch(views_alerts)
        assert {r["item_id"] for r in alerts} == {124}  # stuck in processing
        assert [r["id"] for r in await conn.fetch(stuck)] == [124]

        hours = await conn.fetch(per_hour)
        assert sum(r["items_created"] for r in hours) == 2
        rates = {r["event_type"]: r["success_rate"] for r in await conn.fetch(success_rate)}
        assert rates == {"cytube.event.chatMsg": 0.5}

        # daily maintenance: cleanup_retry_queue() keeps a week of finished items
        assert await conn.fetchval("SELECT cleanup_retry_queue()") == 0
        await conn.execute(
            "UPDATE daz_retry_queue SET updated_at = now() - interval '8 days' WHERE id = 123"
        )
        assert await conn.fetchval("SELECT cleanup_retry_queue()") == 1
        assert await conn.fetchval("SELECT count(*) FROM daz_retry_queue") == 1

        # calculate_next_retry(retry_count, delay, multiplier): "60s, 120s, 240s, 480s"
        delays = [
            await conn.fetchval("SELECT calculate_next_retry($1, 60, 2)", n) for n in range(4)
        ]
        assert delays == [60, 120, 240, 480]

    pg.run(body)


def test_the_go_integration_guides_queries(pg: Any) -> None:
    """The Go guide's insert hands back the generated id and event id; its worker acquires,
    fails and completes with its parameters; its stats query counts by status."""
    queries = go_queries()

    async def body(conn: Any) -> None:
        metadata = {"timestamp": int(datetime.now(UTC).timestamp()), "retry_reason": "x"}
        row = await conn.fetchrow(
            queries["insertRetryItemSQL"],
            "cytube.event.chatMsg", "lobby", "sql", json.dumps({"message": "hi"}),
            json.dumps(metadata), 3, 60, 2.0, 5, "corr-1", ["sql", "lobby"],
        )  # fmt: skip
        item_id, event_id = row["id"], row["event_id"]
        assert event_id
        stored = await conn.fetchrow("SELECT * FROM daz_retry_queue WHERE id = $1", item_id)
        assert (stored["channel_name"], stored["plugin_name"], stored["tags"]) == (
            "lobby", "sql", ["sql", "lobby"],
        )  # fmt: skip
        assert stored["correlation_id"] == "corr-1"

        acquired = await conn.fetch(queries["acquireRetryItemsSQL"], "worker-9", 10, 300)
        assert [r["id"] for r in acquired] == [item_id]
        assert await conn.fetchval(queries["failRetryItemSQL"], item_id, "worker-9", "boom", "E1")
        await conn.execute("UPDATE daz_retry_queue SET next_retry_at = now()")
        assert [
            r["id"] for r in await conn.fetch(queries["acquireRetryItemsSQL"], "worker-9", 10, 300)
        ] == [item_id]
        assert await conn.fetchval(queries["completeRetryItemSQL"], item_id, "worker-9")

        stats = {r["status"]: r for r in await conn.fetch(queries["stats"])}
        assert stats["completed"]["count"] == 1
        assert float(stats["completed"]["avg_retries"]) == 1.0

        # a lock timeout in seconds reclaims an item whose worker went away
        await conn.fetchrow(
            queries["insertRetryItemSQL"],
            "t", None, None, "{}", "{}", 3, 60, 2.0, 5, None, [],
        )  # fmt: skip
        held = await conn.fetch(queries["acquireRetryItemsSQL"], "worker-dead", 10, 300)
        await conn.execute(
            "UPDATE daz_retry_queue SET locked_at = $1 WHERE id = $2",
            datetime.now(UTC) - timedelta(seconds=301), held[0]["id"],
        )  # fmt: skip
        again = await conn.fetch(queries["acquireRetryItemsSQL"], "worker-alive", 10, 300)
        assert [(r["id"], r["locked_by"]) for r in again] == [(held[0]["id"], "worker-alive")]

    pg.run(body)
