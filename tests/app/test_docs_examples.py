"""The examples of docs/extending.md and docs/retry.md, run as they are written.

Every ``python`` and ``toml`` block of those pages is a whole file whose first line names
it (``# my_bot/greeter.py``). The blocks are written into a temporary project and run: the
doc's own test, the doc's ``python -m my_bot`` as a process stopped by SIGINT, and the
doc's retry handlers on a real queue. A doc example that stops working fails here.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from daz_actors import SqlClient
from daz_actors.testing import poll

REPO = Path(__file__).resolve().parents[2]
DOCS = ("docs/extending.md", "docs/retry.md")
BLOCK = re.compile(r"^```(python|toml)\n(.*?)^```", re.MULTILINE | re.DOTALL)
HEADER = re.compile(r"\A# ([\w./-]+\.(?:py|toml))\n")


def doc_files(doc: str) -> dict[str, str]:
    """The files a doc page's code blocks make, by their path."""
    files: dict[str, str] = {}
    for lang, body in BLOCK.findall((REPO / doc).read_text()):
        header = HEADER.match(body)
        assert header, f"{doc}: a {lang} block does not start with '# path/of/file': {body[:60]!r}"
        files[header[1]] = body
    return files


def test_every_example_block_names_its_file() -> None:
    """Each page has blocks and each block is a named file, so none goes unexecuted."""
    extending, retry = (doc_files(doc) for doc in DOCS)
    assert {"my_bot/greeter.py", "my_bot/kinds.py", "my.toml", "my_bot/__main__.py"} <= set(
        extending
    )
    assert {"my_bot/handlers.py", "my_bot/schedule.py", "my_bot/alerts.py"} <= set(retry)


@pytest.fixture
def my_bot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg: Any) -> Iterator[Path]:
    """The docs' project written out, importable, with the test database as its database."""
    for doc in DOCS:
        for name, text in doc_files(doc).items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DAZ_DATABASE_URL", pg.dsn)
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path / "data"))
    yield tmp_path
    for module in [m for m in sys.modules if m == "my_bot" or m.startswith("my_bot.")]:
        del sys.modules[module]


def test_the_test_on_the_extending_page_passes(my_bot: Path) -> None:
    """docs/extending.md section 5, run as written: the greeter greets and counts."""
    spec = importlib.util.spec_from_file_location("doc_test", my_bot / "tests/test_greeter.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.test_the_greeter_greets_and_counts()


def test_the_program_on_the_extending_page_runs_and_stops_on_sigint(my_bot: Path, pg: Any) -> None:
    """``python -m my_bot`` (section 4) starts the tree with the greeter in it, and stops
    in order with exit code 0 on SIGINT."""

    async def greetings_table(conn: Any) -> bool:
        found: bool = await conn.fetchval("SELECT to_regclass('greetings') IS NOT NULL")
        return found

    proc = subprocess.Popen(
        [sys.executable, "-m", "my_bot"],
        cwd=my_bot,
        env={**os.environ, "PYTHONPATH": str(my_bot)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        # the greeter creates its table in on_start: then the whole tree is up to it
        while not pg.run(greetings_table):
            assert proc.poll() is None, f"my_bot exited early: {proc.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, "the greeter never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-2000:]
    assert "shutting down in order" in stderr


def test_the_handlers_on_the_retry_page_run_on_a_real_queue(my_bot: Path, pg: Any) -> None:
    """docs/retry.md's handlers and scheduling: an item is queued once per event id and
    done once, one without a name is a dead letter, the two-step handler runs each step."""
    from my_bot.alerts import DeadLetterAlert  # type: ignore[import-not-found]
    from my_bot.handlers import handlers  # type: ignore[import-not-found]
    from my_bot.kinds import kinds  # type: ignore[import-not-found]
    from my_bot.schedule import schedule_greeting  # type: ignore[import-not-found]

    from daz_actors import ChildSpec, actor_factory, load_config, run_config
    from daz_actors.retry.capture import ScheduleRetry
    from daz_actors.storage.queue_types import NewItem

    async def tables(conn: Any) -> None:
        await conn.execute("CREATE TABLE greetings_sent (event_id text PRIMARY KEY, name text)")
        await conn.execute("CREATE TABLE greeting_steps (event_id text, step text)")

    pg.run(tables)
    outcome: dict[str, Any] = {}

    async def check(system: Any) -> None:
        alert = await system.tree.root.start_child(
            ChildSpec(name="dead-letter-alert", start=actor_factory(DeadLetterAlert))
        )
        outcome["first"] = await schedule_greeting(system.registry, "g-1", "ann")
        outcome["again"] = await schedule_greeting(system.registry, "g-1", "ann")
        await schedule_greeting(system.registry, "g-2", None)
        item = NewItem(event_id="a-1", event_type="greeting.announce")
        await system.registry.lookup("retry-capture").ask(ScheduleRetry(item=item), timeout=10)
        db = SqlClient(system.registry.lookup("sql-gateway"))

        async def settled() -> bool:
            done: bool = await db.query_value(
                "SELECT count(*) = 3 FROM daz_retry_queue WHERE status IN "
                "('completed', 'dead_letter')"
            )
            return done

        await poll(settled, timeout=30)
        outcome["alerts"] = await alert.ask("last", timeout=10)

    config = load_config("my.toml", kinds)
    code = run_config(
        config,
        kinds,
        handle_signals=False,
        extra_resources={"retry_handlers": handlers},
        alongside=check,
    )
    assert code == 0
    assert (outcome["first"], outcome["again"]) == (True, False)
    # the dead letter reached the subscriber, with what identifies it
    assert [(a.event_id, a.event_type, a.attempt) for a in outcome["alerts"]] == [
        ("g-2", "greeting.send", 1)
    ]
    assert "no name" in outcome["alerts"][0].error

    async def rows(conn: asyncpg.Connection) -> tuple[Any, ...]:
        return (
            dict(await conn.fetch("SELECT event_id, status FROM daz_retry_queue")),
            [tuple(r) for r in await conn.fetch("SELECT event_id, name FROM greetings_sent")],
            [r[0] for r in await conn.fetch("SELECT step FROM greeting_steps ORDER BY step")],
        )

    statuses, sent, steps = pg.run(rows)
    assert statuses == {"g-1": "completed", "g-2": "dead_letter", "a-1": "completed"}
    assert sent == [("g-1", "ann")]
    assert steps == ["announce", "record"]
