"""Migrations against real PostgreSQL: up, down, status, concurrency, failure."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner

from daz_actors.app.cli_db import migrate_command
from daz_actors.storage.migrations import (
    ADVISORY_LOCK_KEY,
    MigrationError,
    default_source,
    load_migrations,
    migrate,
    rollback,
    split_sql,
    status,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schema"
ALL = [m.version for m in load_migrations()]  # every shipped migration, in order
LATEST = ALL[-1]
BROKEN = f"{LATEST + 1:04d}_broken"  # a migration after the last shipped one

CATALOG = """
SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type
       || ' null=' || is_nullable || ' default=' || coalesce(column_default, '')
FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL SELECT 'function ' || p.oid::regprocedure::text || ' ' || md5(p.prosrc)
FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
UNION ALL SELECT 'view ' || viewname || ' ' || md5(definition) FROM pg_views
WHERE schemaname = 'public'
UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
UNION ALL SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
ORDER BY 1
"""


async def catalog(conn: Any) -> list[str]:
    """Everything the migrations create, as sorted text lines, plus the version rows."""
    rows = await conn.fetch(CATALOG)
    lines = [row[0] for row in rows]
    if await conn.fetchval("SELECT to_regclass('daz_schema_migrations') IS NOT NULL"):
        versions = await conn.fetch("SELECT version, name FROM daz_schema_migrations ORDER BY 1")
        lines += [f"migration {row['version']} {row['name']}" for row in versions]
    return lines


def test_up_down_up_gives_the_same_schema(pg_empty: Any) -> None:
    """Migrating up, rolling everything back and migrating up again ends in the same schema."""

    async def body(conn: Any) -> None:
        before = await catalog(conn)
        applied = await migrate(conn)
        assert [m.version for m in applied] == ALL
        first = await catalog(conn)
        assert "view daz_retry_queue_stats" in " ".join(first)
        rolled = await rollback(conn, 0)
        assert [m.version for m in rolled] == ALL[::-1]
        # only the (now empty) version table remains
        assert [line for line in await catalog(conn) if "daz_schema_migrations" not in line] == [
            line for line in before if "daz_schema_migrations" not in line
        ]
        assert await conn.fetchval("SELECT count(*) FROM daz_schema_migrations") == 0
        assert [m.version for m in await migrate(conn)] == ALL
        assert await catalog(conn) == first

    pg_empty.run(body)


def test_migrate_to_and_status(pg_empty: Any) -> None:
    """`migrate --to 1` stops at version 1, status reports it, and a later run finishes the job."""

    async def body(conn: Any) -> None:
        report = await status(conn)
        assert report.current_version == 0
        assert [m.version for m in report.pending] == ALL
        await migrate(conn, to=1)
        report = await status(conn)
        assert [a.version for a in report.applied] == [1]
        assert [m.version for m in report.pending] == ALL[1:]
        assert await conn.fetchval("SELECT to_regproc('acquire_retry_items')") is None
        assert await migrate(conn, to=1) == []
        await migrate(conn)
        assert (await status(conn)).current_version == LATEST
        await rollback(conn, 1)
        assert (await status(conn)).current_version == 1
        assert await conn.fetchval("SELECT to_regclass('daz_retry_queue')") is not None

    pg_empty.run(body)


def test_unknown_target_versions_are_refused(pg_empty: Any) -> None:
    """Asking for a version no file has is an error that changes nothing."""

    async def body(conn: Any) -> None:
        with pytest.raises(MigrationError, match="no migration 70"):
            await migrate(conn, to=70)
        with pytest.raises(MigrationError, match="no migration 90"):
            await rollback(conn, 90)
        assert (await status(conn)).current_version == 0

    pg_empty.run(body)


def test_concurrent_migrations_apply_each_migration_once(pg_empty: Any) -> None:
    """Two connections released together from a held lock apply each migration once."""

    async def body(conn: Any) -> None:
        others = [await asyncpg.connect(pg_empty.dsn) for _ in range(2)]
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
            runs = [asyncio.ensure_future(migrate(other)) for other in others]
            await _wait_for_lock_waiters(conn, 2)
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
            results = await asyncio.gather(*runs)
        finally:
            for other in others:
                await other.close()
        applied = sorted(m.version for result in results for m in result)
        assert applied == ALL
        assert sorted(len(result) for result in results) == [0, len(ALL)]
        rows = await conn.fetch("SELECT version FROM daz_schema_migrations ORDER BY 1")
        assert [row["version"] for row in rows] == ALL

    pg_empty.run(body)


async def _wait_for_lock_waiters(conn: Any, count: int, deadline: float = 10.0) -> None:
    """Poll pg_locks until ``count`` sessions wait for the migration lock."""
    end = time.monotonic() + deadline
    while True:
        waiting = await conn.fetchval(
            """
            SELECT count(*) FROM pg_locks
            WHERE locktype = 'advisory' AND NOT granted
              AND ((classid::bigint << 32) | objid::bigint) = $1
            """,
            ADVISORY_LOCK_KEY,
        )
        if waiting >= count:
            return
        assert time.monotonic() < end, f"only {waiting} of {count} migrations reached the lock"
        await asyncio.sleep(0.01)


def test_two_migrate_processes_apply_each_migration_once(pg_empty: Any) -> None:
    """Two `migrate` processes started together apply each migration exactly once between them."""
    code = "from daz_actors.app.cli_db import migrate_command; migrate_command()"

    def start_processes() -> list[subprocess.Popen[str]]:
        return [
            subprocess.Popen(
                [sys.executable, "-c", code, "--database-url", pg_empty.dsn],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]

    async def hold_lock_and_start() -> list[subprocess.CompletedProcess[str]]:
        conn = await asyncpg.connect(pg_empty.dsn)
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
            procs = await asyncio.to_thread(start_processes)
            try:
                await _wait_for_lock_waiters(conn, 2, deadline=60.0)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
            done = []
            for proc in procs:
                out, err = proc.communicate(timeout=60)
                done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
            return done
        finally:
            await conn.close()

    results = asyncio.run(hold_lock_and_start())
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    outputs = sorted(r.stdout for r in results)
    # the core's, then the plugins the shipped config enables (each once, too)
    plugins = [
        "applied plugin remind: 0001_reminders.up.sql",
        "applied plugin tell: 0001_tells.up.sql",
    ]
    assert outputs[0].strip() == "\n".join(
        [*(f"applied {m.up_file}" for m in load_migrations()), *plugins]
    )
    assert outputs[1].strip() == "nothing to apply: the schema is up to date"


def _broken_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "schema"
    shutil.copytree(SCHEMA_DIR, folder)
    (folder / f"{BROKEN}.up.sql").write_text(
        """
        -- a function whose body has semicolons: the splitter must keep it whole
        CREATE FUNCTION broken_helper() RETURNS integer LANGUAGE plpgsql AS $body$
        BEGIN
            PERFORM 1; -- ; inside the body
            RETURN 'a;b' IS NOT NULL::integer;
        END
        $body$;
        CREATE TABLE broken_side_effect (id integer);
        INSERT INTO no_such_table VALUES (1);
        CREATE TABLE never_reached (id integer);
        """
    )
    (folder / f"{BROKEN}.down.sql").write_text("DROP TABLE broken_side_effect;\n")
    return folder


def test_broken_migration_rolls_back_whole_and_names_file_and_statement(
    pg_empty: Any, tmp_path: Path
) -> None:
    """A failing migration leaves the database as it was and the error names file and statement."""
    folder = _broken_folder(tmp_path)

    async def body(conn: Any) -> None:
        await migrate(conn)
        before = await catalog(conn)
        with pytest.raises(MigrationError) as info:
            await migrate(conn, source=folder)
        error = info.value
        assert error.file == f"{BROKEN}.up.sql"
        assert error.statement_number == 3
        assert f"{BROKEN}.up.sql: statement 3 of 4" in str(error)
        assert "INSERT INTO no_such_table VALUES (1)" in str(error)
        assert isinstance(error.__cause__, asyncpg.UndefinedTableError)
        assert await catalog(conn) == before
        assert not conn.is_in_transaction()

    pg_empty.run(body)


def test_broken_migration_on_a_fresh_database_keeps_the_good_ones(
    pg_empty: Any, tmp_path: Path
) -> None:
    """Migrations before the broken one stay applied; the broken one leaves nothing behind."""
    folder = _broken_folder(tmp_path)

    async def body(conn: Any) -> None:
        with pytest.raises(MigrationError, match=BROKEN):
            await migrate(conn, source=folder)
        report = await status(conn, source=folder)
        assert [a.version for a in report.applied] == ALL
        assert [m.version for m in report.pending] == [LATEST + 1]
        assert await conn.fetchval("SELECT to_regclass('broken_side_effect')") is None
        assert await conn.fetchval("SELECT to_regproc('broken_helper')") is None

    pg_empty.run(body)


def test_load_migrations_rejects_inconsistent_folders(tmp_path: Path) -> None:
    """A missing rollback file or a badly named file is reported by name."""
    (tmp_path / "0001_a.up.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"'0001_a\.up\.sql' but no down file"):
        load_migrations(tmp_path)
    (tmp_path / "0001_a.down.sql").write_text("SELECT 1;")
    assert [m.name for m in load_migrations(tmp_path)] == ["a"]
    (tmp_path / "2_no_direction.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"2_no_direction\.sql"):
        load_migrations(tmp_path)


def test_default_source_is_the_repository_schema_folder() -> None:
    """In a checkout the migrations come from the top-level schema/ folder, every one paired."""
    migrations = load_migrations()
    assert Path(str(default_source())).resolve() == SCHEMA_DIR
    assert [(m.version, m.up_file, m.down_file) for m in migrations] == [
        (1, "0001_retry_queue.up.sql", "0001_retry_queue.down.sql"),
        (2, "0002_retry_functions.up.sql", "0002_retry_functions.down.sql"),
        (3, "0003_release_items.up.sql", "0003_release_items.down.sql"),
        (4, "0004_chat_log.up.sql", "0004_chat_log.down.sql"),
        (5, "0005_retry_intents.up.sql", "0005_retry_intents.down.sql"),
        (6, "0006_documents_contract.up.sql", "0006_documents_contract.down.sql"),
        (7, "0007_chat_text.up.sql", "0007_chat_text.down.sql"),
        (8, "0008_retry_fast_path.up.sql", "0008_retry_fast_path.down.sql"),
        (10, "0010_retention.up.sql", "0010_retention.down.sql"),
        (11, "0011_plugin_migrations.up.sql", "0011_plugin_migrations.down.sql"),
        (12, "0012_cluster.up.sql", "0012_cluster.down.sql"),
        (13, "0013_dashboard.up.sql", "0013_dashboard.down.sql"),
        (14, "0014_retry_lean_claim.up.sql", "0014_retry_lean_claim.down.sql"),
        (15, "0015_dashboard_status_index.up.sql", "0015_dashboard_status_index.down.sql"),
        (16, "0016_cluster_hand_over.up.sql", "0016_cluster_hand_over.down.sql"),
    ]


def test_split_sql_respects_quotes_comments_and_dollar_bodies() -> None:
    """Semicolons in strings, identifiers, comments and dollar-quoted bodies do not split."""
    script = """
    -- leading comment; not a statement
    SELECT 'a;b', "we;ird", E'it\\'s;';
    /* block; /* nested; */ still comment; */
    CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;
    DO $tag$ BEGIN PERFORM 'x;$$;'; END $tag$;
    SELECT $1;
    SELECT 2
    """
    assert split_sql(script) == [
        "-- leading comment; not a statement\n    SELECT 'a;b', \"we;ird\", E'it\\'s;'",
        "/* block; /* nested; */ still comment; */\n"
        "    CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$",
        "DO $tag$ BEGIN PERFORM 'x;$$;'; END $tag$",
        "SELECT $1",
        "SELECT 2",
    ]
    assert split_sql("-- only a comment;\n  ;  ") == []


def test_cli_migrate_status_and_rollback(pg_empty: Any) -> None:
    """The click command migrates, reports status and rolls back against a given URL."""
    runner = CliRunner()
    url = ["--database-url", pg_empty.dsn]
    result = runner.invoke(migrate_command, [*url, "--to", "1"])
    assert result.exit_code == 0, result.output
    assert "applied 0001_retry_queue.up.sql" in result.output
    result = runner.invoke(migrate_command, [*url, "--status"])
    assert result.exit_code == 0, result.output
    assert "current version: 1" in result.output
    assert "pending  0002 retry_functions" in result.output
    result = runner.invoke(migrate_command, [*url, "--rollback", "0"])
    assert result.exit_code == 0, result.output
    assert "rolled back 0001_retry_queue.down.sql" in result.output
    result = runner.invoke(migrate_command, [*url, "--to", "1", "--status"])
    assert result.exit_code == 2
    assert "cannot be used together" in result.output


def test_0005_rewrites_queued_items_as_intents_and_back(pg_empty: Any) -> None:
    """Items an earlier version queued become intents when 0005 is applied: the chat log's
    `sql.exec` inserts, `cytube.send_chat` / `_pm`, `command.run`; a foreign `sql.exec` is
    dead-lettered with its statement removed. Rolling back to 0004 restores the old forms."""
    from legacy_sql import LEGACY_CHAT_SQL as CHAT_SQL

    chat_args = ["e1", "lobby", "ann", "hi", 1700000000000, False, 1700000000500, '{"x":1}']
    legacy = {
        "chat": ("sql.exec", {"sql": CHAT_SQL, "args": chat_args}),
        "foreign": ("sql.exec", {"sql": "DROP TABLE daz_chat_messages", "args": []}),
        "pm": ("cytube.send_pm", {"channel": "lobby", "msg": "psst", "to": "bob"}),
        "command": ("command.run", {"channel": "lobby", "command": "uptime", "username": "ann",
                                    "rank": 1, "args": "", "issued_at": 1.5, "reply_to": None}),
    }  # fmt: skip

    async def body(conn: Any) -> None:
        await migrate(conn, to=4)
        for event_id, (event_type, data) in legacy.items():
            await conn.execute(
                "INSERT INTO daz_retry_queue (event_id, event_type, event_data)"
                " VALUES ($1, $2, $3::jsonb)",
                event_id, event_type, json.dumps(data),
            )  # fmt: skip
        await migrate(conn, to=5)
        rows = {
            r["event_id"]: r
            for r in await conn.fetch(
                "SELECT event_id, event_type, event_data::text AS data, status, last_error"
                " FROM daz_retry_queue"
            )
        }
        chat = rows["chat"]
        assert chat["event_type"] == "chat.log"
        assert json.loads(chat["data"]) == {
            "version": 1,
            "args": {"event_id": "e1", "channel": "lobby", "username": "ann", "message": "hi",
                     "sent_ms": 1700000000000, "is_history": False,
                     "received_ms": 1700000000500, "meta": {"x": 1}},
        }  # fmt: skip
        assert rows["pm"]["event_type"] == "cytube.say"
        assert json.loads(rows["pm"]["data"])["args"] == {
            "channel": "lobby", "msg": "psst", "to": "bob", "connection": "",
            "delivered_parts": 0,
        }  # fmt: skip
        assert json.loads(rows["command"]["data"]) == {
            "version": 1, "args": legacy["command"][1]
        }  # fmt: skip
        foreign = rows["foreign"]
        assert foreign["status"] == "dead_letter"
        assert "not one of the bot's own" in foreign["last_error"]
        assert "DROP" not in foreign["data"]

        await rollback(conn, 4)
        back = {
            r["event_id"]: (r["event_type"], json.loads(r["data"]))
            for r in await conn.fetch(
                "SELECT event_id, event_type, event_data::text AS data FROM daz_retry_queue"
            )
        }
        back_type, back_data = back["chat"]
        assert (back_type, back_data["sql"]) == ("sql.exec", CHAT_SQL)
        assert back_data["args"][:7] == chat_args[:7]
        assert json.loads(back_data["args"][7]) == {"x": 1}  # the same JSON, spaced by jsonb
        assert back["pm"] == legacy["pm"]
        assert back["command"] == legacy["command"]

    pg_empty.run(body)


def test_0014_drops_the_history_key_and_its_rollback_restores_it(pg_empty: Any) -> None:
    """Under 0014 a history row needs no key check (one written by hand for a missing item
    is taken); rolling back removes such rows and brings the key, and its cascade, back."""

    async def body(conn: Any) -> None:
        await migrate(conn)
        keys = (
            "SELECT count(*) FROM pg_constraint"
            " WHERE conrelid = 'daz_retry_history'::regclass AND contype = 'f'"
        )
        assert await conn.fetchval(keys) == 0
        item_id = await conn.fetchval(
            "INSERT INTO daz_retry_queue (event_id, event_type) VALUES ('e', 't') RETURNING id"
        )
        for n, target in enumerate((item_id, item_id + 1000)):  # the second: no such item
            await conn.execute(
                "INSERT INTO daz_retry_history (item_id, event_id, attempt, worker_id, "
                "lock_token, finished_at, outcome) VALUES ($1, 'e', 1, 'w', $2, now(), "
                "'completed')",
                target,
                f"00000000-0000-0000-0000-00000000000{n}",
            )
        await rollback(conn, 8)
        assert await conn.fetchval(keys) == 1
        rows = await conn.fetch("SELECT item_id FROM daz_retry_history")
        assert [r["item_id"] for r in rows] == [item_id]
        await conn.execute("DELETE FROM daz_retry_queue")
        assert await conn.fetchval("SELECT count(*) FROM daz_retry_history") == 0

    pg_empty.run(body)


def test_0015_pages_every_status_through_an_index_and_keeps_hot_rows_out(pg_empty: Any) -> None:
    """Under 0015 the dashboard's (status, id) index holds only failed items and dead
    letters, rows no worker writes in its steady state (a claimed or completed row is not
    entered there); a status filter's newest page is still read through an index for every
    status (the primary key backwards, the processing index, or that one for the rare
    statuses), never a sequential scan of the table. Rolling back restores the full index."""
    page = (
        "EXPLAIN (FORMAT JSON) SELECT id FROM daz_retry_queue WHERE status = $1"
        " ORDER BY id DESC LIMIT 51"
    )

    def scans(plan: Any) -> list[tuple[str, str | None]]:
        found = []
        stack = [json.loads(plan)[0]["Plan"]]
        while stack:
            node = stack.pop()
            if "Scan" in node["Node Type"]:
                found.append((node["Node Type"], node.get("Index Name")))
            stack.extend(node.get("Plans", []))
        return found

    async def body(conn: Any) -> None:
        await migrate(conn)
        await conn.execute(
            """
            INSERT INTO daz_retry_queue (event_id, event_type, status, locked_by, locked_at,
                                         lock_token)
            SELECT 'e' || g, 't', s,
                   CASE WHEN s = 'processing' THEN 'w' END,
                   CASE WHEN s = 'processing' THEN now() END,
                   CASE WHEN s = 'processing' THEN gen_random_uuid() END
            FROM generate_series(1, 60000) g,
                 LATERAL (SELECT CASE WHEN g % 1000 = 0 THEN 'processing'
                                      WHEN g % 1000 < 3 THEN 'dead_letter'
                                      WHEN g % 1000 = 3 THEN 'failed'
                                      WHEN g % 100 < 85 THEN 'completed'
                                      ELSE 'pending' END AS s) x
            """
        )
        await conn.execute("ANALYZE daz_retry_queue")
        used = {}
        for state in ("pending", "processing", "completed", "failed", "dead_letter"):
            found = scans(await conn.fetchval(page, state))
            assert all(kind != "Seq Scan" for kind, _ in found), (state, found)
            used[state] = {name for _, name in found}
        assert used["dead_letter"] == used["failed"] == {"daz_retry_queue_status_id_idx"}
        assert "daz_retry_queue_status_id_idx" not in used["completed"] | used["pending"]
        predicate = (
            "SELECT pg_get_expr(indpred, indrelid) FROM pg_index"
            " WHERE indexrelid = 'daz_retry_queue_status_id_idx'::regclass"
        )
        where = await conn.fetchval(predicate)
        for rare in ("failed", "dead_letter"):
            assert f"'{rare}'" in where
        for hot in ("pending", "processing", "completed"):
            assert f"'{hot}'" not in where
        await rollback(conn, 14)
        assert await conn.fetchval(predicate) is None  # the full index of 0013 again

    pg_empty.run(body)
