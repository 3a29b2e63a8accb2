"""``daz-actors queue ...`` against real PostgreSQL, and the queue functions behind it."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import click
import pytest
from click.testing import CliRunner, Result

from daz_actors.app.cli_queue import DURATION, format_duration, queue_group
from daz_actors.storage import queue
from daz_actors.storage.queue_types import NewItem, QueueInputError, RetryStatus


@click.group()
def cli() -> None:
    """Stand-in for ``daz_actors.app.cli.main``, which the lead wires up."""


cli.add_command(queue_group)


def run_cli(pg: Any, *args: str, input: str | None = None) -> Result:
    """Invoke ``queue ARGS --database-url <pg>`` and return the result."""
    return CliRunner().invoke(
        cli, ["queue", *args, "--database-url", pg.dsn], input=input, catch_exceptions=False
    )


def ok_json(result: Result) -> Any:
    """The JSON a successful command printed on stdout."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def ids_by_event(conn: Any) -> dict[str, int]:
    """Item id per event id."""
    rows = await conn.fetch("SELECT id, event_id FROM daz_retry_queue")
    return {row["event_id"]: row["id"] for row in rows}


async def take(conn: Any, event_id: str) -> Any:
    """Acquire the item ``event_id``, which must be the next one handed out."""
    await conn.execute(
        "UPDATE daz_retry_queue SET next_retry_at = now() - interval '1 second' "
        "WHERE event_id = $1",
        event_id,
    )
    await conn.execute(
        "UPDATE daz_retry_queue SET priority = 10 WHERE event_id = $1 AND status = 'pending'",
        event_id,
    )
    [taken] = await queue.acquire(conn, "w1", batch_size=1)
    assert taken.event_id == event_id
    return taken


async def dead_letter(conn: Any, event_id: str, event_type: str, *, attempts: int = 1) -> None:
    """Enqueue an item and fail it ``attempts`` times, the last time into dead letter."""
    await queue.enqueue(
        conn,
        NewItem(
            event_id=event_id,
            event_type=event_type,
            plugin="greeter",
            channel="room",
            max_retries=attempts - 1,
            event_data={"msg": f"hello {event_id}"},
        ),
    )
    for attempt in range(attempts):
        taken = await take(conn, event_id)
        outcome = await queue.fail(
            conn, taken.lease, error=f"HTTP 500 on try {attempt + 1}", error_code="http_500"
        )
        assert outcome.accepted
    final = await queue.get_by_event_id(conn, event_id)
    assert final is not None
    assert final.status is RetryStatus.DEAD_LETTER


async def backdate(conn: Any, event_id: str, days: float) -> None:
    """Make an item look last changed ``days`` ago."""
    await conn.execute(
        "UPDATE daz_retry_queue SET updated_at = now() - make_interval(secs => $2) "
        "WHERE event_id = $1",
        event_id,
        days * 86400,
    )


async def populate(conn: Any) -> dict[str, int]:
    """p1 pending; d1 (two attempts), d2 dead chat.send; d3 dead db.write; c1 completed."""
    await queue.enqueue(
        conn, NewItem(event_id="p1", event_type="chat.send", plugin="greeter", channel="room")
    )
    await dead_letter(conn, "d1", "chat.send", attempts=2)
    await dead_letter(conn, "d2", "chat.send")
    await dead_letter(conn, "d3", "db.write")
    await queue.enqueue(conn, NewItem(event_id="c1", event_type="db.write"))
    assert await queue.complete(conn, (await take(conn, "c1")).lease)
    return await ids_by_event(conn)


@pytest.fixture
def items(pg: Any) -> dict[str, int]:
    """The database of ``pg`` filled by `populate`; item id per event id."""
    result: dict[str, int] = pg.run(populate)
    return result


def statuses(pg: Any) -> dict[str, str]:
    """Status per event id of every item in the database."""

    async def fetch(conn: Any) -> dict[str, str]:
        rows = await conn.fetch("SELECT event_id, status FROM daz_retry_queue")
        return {row["event_id"]: row["status"] for row in rows}

    result: dict[str, str] = pg.run(fetch)
    return result


# --- stats, list, dead-letters, show, alerts ---------------------------------------------


