"""`daz-actors demo` as a real process: its invariants hold, and the database agrees.

The check does not trust the demo's own verdict: after the run, the test starts the
demo's embedded PostgreSQL again and compares its rows with the lines the chat server
confirmed (the demo's summary.json).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import trio
from click.testing import CliRunner

from daz_actors.app.cli import main
from daz_actors.app.demo import BOT_NAME
from daz_actors.storage.embedded_pg import start_embedded
from daz_actors.testing import wait_until

DAZ = [sys.executable, "-m", "daz_actors.app.cli"]
FAULTS = 7  # websocket drop, killed router, killed gateway, database stop and start, poison,
# chat server killed


async def read_database(url: str) -> tuple[Counter[str], Counter[tuple[str, str]], Counter[str]]:
    """The chatters' lines, the queue, and the bot's lines (its replies, tells, reminders)."""
    conn: Any = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT message, username FROM daz_chat_messages WHERE channel = 'demo'"
        )
        queue = await conn.fetch("SELECT status, event_type FROM daz_retry_queue")
    finally:
        await conn.close()
    return (
        Counter(r["message"] for r in rows if r["username"] != BOT_NAME),
        Counter((q["status"], q["event_type"]) for q in queue),
        Counter(r["message"] for r in rows if r["username"] == BOT_NAME),
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
    assert result.stdout.count("[ok  ]") == 13, output
    assert "[ok  ] every !tell was delivered exactly once: 1 asked, 1 said once" in result.stdout
    assert "[ok  ] every !remind fired exactly once: 1 asked, 1 said once" in result.stdout
    assert "FAIL" not in result.stdout
    assert re.search(r"dashboard http://127\.0\.0\.1:\d+/", result.stdout), output

    summary = json.loads((work / "summary.json").read_text())
    assert summary["passed"] is True
    assert [step["done"] for step in summary["chaos"]] == [True] * FAULTS, summary["chaos"]
    confirmed = summary["confirmed"]
    assert len(confirmed) >= 20  # the chatters really talked
    assert "!poison" in confirmed

    server = start_embedded(work / "data")
    try:
        stored, queue, bot = asyncio.run(read_database(server.url))
    finally:
        server.stop()
    assert {line: stored[line] for line in confirmed} == dict.fromkeys(confirmed, 1)
    assert set(stored) <= set(confirmed) | set(summary["uncertain"])
    assert queue[("dead_letter", "command.run")] == 1
    assert not [key for key in queue if key[0] in ("pending", "processing")], queue
    assert sum(n for (status, _), n in queue.items() if status == "dead_letter") == 1
    # the tell and the reminder asked before the faults: each said exactly once
    note = "visitor1, alice asked me to tell you: cycle 1 note for visitor1"
    assert bot[note] == 1, bot
    assert [n for line, n in bot.items() if line.startswith("alice: reminder: cycle 1")] == [1]


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


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions `text` (zombies excluded)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


async def test_ctrl_c_stops_the_demo_in_order_and_leaves_nothing_running(tmp_path: Path):
    """SIGINT mid-run: the tree stops in order, exit code 130, and no PostgreSQL or chat
    server of the run is left behind."""
    work = tmp_path / "demo"
    out = tmp_path / "out.txt"
    env = {k: v for k, v in os.environ.items() if k != "DAZ_DATABASE_URL"}
    with out.open("wb") as sink:
        process = await trio.lowlevel.open_process(
            [*DAZ, "demo", "--duration", "60", "--no-live", "--work-dir", str(work)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            await wait_until(lambda: "chaos: dropped" in out.read_text(), timeout=120)
            assert _processes_mentioning(str(work))  # its database and chat server run
            process.send_signal(signal.SIGINT)
            with trio.fail_after(120):
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
    text = out.read_text()
    assert code == 130, text
    assert "interrupted before the end: nothing was checked" in text
    await wait_until(lambda: not _processes_mentioning(str(work)), timeout=30)
