"""`daz-actors demo --soak`: cycles of the chaos schedule, measured; and the flat rule.

The process test runs two short cycles (a real process, a real PostgreSQL and chat
server, as tests/app/test_demo.py does) and reads what it left behind: soak.csv with a row
per cycle whose invariants held, the closing report, and the database, where every cycle's
chatters (new names, renamed halfway) stored their lines.
"""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from daz_actors.app.soak import (
    FIXED_COLUMNS,
    Sample,
    SoakRecorder,
    parse_duration,
    read_samples,
    soak_passed,
    summarise,
)
from daz_actors.storage.embedded_pg import start_embedded

DAZ = [sys.executable, "-m", "daz_actors.app.cli"]


async def usernames(url: str) -> set[str]:
    conn: Any = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT DISTINCT username FROM daz_chat_messages")
        dead = await conn.fetchval(
            "SELECT count(*) FROM daz_retry_queue WHERE status = 'dead_letter'"
        )
    finally:
        await conn.close()
    return {r["username"] for r in rows} | {f"dead letters: {dead}"}


def test_a_short_soak_records_every_cycle_and_its_invariants(tmp_path: Path):
    """Two cycles with --heap-stats (the allocators' figures in heap.csv as well)."""
    work = tmp_path / "soak"
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "DAZ_DATABASE_URL" and not k.startswith(("MALLOC_", "DAZ_MALLOC"))
    }
    result = subprocess.run(
        [*DAZ, "demo", "--soak", "30s", "--duration", "20", "--chatters", "2", "--no-live",
         "--heap-stats", "--work-dir", str(work)],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "[cycle 1] invariants held" in result.stdout, output
    assert "[cycle 2] invariants held" in result.stdout, output
    assert "soak: 2 cycle(s), invariants held in 2" in result.stdout, output
    assert "soak passed" in result.stdout, output

    with (work / "soak.csv").open(newline="") as file:
        reader = csv.DictReader(file)
        columns = list(reader.fieldnames or ())
        rows = list(reader)
    assert columns[: len(FIXED_COLUMNS)] == list(FIXED_COLUMNS)
    tables = columns[len(FIXED_COLUMNS) :]
    assert {"rows:daz_chat_messages", "rows:daz_retry_queue"} <= set(tables), columns
    assert [row["cycle"] for row in rows] == ["1", "2"]
    assert [row["invariants_held"] for row in rows] == ["1", "1"]
    for row in rows:
        assert all(float(row[c]) >= 0 for c in columns), row  # every figure was read
        assert int(row["rss_kb"]) > 0
        assert int(row["open_fds"]) > 0
        assert int(row["trio_tasks"]) > 0
        assert int(row["metric_series"]) > 0
    assert int(rows[1]["rows:daz_chat_messages"]) > int(rows[0]["rows:daz_chat_messages"])

    with (work / "heap.csv").open(newline="") as file:
        heap = list(csv.DictReader(file))
    assert [row["cycle"] for row in heap] == ["1", "2"]
    for row in heap:
        assert int(row["pymalloc_arenas"]) > 0, row
        assert int(row["rss_kb"]) > 0, row
        assert row["traced_kb"] == "-1", row  # --heap-stats: no tracemalloc
    # the process fixed glibc's thresholds at start-up (daz_actors/app/allocator.py)
    assert "mmap threshold fixed at 128 KiB" in (work / "daz-actors.log").read_text()

    server = start_embedded(work / "data")
    try:
        found = asyncio.run(usernames(server.url))
    finally:
        server.stop()
    # new chatters every cycle, each renamed halfway; one poison dead-lettered per cycle
    for cycle in (1, 2):
        for name in ("alice", "bob"):
            assert {f"{name}-c{cycle}", f"{name}-c{cycle}-r"} <= found, found
    assert "dead letters: 2" in found


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("45", 45), ("1d", 86400)],
)
def test_soak_durations_are_read(text: str, seconds: float):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2x", "h", "-5", "0", "1h 30", "inf"])
def test_bad_soak_durations_are_refused(text: str):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def _samples(figure: str, values: list[float]) -> list[Sample]:
    return [
        Sample(
            cycle=n + 1,
            elapsed_s=600.0 * (n + 1),
            invariants_held=True,
            figures={figure: v},
            rows={},
        )
        for n, v in enumerate(values)
    ]


def _verdict(figure: str, values: list[float]) -> Any:
    [found] = [v for v in summarise(_samples(figure, values)) if v.name == figure]
    return found


def test_a_figure_that_keeps_setting_new_highs_is_not_flat():
    leak = _verdict("open_fds", [20, 21, 22, 23, 24, 25, 26])  # one fd per 10 min
    assert leak.slope_per_hour == pytest.approx(6.0)
    assert leak.flat is False
    assert not soak_passed(_samples("open_fds", [20, 21, 22, 23, 24, 25, 26]), [leak])


def test_a_figure_that_wobbles_within_its_first_highs_is_flat():
    wobble = _verdict("trio_tasks", [40, 52, 44, 50, 45, 51, 43])
    assert wobble.flat is True
    rss = _verdict("rss_kb", [50_000, 56_000, 56_100, 56_050, 56_120, 56_080])
    assert rss.flat is True  # under 1 MB an hour after the first cycle


def test_a_map_with_its_own_bound_is_judged_by_it_and_the_first_cycle_is_left_out():
    filling = _verdict("map_connection_delays", [2, 4, 6, 8, 10])  # fills up to 100
    assert filling.flat is True
    over = _verdict("map_connection_delays", [2, 50, 99, 100, 101])
    assert over.flat is False
    warm_up = _verdict("metric_series", [100, 400, 400, 400])  # the first cycle's growth
    assert warm_up.flat is True
    too_few = _verdict("metric_series", [100, 400])
    assert too_few.flat is None  # one cycle after the first: not judged


def test_soak_csv_reads_back_as_it_was_written(tmp_path: Path):
    """`read_samples` gives back what `SoakRecorder` wrote (bench.soak follows a soak by
    it), and names the line of a row that is not a soak row."""
    path = tmp_path / "soak.csv"
    recorder = SoakRecorder(path)
    written = [
        Sample(
            cycle=n,
            elapsed_s=60.0 * n,
            invariants_held=n != 2,
            figures={name: float(n * 10 + i) for i, name in enumerate(FIXED_COLUMNS[3:])},
            rows={"daz_chat_messages": 100 * n, "daz_retry_queue": n},
        )
        for n in (1, 2, 3)
    ]
    for sample in written:
        recorder.add(sample)
    assert read_samples(path) == written
    with path.open("a", encoding="utf-8") as file:
        file.write("4,240.0,1,not-a-number\n")
    with pytest.raises(ValueError, match=r"line 5: not a soak row"):
        read_samples(path)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"not a soak\.csv"):
        read_samples(tmp_path / "other.csv")