def test_stats_table(pg: Any, items: dict[str, int]) -> None:
    """`queue stats` prints one aligned row per status, type and plugin, and the totals."""
    result = run_cli(pg, "stats")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["STATUS", "EVENT", "TYPE", "PLUGIN"]
    dead_chat = next(line for line in lines if line.startswith("dead_letter") and "chat" in line)
    assert dead_chat.split()[:4] == ["dead_letter", "chat.send", "greeter", "2"]
    # aligned: every column starts at the same offset in the header and the rows
    assert dead_chat.index("chat.send") == lines[0].index("EVENT TYPE")
    assert "total 5: pending 1, completed 1, dead_letter 3" in result.stdout
    assert "database: " in result.stderr


def test_stats_json(pg: Any, items: dict[str, int]) -> None:
    """`queue stats --json` gives totals by status and the view's rows with ISO times."""
    data = ok_json(run_cli(pg, "stats", "--json"))
    assert data["total"] == 5
    assert data["by_status"] == {
        "pending": 1,
        "processing": 0,
        "completed": 1,
        "failed": 0,
        "dead_letter": 3,
    }
    group = next(
        g for g in data["groups"] if g["status"] == "dead_letter" and g["event_type"] == "chat.send"
    )
    assert group["item_count"] == 2
    assert group["plugin"] == "greeter"
    assert group["max_retry_count"] == 2
    assert datetime.fromisoformat(group["oldest_created_at"]).tzinfo is not None


def test_stats_of_an_empty_queue(pg: Any) -> None:
    """An empty queue says so, and its JSON has zero totals."""
    assert run_cli(pg, "stats").stdout == "the queue is empty\n"
    assert ok_json(run_cli(pg, "stats", "--json"))["total"] == 0


def test_list_table_with_filters(pg: Any, items: dict[str, int]) -> None:
    """`queue list` filters by status and type and shows one aligned row per item."""
    everything = run_cli(pg, "list")
    assert everything.exit_code == 0, everything.output
    assert len(everything.stdout.splitlines()) == 1 + 5
    result = run_cli(pg, "list", "--status", "dead_letter", "--type", "chat.send")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["ID", "STATUS", "EVENT"]
    assert [int(row.split()[0]) for row in rows] == [items["d1"], items["d2"]]
    assert all("HTTP 500" in row for row in rows)
    assert {row.index("dead_letter") for row in rows} == {header.index("STATUS")}


def test_list_json_and_limit(pg: Any, items: dict[str, int]) -> None:
    """`queue list --json --limit N` gives the first N items with every field; a note tells
    that more exist."""
    result = run_cli(pg, "list", "--json", "--limit", "2")
    data = ok_json(result)
    assert [i["event_id"] for i in data] == ["p1", "d1"]
    assert data[1]["status"] == "dead_letter"
    assert data[1]["event_data"] == {"msg": "hello d1"}
    assert data[1]["last_error_code"] == "http_500"
    assert datetime.fromisoformat(data[1]["updated_at"]).tzinfo is not None
    assert "raise --limit" in result.stderr
    complete = run_cli(pg, "list", "--json", "--limit", "5")
    assert len(ok_json(complete)) == 5
    assert "raise --limit" not in complete.stderr


def test_list_with_no_match(pg: Any, items: dict[str, int]) -> None:
    """A filter that matches nothing prints "no items" (and [] as JSON)."""
    assert run_cli(pg, "list", "--type", "nothing.here").stdout == "no items\n"
    assert ok_json(run_cli(pg, "list", "--status", "failed", "--json")) == []


@pytest.mark.parametrize(
    "args",
    [
        ("list", "--status", "sleeping"),
        ("list", "--limit", "0"),
        ("list", "--limit", "many"),
        ("dead-letters", "--limit", "-1"),
    ],
)
def test_list_rejects_bad_filters(pg: Any, args: tuple[str, ...]) -> None:
    """An unknown status or a bad limit is a usage error (exit 2)."""
    result = run_cli(pg, *args)
    assert result.exit_code == 2
    assert "Invalid value" in result.stderr


def test_dead_letters_table_and_json(pg: Any, items: dict[str, int]) -> None:
    """`queue dead-letters` lists only dead letters, filtered by type, in both formats."""
    result = run_cli(pg, "dead-letters")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert "DEAD SINCE" in header
    assert [int(row.split()[0]) for row in rows] == [items["d1"], items["d2"], items["d3"]]
    assert "2/1" in rows[0]  # two tries of one retry allowed
    data = ok_json(run_cli(pg, "dead-letters", "--type", "db.write", "--json"))
    assert [(i["id"], i["status"]) for i in data] == [(items["d3"], "dead_letter")]


def test_dead_letters_when_there_are_none(pg: Any) -> None:
    """Without dead letters the command says so."""
    assert run_cli(pg, "dead-letters").stdout == "no dead letters\n"


