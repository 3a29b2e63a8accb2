"""The soak's heap probe (`daz_actors.app.soak_heap`): what it measures and names.

It runs in this process: a list kept between two cycles must show up as grown traced
memory, with this file's line named as the site and ``bytearray`` among the grown types;
the probe's own allocations (the type counts it keeps) must not. The allocators' figures
are read back from glibc and CPython.
"""

from __future__ import annotations

import csv
import ctypes
import re
import sys
import tracemalloc
from pathlib import Path

import pytest

from daz_actors.app.allocator import malloc_info
from daz_actors.app.soak_heap import HEAP_COLUMNS, HeapProbe, pymalloc_stats

HOARD_LINE = "hoard.extend(Kept() for _ in range(600))"


class Kept:
    """What the test keeps between two cycles: an object the collector tracks (the type
    counts are of those) with a buffer of 1000 bytes."""

    def __init__(self) -> None:
        self.data = bytearray(1000)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_a_kept_allocation_is_named_by_its_site_and_type(tmp_path: Path) -> None:
    assert not tracemalloc.is_tracing()
    probe = HeapProbe(tmp_path, frames=5)
    probe.start()
    hoard: list[Kept] = []
    try:
        probe.after_cycle(1, 60.0)
        hoard.extend(Kept() for _ in range(600))
        probe.after_cycle(2, 120.0)
    finally:
        probe.stop()
    assert not tracemalloc.is_tracing()  # the probe stops what it started
    first, second = rows(tmp_path / "heap.csv")
    assert list(first) == list(HEAP_COLUMNS)
    grown = int(second["traced_bot_kb"]) - int(first["traced_bot_kb"])
    assert 550 <= grown <= 700, (first, second)
    report = (tmp_path / "heap-growth.txt").read_text()
    since_first = report.split("--- allocation sites since cycle 1")[1].split("---")[0]
    top = since_first.splitlines()[1]  # the site that grew most
    assert f"{Path(__file__).name}:" in top, since_first
    blocks = int(re.search(r"\+(\d+) blocks", top)[1])  # type: ignore[index]
    assert 1200 <= blocks <= 1210, top  # each bytearray: the object and its buffer
    assert "daz_actors/app/soak_heap.py" not in since_first  # the probe's own keeping is left out
    types = report.split("--- object types since cycle 1")[1].split("---")[0]
    assert "+600 " in types.split(".Kept\n")[0].splitlines()[-1], types
    assert HOARD_LINE in report  # the traceback of the largest growth, with its source
    # the top site's blocks: 600 bytearrays (objects, each referred to by its Kept) and
    # their 600 buffers (not objects)
    assert re.search(r"--- blocks at .*test_soak_heap\.py:\d+ by size", report), report
    assert "1001 x 600" in report
    holders = report.split("--- what refers to them: ")[1]
    assert holders.startswith("600 of 1200 blocks are objects referred to"), holders[:200]
    assert re.search(r"^\s+600\s+test_soak_heap\.Kept$", holders, re.MULTILINE), holders[:400]
    assert len(hoard) == 600


def test_objects_held_from_c_are_told_from_those_an_object_refers_to(tmp_path: Path) -> None:
    """Objects no Python object refers to (here: references leaked through the C API,
    as an extension's cache or free list keeps them) are counted as such."""
    probe = HeapProbe(tmp_path, frames=5)
    probe.start()
    try:
        probe.after_cycle(1, 60.0)
        leaked = [str(n) * 40 for n in range(300)]  # 300 strings from one site
        for text in leaked:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(text))  # held from "C"
        kept = leaked[:100]
        del leaked
        probe.after_cycle(2, 120.0)
    finally:
        probe.stop()
    report = (tmp_path / "heap-growth.txt").read_text()
    holders = report.split("--- what refers to them: ")[1]
    assert holders.startswith("100 of 300 blocks are objects referred to"), holders[:200]
    assert len(kept) == 100


def test_without_tracing_the_figures_are_still_taken(tmp_path: Path) -> None:
    probe = HeapProbe(tmp_path, trace=False, trim=True)
    probe.start()
    assert not tracemalloc.is_tracing()
    row = probe.after_cycle(1, 60.0)
    probe.stop()
    assert row["traced_kb"] == -1
    assert row["traced_bot_kb"] == -1
    assert row["rss_kb"] > 0
    assert row["threads"] >= 1
    assert row["gc_objects"] > 1000
    assert row["pymalloc_arenas"] >= 1
    assert row["pymalloc_in_use_kb"] > 0
    if malloc_info() is not None:  # glibc 2.33+
        assert row["malloc_in_use_kb"] > 0
        assert 0 < row["rss_after_trim_kb"] <= row["rss_before_trim_kb"] + 1024


@pytest.mark.skipif(not hasattr(sys, "_debugmallocstats"), reason="CPython only")
def test_pymalloc_figures_follow_small_objects() -> None:
    before = pymalloc_stats()
    kept = [object() for _ in range(200_000)]  # 16 bytes each: about 3 MB of blocks
    after = pymalloc_stats()
    assert after["pymalloc_in_use_bytes"] - before["pymalloc_in_use_bytes"] >= 2_500_000
    assert after["pymalloc_arenas"] >= before["pymalloc_arenas"]
    assert after["pymalloc_arenas_total"] >= after["pymalloc_arenas"]
    assert len(kept) == 200_000
