"""`daz-actors demo` as a real process: its invariants hold, and the database agrees.

The check does not trust the demo's own verdict: after the run, the test starts the
demo's embedded PostgreSQL again and compares its rows with the lines the chat server
confirmed (the demo's summary.json).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
from click.testing import CliRunner

from daz_actors._embedded_pg import start_embedded
from daz_actors.cli import main

DAZ = [sys.executable, "-m", "daz_actors.cli"]
FAULTS = 7  # websocket drop, killed router, killed gateway, database stop and start, poison,
# chat server killed


async def read_database(url: str) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    conn: Any = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT message FROM daz_chat_messages WHERE channel = 'demo'")
        queue = await conn.fetch("SELECT status, event_type FROM daz_retry_queue")
    finally:
        await conn.close()
    return (
        Counter(r["message"] for r in rows),
        Counter((q["status"], q["event_type"]) for q in queue),
    )


def test_the_demo_holds_its_invariants_and_the_database_agrees(tmp_path: Path):
    work = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k != "DAZ_DATABASE_URL"}
    result = subprocess.run(
        [*DAZ, "demo", "--duration", "20", "--no-live", "--work-dir", str(work)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "every invariant held: nothing was lost" in result.stdout
    assert result.stdout.count("[ok  ]") == 11, output
    assert "FAIL" not in result.stdout

    summary = json.loads((work / "summary.json").read_text())
    assert summary["passed"] is True
    assert [step["done"] for step in summary["chaos"]] == [True] * FAULTS, summary["chaos"]
    confirmed = summary["confirmed"]
    assert len(confirmed) >= 20  # the chatters really talked
    assert "!poison" in confirmed

    server = start_embedded(work / "data")
    try:
        stored, queue = asyncio.run(read_database(server.url))
    finally:
        server.stop()
    assert {line: stored[line] for line in confirmed} == dict.fromkeys(confirmed, 1)
    assert set(stored) <= set(confirmed) | set(summary["uncertain"])
    assert queue[("dead_letter", "command.run")] == 1
    assert not [key for key in queue if key[0] in ("pending", "processing")], queue
    assert sum(n for (status, _), n in queue.items() if status == "dead_letter") == 1


def test_bad_demo_options_are_refused_with_the_reason(tmp_path: Path):
    runner = CliRunner()
    short = runner.invoke(main, ["demo", "--duration", "5"])
    assert short.exit_code == 2
    assert "duration must be at least 20 seconds" in short.output
    crowd = runner.invoke(main, ["demo", "--chatters", "40"])
    assert crowd.exit_code == 2
    assert "chatters must be between 1 and 6" in crowd.output
    used = tmp_path / "used"
    used.mkdir()
    (used / "something").write_text("x")
    taken = runner.invoke(main, ["demo", "--work-dir", str(used)])
    assert taken.exit_code == 1
    assert "is not empty" in taken.output
    assert (used / "something").read_text() == "x"