def test_show_item_with_history(pg: Any, items: dict[str, int]) -> None:
    """`queue show ID` prints every field and one row per attempt."""
    result = run_cli(pg, "show", str(items["d1"]))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"item {items['d1']}\n")
    for field in (
        "event_id",
        "event_type",
        "status",
        "operation_type",
        "next_retry_at",
        "lock_token",
        "last_error",
        "tags",
        "created_at",
        "checkpoint",
    ):
        assert f"  {field} " in out, field
    assert '"msg": "hello d1"' in out
    assert "history (2 attempts):" in out
    history = out.split("history (2 attempts):\n")[1].splitlines()
    assert history[0].split()[:2] == ["ATTEMPT", "WORKER"]
    assert history[1].split()[0] == "1"
    assert "failed" in history[1]
    assert "HTTP 500 on try 1" in history[1]
    assert "dead_letter" in history[2]


def test_show_json(pg: Any, items: dict[str, int]) -> None:
    """`queue show ID --json` gives the item's fields and its history with ISO times."""
    data = ok_json(run_cli(pg, "show", str(items["d1"]), "--json"))
    item = data["item"]
    assert item["id"] == items["d1"]
    assert item["event_id"] == "d1"
    assert item["retry_count"] == 2
    assert item["tags"] == []
    assert item["lock_token"] is None
    assert [h["outcome"] for h in data["history"]] == ["failed", "dead_letter"]
    assert [h["attempt"] for h in data["history"]] == [1, 2]
    first = data["history"][0]
    assert first["error_code"] == "http_500"
    assert datetime.fromisoformat(first["finished_at"]) >= datetime.fromisoformat(
        first["started_at"]
    )
    assert len(first["lock_token"]) == 36


def test_show_item_without_attempts(pg: Any, items: dict[str, int]) -> None:
    """A pending item that never ran shows an empty history."""
    result = run_cli(pg, "show", str(items["p1"]))
    assert "history: no attempts yet" in result.stdout
    assert ok_json(run_cli(pg, "show", str(items["p1"]), "--json"))["history"] == []


def test_show_unknown_id(pg: Any, items: dict[str, int]) -> None:
    """An unknown id exits 1 with "no queue item N", in both formats."""
    for extra in ((), ("--json",)):
        result = run_cli(pg, "show", "999", *extra)
        assert result.exit_code == 1
        assert "no queue item 999" in result.stderr
        assert result.stdout == ""


@pytest.mark.parametrize("bad", ["abc", "0", "-3", "99999999999999999999"])
def test_show_rejects_bad_ids(pg: Any, bad: str) -> None:
    """An id that is not a positive 64-bit integer is a usage error."""
    assert run_cli(pg, "show", bad).exit_code == 2


def test_alerts_table_and_json(pg: Any, items: dict[str, int]) -> None:
    """`queue alerts` reports dead letters as errors and nearly exhausted items as warnings."""

    async def near_max(conn: Any) -> None:
        await queue.enqueue(conn, NewItem(event_id="n1", event_type="chat.send", max_retries=1))
        await queue.fail(conn, (await take(conn, "n1")).lease, error="timeout", error_code="t")

    pg.run(near_max)
    result = run_cli(pg, "alerts")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["SEVERITY", "ALERT", "ID"]
    assert sum(row.startswith("error") and "dead_letter" in row for row in rows) == 3
    assert any(row.startswith("warning") and "near_max_retries" in row for row in rows)
    data = ok_json(run_cli(pg, "alerts", "--json"))
    assert sorted((a["alert_type"], a["event_id"]) for a in data) == [
        ("dead_letter", "d1"),
        ("dead_letter", "d2"),
        ("dead_letter", "d3"),
        ("near_max_retries", "n1"),
    ]
    near = next(a for a in data if a["alert_type"] == "near_max_retries")
    assert (near["severity"], near["status"], near["retry_count"]) == ("warning", "pending", 1)
    assert datetime.fromisoformat(near["since"]).tzinfo is not None


def test_no_alerts(pg: Any) -> None:
    """A healthy queue has no alerts."""
    assert run_cli(pg, "alerts").stdout == "no alerts\n"
    assert ok_json(run_cli(pg, "alerts", "--json")) == []


# --- requeue -----------------------------------------------------------------------------


def test_requeue_one(pg: Any, items: dict[str, int]) -> None:
    """`queue requeue ID` puts that dead letter back as pending with its retries reset."""
    result = run_cli(pg, "requeue", str(items["d2"]))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"requeued 1 item: {items['d2']}\n"
    assert statuses(pg)["d2"] == "pending"
    assert statuses(pg)["d1"] == "dead_letter"
    shown = ok_json(run_cli(pg, "show", str(items["d2"]), "--json"))
    assert shown["item"]["retry_count"] == 0
    last = shown["history"][-1]
    assert last["outcome"] == "requeued"
    assert last["worker_id"].startswith("cli:")


def test_requeue_several_json(pg: Any, items: dict[str, int]) -> None:
    """`queue requeue ID ID --json` lists what was requeued."""
    data = ok_json(run_cli(pg, "requeue", str(items["d1"]), str(items["d3"]), "--json"))
    assert data == {"requeued": [items["d1"], items["d3"]], "not_found": [], "not_dead": {}}
    assert statuses(pg) == {
        "p1": "pending",
        "d1": "pending",
        "d2": "dead_letter",
        "d3": "pending",
        "c1": "completed",
    }


def test_requeue_unknown_and_live_ids(pg: Any, items: dict[str, int]) -> None:
    """Unknown ids and items that are not dead letters are reported and exit 1; the others
    are still requeued."""
    result = run_cli(pg, "requeue", str(items["d1"]), "999", str(items["p1"]))
    assert result.exit_code == 1
    assert result.stdout == f"requeued 1 item: {items['d1']}\n"
    assert "no queue item 999" in result.stderr
    assert f"item {items['p1']} is pending, not a dead letter" in result.stderr
    assert statuses(pg)["d1"] == "pending"
    again = run_cli(pg, "requeue", "999", "--json")
    assert again.exit_code == 1
    assert json.loads(again.stdout) == {"requeued": [], "not_found": [999], "not_dead": {}}


def test_requeue_all_dead_with_type_filter(pg: Any, items: dict[str, int]) -> None:
    """`queue requeue --all-dead --type T` requeues the dead letters of that type only."""
    result = run_cli(pg, "requeue", "--all-dead", "--type", "chat.send")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"requeued 2 items: {items['d1']}, {items['d2']}\n"
    assert statuses(pg) == {
        "p1": "pending",
        "d1": "pending",
        "d2": "pending",
        "d3": "dead_letter",
        "c1": "completed",
    }
    for name in ("d1", "d2"):
        history = ok_json(run_cli(pg, "show", str(items[name]), "--json"))["history"]
        assert [(h["outcome"], h["worker_id"][:4]) for h in history][-1] == ("requeued", "cli:")
    nothing = run_cli(pg, "requeue", "--all-dead", "--type", "chat.send")
    assert nothing.exit_code == 0
    assert nothing.stdout == "no dead letters matched: nothing requeued\n"


def test_requeue_all_dead_older_than_json(pg: Any, items: dict[str, int]) -> None:
    """`--older-than` requeues only items dead for longer than the duration."""
    pg.run(lambda conn: backdate(conn, "d2", days=3))
    data = ok_json(run_cli(pg, "requeue", "--all-dead", "--older-than", "2d", "--json"))
    assert data["requeued"] == [items["d2"]]
    data = ok_json(run_cli(pg, "requeue", "--all-dead", "--json"))
    assert data["requeued"] == [items["d1"], items["d3"]]
    assert "dead_letter" not in statuses(pg).values()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give the ids"),
        (("1", "--all-dead"), "not both"),
        (("1", "--type", "chat.send"), "only go with --all-dead"),
        (("1", "--older-than", "1d"), "only go with --all-dead"),
        (("x",), "Invalid value"),
    ],
)
def test_requeue_usage_errors(pg: Any, args: tuple[str, ...], message: str) -> None:
    """Ids together with --all-dead, neither, or filters without it are usage errors."""
    result = run_cli(pg, "requeue", *args)
    assert result.exit_code == 2
    assert message in result.stderr


@pytest.mark.parametrize("bad", ["7", "7x", "d", "-1d", "1.d", "1d-2h", "", "seven days"])
def test_bad_durations_are_usage_errors(pg: Any, items: dict[str, int], bad: str) -> None:
    """A malformed --older-than exits 2 with a message saying what a duration looks like."""
    for args in (
        ("requeue", "--all-dead", "--older-than", bad),
        ("purge", "--status", "dead_letter", "--older-than", bad, "--yes"),
    ):
        result = run_cli(pg, *args)
        assert result.exit_code == 2, (args, result.output)
        assert "is not a duration" in result.stderr
        assert "90s, 30m, 12h, 7d" in result.stderr
    assert list(statuses(pg).values()).count("dead_letter") == 3


# --- purge -------------------------------------------------------------------------------


def test_purge_declined_deletes_nothing(pg: Any, items: dict[str, int]) -> None:
    """Answering no to the confirmation exits 1 and leaves every item in place."""
    result = run_cli(pg, "purge", "--status", "dead_letter", "--older-than", "0s", input="n\n")
    assert result.exit_code == 1
    assert "Delete 3 dead_letter items last changed more than 0s ago" in result.stderr
    assert "nothing deleted" in result.stderr
    assert len(statuses(pg)) == 5


def test_purge_without_an_answer_deletes_nothing(pg: Any, items: dict[str, int]) -> None:
    """With no input to answer the prompt (a script without --yes) nothing is deleted."""
    result = run_cli(pg, "purge", "--status", "dead_letter", "--older-than", "0s", input="")
    assert result.exit_code == 1
    assert len(statuses(pg)) == 5


def test_purge_confirmed_at_the_prompt(pg: Any, items: dict[str, int]) -> None:
    """Answering yes deletes the matching items and their history."""
    result = run_cli(pg, "purge", "--status", "dead_letter", "--older-than", "0s", input="y\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "deleted 3 dead_letter items last changed more than 0s ago\n"
    assert statuses(pg) == {"p1": "pending", "c1": "completed"}
    history = pg.run(lambda conn: conn.fetchval("SELECT count(*) FROM daz_retry_history"))
    assert history == 1  # c1's attempt


def test_purge_yes_with_age_and_type(pg: Any, items: dict[str, int]) -> None:
    """`--yes` skips the prompt; only items older than --older-than (and of --type) go."""
    pg.run(lambda conn: backdate(conn, "d1", days=8))
    pg.run(lambda conn: backdate(conn, "d3", days=8))
    result = run_cli(
        pg, "purge", "--status", "dead_letter", "--older-than", "7d", "--type", "chat.send", "-y"
    )
    assert result.exit_code == 0, result.output
    assert "Delete" not in result.stderr
    assert result.stdout == (
        "deleted 1 dead_letter item of type chat.send last changed more than 7d ago\n"
    )
    assert set(statuses(pg)) == {"p1", "d2", "d3", "c1"}


def test_purge_json(pg: Any, items: dict[str, int]) -> None:
    """`queue purge --json --yes` reports the count and the criteria."""
    pg.run(lambda conn: backdate(conn, "c1", days=1))
    data = ok_json(
        run_cli(pg, "purge", "--status", "completed", "--older-than", "12h", "--yes", "--json")
    )
    assert data == {
        "deleted": 1,
        "status": "completed",
        "event_type": None,
        "older_than_seconds": 43200.0,
    }
    assert "c1" not in statuses(pg)


def test_purge_with_nothing_to_delete_does_not_ask(pg: Any, items: dict[str, int]) -> None:
    """When nothing matches there is no prompt and the exit status is 0."""
    result = run_cli(pg, "purge", "--status", "dead_letter", "--older-than", "30d")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("nothing to purge")
    assert "Delete" not in result.stderr


@pytest.mark.parametrize("status", ["pending", "processing"])
def test_purge_refuses_live_items_without_force(
    pg: Any, items: dict[str, int], status: str
) -> None:
    """Purging pending or processing items is refused (exit 1) unless --force is given."""
    if status == "processing":
        pg.run(lambda conn: take(conn, "p1"))
    refused = run_cli(pg, "purge", "--status", status, "--older-than", "0s", "--yes")
    assert refused.exit_code == 1
    assert f"refusing to purge {status} items" in refused.stderr
    assert "--force" in refused.stderr
    assert statuses(pg)["p1"] == status
    forced = run_cli(pg, "purge", "--status", status, "--older-than", "0s", "--yes", "--force")
    assert forced.exit_code == 0, forced.output
    assert "p1" not in statuses(pg)


def test_purge_requires_status_and_age(pg: Any) -> None:
    """--status and --older-than are both required."""
    assert run_cli(pg, "purge", "--status", "completed").exit_code == 2
    assert run_cli(pg, "purge", "--older-than", "1d").exit_code == 2


# --- cleanup -----------------------------------------------------------------------------


def test_cleanup_table_and_json(pg: Any, items: dict[str, int]) -> None:
    """`queue cleanup` deletes finished items past the retention and keeps dead letters."""
    pg.run(lambda conn: backdate(conn, "c1", days=10))
    pg.run(lambda conn: backdate(conn, "d1", days=10))
    kept = run_cli(pg, "cleanup", "--retention-days", "30")
    assert kept.stdout.startswith("deleted 0 items")
    result = run_cli(pg, "cleanup")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "deleted 1 item: completed and expired items older than 7 days (dead letters kept)\n"
    )
    assert set(statuses(pg)) == {"p1", "d1", "d2", "d3"}
    data = ok_json(
        run_cli(
            pg, "cleanup", "--retention-days", "1", "--dead-letter-retention-days", "9", "--json"
        )
    )
    assert data == {
        "deleted": 1,
        "batches": 1,
        "batch_size": 5000,
        "retention_days": 1.0,
        "dead_letter_retention_days": 9.0,
    }
    assert set(statuses(pg)) == {"p1", "d2", "d3"}


async def finished_backlog(conn: Any, count: int) -> None:
    """`count` completed items last changed 10 days ago (a backlog for the cleanup), a
    completed one of today and a pending one; and a log of which transaction deleted
    each item (``deleted_by``: a row trigger beside the queue's own)."""
    names = [f"old-{n}" for n in range(count)] + ["new", "pending"]
    await queue.enqueue_many(conn, [NewItem(event_id=n, event_type="t") for n in names])
    for item in await queue.acquire(conn, "w", batch_size=count + 1):
        if item.event_id != "pending":
            assert await queue.complete(conn, item.lease)
    await conn.execute(
        "UPDATE daz_retry_queue SET updated_at = now() - interval '10 days'"
        " WHERE event_id LIKE 'old-%'"
    )
    await conn.execute(
        """
        CREATE TABLE deleted_by (event_id text, xid bigint);
        CREATE FUNCTION log_delete() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO deleted_by VALUES (OLD.event_id, txid_current());
            RETURN OLD;
        END $$;
        CREATE TRIGGER log_delete AFTER DELETE ON daz_retry_queue
            FOR EACH ROW EXECUTE FUNCTION log_delete();
        """
    )


async def deletions(conn: Any) -> list[int]:
    """Items deleted per transaction, in the order of the transactions."""
    rows = await conn.fetch("SELECT count(*) FROM deleted_by GROUP BY xid ORDER BY xid")
    return [r[0] for r in rows]


def test_cleanup_deletes_a_backlog_in_batches_each_its_own_transaction(pg: Any) -> None:
    """A backlog of 25 old finished items goes in batches of at most --batch-size, each
    deleted by a transaction of its own (10, 10 and 5 items, as a trigger logging the
    deleting transaction shows), not in one statement; the new and the pending items
    stay."""
    pg.run(lambda conn: finished_backlog(conn, 25))
    data = ok_json(run_cli(pg, "cleanup", "--batch-size", "10", "--json"))
    assert data == {
        "deleted": 25,
        "batches": 3,
        "batch_size": 10,
        "retention_days": 7.0,
        "dead_letter_retention_days": None,
    }
    assert pg.run(deletions) == [10, 10, 5]
    assert set(statuses(pg)) == {"new", "pending"}
    again = run_cli(pg, "cleanup", "--batch-size", "10")
    assert again.stdout.startswith("deleted 0 items:"), again.output


def test_cleanup_text_names_its_batches(pg: Any) -> None:
    """The plain output says how many batches a cleanup of several took."""
    pg.run(lambda conn: finished_backlog(conn, 5))
    result = run_cli(pg, "cleanup", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "deleted 5 items in 3 batches of at most 2: completed and expired items older than "
        "7 days (dead letters kept)\n"
    )
    assert pg.run(deletions) == [2, 2, 1]


def test_cleanup_failing_midway_says_what_it_had_deleted(pg: Any) -> None:
    """A batch that fails (here: a trigger refusing the third deleting transaction) ends
    the command with an error that says how many items the batches before it deleted
    (they committed: gone), and the rest are still there for the next run."""

    async def refuse_third(conn: Any) -> None:
        await finished_backlog(conn, 7)
        await conn.execute(
            """
            CREATE FUNCTION refuse_third() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF (SELECT count(DISTINCT xid) FROM deleted_by
                    WHERE xid <> txid_current()) >= 2 THEN
                    RAISE EXCEPTION 'refused by the test';
                END IF;
                RETURN OLD;
            END $$;
            CREATE TRIGGER refuse_third BEFORE DELETE ON daz_retry_queue
                FOR EACH ROW EXECUTE FUNCTION refuse_third();
            """
        )

    pg.run(refuse_third)
    result = CliRunner().invoke(
        cli, ["queue", "cleanup", "--batch-size", "3", "--database-url", pg.dsn]
    )
    assert result.exit_code == 1, result.output
    assert "refused by the test" in result.output
    assert "had deleted 6 item(s) in 2 batch(es) before it stopped" in result.output
    assert pg.run(deletions) == [3, 3]
    assert len([n for n in statuses(pg) if n.startswith("old-")]) == 1


def test_cleanup_batch_size_must_be_positive(pg: Any) -> None:
    """--batch-size 0 is a usage error naming the option; nothing is deleted."""
    pg.run(lambda conn: finished_backlog(conn, 2))
    result = run_cli(pg, "cleanup", "--batch-size", "0")
    assert result.exit_code == 2
    assert "--batch-size" in result.output
    assert pg.run(deletions) == []


def test_cleanup_defaults_match_the_periodic_cleanup() -> None:
    """The command's batch size default and ceiling are the periodic cleanup's (kept apart
    so that the CLI's start imports no driver)."""
    from daz_actors.app import cli_queue
    from daz_actors.retry import cleanup

    assert cli_queue.DEFAULT_CLEANUP_BATCH == cleanup.BATCH_SIZE
    assert cli_queue.MAX_CLEANUP_BATCH == cleanup.MAX_BATCH_SIZE


def test_cleanup_rejects_negative_retention(pg: Any) -> None:
    """A negative retention is a usage error."""
    assert run_cli(pg, "cleanup", "--retention-days", "-1").exit_code == 2


# --- database resolution -----------------------------------------------------------------


def test_database_url_from_the_environment(pg: Any, items: dict[str, int]) -> None:
    """$DAZ_DATABASE_URL is used when --database-url is not given."""
    result = CliRunner().invoke(cli, ["queue", "stats", "--json"], env={"DAZ_DATABASE_URL": pg.dsn})
    assert ok_json(result)["total"] == 5
    assert "(from $DAZ_DATABASE_URL)" in result.stderr


def test_unreachable_database_hides_the_password() -> None:
    """A connection failure exits 1 naming the database without its password."""
    url = "postgresql://operator:s3cret-pw@127.0.0.1:1/nowhere"
    result = CliRunner().invoke(cli, ["queue", "stats", "--database-url", url])
    assert result.exit_code == 1
    assert "operator:***@127.0.0.1:1/nowhere" in result.stderr
    assert "s3cret-pw" not in result.output


def test_unmigrated_database_says_to_migrate(pg_empty: Any) -> None:
    """A database without the queue tables exits 1 and says to run `migrate`."""
    result = run_cli(pg_empty, "alerts")
    assert result.exit_code == 1
    assert "run `daz-actors migrate` first" in result.stderr


# --- durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1.5h", timedelta(minutes=90)),
        (" 7D ", timedelta(days=7)),
        ("0s", timedelta(0)),
    ],
)
def test_duration_parsing(text: str, expected: timedelta) -> None:
    """Durations are numbers with a unit, possibly several in a row."""
    assert DURATION.convert(text, None, None) == expected


def test_duration_too_long() -> None:
    """A duration beyond what a timedelta holds is refused, not a crash."""
    with pytest.raises(click.BadParameter, match="too long"):
        DURATION.convert("9" * 400 + "d", None, None)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(days=7), "7d"),
        (timedelta(days=1, hours=12), "1d12h"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(0), "0s"),
    ],
)
def test_format_duration(value: timedelta, text: str) -> None:
    """Durations print compactly, largest unit first."""
    assert format_duration(value) == text


# --- the queue functions behind the commands ---------------------------------------------


def test_list_and_count_items(pg: Any, items: dict[str, int]) -> None:
    """`list_items` and `count_items` filter by status, type and age."""

    async def body(conn: Any) -> None:
        listed = await queue.list_items(conn, status=RetryStatus.DEAD_LETTER, event_type="db.write")
        assert [i.event_id for i in listed] == ["d3"]
        assert [i.event_id for i in await queue.list_items(conn, limit=2)] == ["p1", "d1"]
        assert await queue.count_items(conn) == 5
        assert await queue.count_items(conn, status=RetryStatus.DEAD_LETTER) == 3
        await backdate(conn, "d2", days=2)
        old = timedelta(days=1)
        assert await queue.count_items(conn, older_than=old) == 1
        with pytest.raises(QueueInputError, match="limit"):
            await queue.list_items(conn, limit=0)
        with pytest.raises(QueueInputError, match="status"):
            await queue.count_items(conn, status="pending")  # type: ignore[arg-type]
        with pytest.raises(QueueInputError, match="older_than"):
            await queue.count_items(conn, older_than=timedelta(seconds=-1))

    pg.run(body)


def test_requeue_dead_letters_notifies_once(pg: Any, items: dict[str, int]) -> None:
    """A bulk requeue wakes workers with one notification carrying the count; an empty one
    sends none."""

    async def body(conn: Any) -> None:
        listener = await asyncpg.connect(pg.dsn)
        received: asyncio.Queue[str] = asyncio.Queue()
        try:
            await listener.add_listener(
                queue.NOTIFY_CHANNEL, lambda *args: received.put_nowait(args[3])
            )
            assert await queue.requeue_dead_letters(conn, event_type="chat.send") == [
                items["d1"],
                items["d2"],
            ]
            assert await asyncio.wait_for(received.get(), 10) == "2"
            assert await queue.requeue_dead_letters(conn, event_type="chat.send") == []
            await conn.execute(f"NOTIFY {queue.NOTIFY_CHANNEL}, 'marker'")
            # notifications arrive in order: the marker comes first if the empty call sent none
            assert await asyncio.wait_for(received.get(), 10) == "marker"
        finally:
            await listener.close()

    pg.run(body)


def test_purge_function(pg: Any, items: dict[str, int]) -> None:
    """`purge` deletes by status and age, and needs both."""

    async def body(conn: Any) -> None:
        await backdate(conn, "d3", days=2)
        gone = await queue.purge(conn, status=RetryStatus.DEAD_LETTER, older_than=timedelta(days=1))
        assert gone == 1
        assert await queue.get(conn, items["d3"]) is None
        assert await queue.history(conn, items["d3"]) == []
        with pytest.raises(QueueInputError, match="status"):
            await queue.purge(conn, status=None, older_than=timedelta(0))  # type: ignore[arg-type]
        with pytest.raises(QueueInputError, match="older_than"):
            await queue.purge(conn, status=RetryStatus.COMPLETED, older_than=None)  # type: ignore[arg-type]

    pg.run(body)


def test_replay_runs_finished_items_again_and_records_who_did(pg: Any) -> None:
    """`queue replay` takes completed (and expired) items by id or by filter, with
    --dry-run changing nothing; each replay is a history row naming who asked; a dead
    letter or an unknown id is refused (requeue is for dead letters)."""

    async def setup(conn: Any) -> dict[str, int]:
        for event_id, plugin in (("r1", "greeter"), ("r2", "greeter"), ("r3", "quotes")):
            await queue.enqueue(
                conn, NewItem(event_id=event_id, event_type="t.done", plugin=plugin)
            )
            await queue.complete(conn, (await take(conn, event_id)).lease)
        await dead_letter(conn, "d1", "t.dead")
        return await ids_by_event(conn)

    ids = pg.run(setup)
    dry = ok_json(run_cli(pg, "replay", "--plugin", "greeter", "--dry-run", "--json"))
    assert dry == {"dry_run": True, "replayed": [ids["r1"], ids["r2"]]}

    async def statuses(conn: Any) -> dict[str, str]:
        rows = await conn.fetch("SELECT event_id, status FROM daz_retry_queue")
        return {r["event_id"]: r["status"] for r in rows}

    assert pg.run(statuses)["r1"] == "completed"  # the dry run changed nothing
    done = ok_json(run_cli(pg, "replay", "--plugin", "greeter", "--json"))
    assert done == {"dry_run": False, "replayed": [ids["r1"], ids["r2"]]}
    assert pg.run(statuses) == {
        "r1": "pending", "r2": "pending", "r3": "completed", "d1": "dead_letter"
    }  # fmt: skip

    async def replays(conn: Any) -> list[tuple[str, str]]:
        rows = await conn.fetch(
            "SELECT event_id, worker_id FROM daz_retry_history WHERE outcome = 'replayed'"
            " ORDER BY event_id"
        )
        return [(r["event_id"], r["worker_id"]) for r in rows]

    recorded = pg.run(replays)
    assert [event_id for event_id, _ in recorded] == ["r1", "r2"]
    assert all(who.startswith("cli:") for _, who in recorded)

    refused = run_cli(pg, "replay", str(ids["r3"]), str(ids["d1"]), "999999")
    assert refused.exit_code == 1
    assert f"replayed 1 item: {ids['r3']}" in refused.stdout
    assert f"item {ids['d1']} does not exist or is not finished" in refused.output
    assert "item 999999 does not exist" in refused.output
    usage = run_cli(pg, "replay")
    assert usage.exit_code == 2
    assert "give item ids or at least one of" in usage.output
