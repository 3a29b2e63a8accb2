"""``daz-actors demo --soak DURATION --trace-heap``: where the soak's memory goes.

A diagnostic, off by default (tracing every allocation costs memory and time of its
own). `HeapProbe` starts `tracemalloc` when the soak starts and, after each cycle, writes:

- ``heap.csv``: one row per cycle with the process's RSS, the Python heap `tracemalloc`
  traces (and what tracemalloc itself uses), glibc's own view of its heap (``mallinfo2``:
  bytes handed out, bytes free but kept, bytes in mmap'ed blocks), the number of threads,
  and, with ``malloc_trim``, the RSS again after ``malloc_trim(0)`` gave the free heap back
  to the system. Python objects that leak show as a traced total that grows; RSS that
  grows while the traced total stays flat is the allocator (free memory kept in glibc's
  arenas or pymalloc's, fragmentation), which ``malloc_trim`` tells apart: what it gives
  back was free, not leaked.
- ``heap-growth.txt``: per cycle after the first, the allocation sites (file and line, and
  the full traceback of the largest) and the object types that grew most since the end of
  the first cycle (the baseline), and since the cycle before; for the site that grew
  most, its live blocks by size and the objects that refer to them, with how many of its
  blocks are objects so referred to (objects no object the collector sees refers to are
  held from C: an extension's cache or free list, or a leaked reference; how issue 19's
  soak found asyncpg's per-thread free lists of records).

The soak harness runs in the same process as the bot (the demo's chatters, chaos schedule
and ledger), so its own allocations are traced too; they are named by their site
(``daz_actors/app/demo*.py``, ``soak*.py``), which tells them from the bot's.
"""

from __future__ import annotations

import csv
import gc
import os
import re
import sys
import tempfile
import tracemalloc
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from daz_actors.app.allocator import malloc_info, malloc_trim

__all__ = ["HEAP_COLUMNS", "HeapProbe", "pymalloc_stats"]

HEAP_COLUMNS = (
    "cycle",
    "elapsed_s",
    "rss_kb",
    "rss_anon_kb",
    "rss_file_kb",
    "traced_kb",
    "traced_peak_kb",
    "traced_bot_kb",
    "tracemalloc_overhead_kb",
    "malloc_arena_kb",
    "malloc_in_use_kb",
    "malloc_free_kb",
    "malloc_mmap_kb",
    "pymalloc_arenas",
    "pymalloc_arenas_total",
    "pymalloc_in_use_kb",
    "pymalloc_free_kb",
    "threads",
    "gc_objects",
    "rss_before_trim_kb",
    "rss_after_trim_kb",
)
TOP_SITES = 15  # allocation sites listed per cycle
TOP_TYPES = 15  # object types listed per cycle
TRACEBACKS = 3  # sites whose full traceback is written
TOP_HOLDERS = 8  # objects holding the fastest-growing site's blocks, listed per cycle
TOP_SIZES = 10  # block sizes of that site listed per cycle
# frames not worth counting: this probe's own work (the type counts it keeps, the source
# lines read to format a traceback), tracemalloc's bookkeeping and the import machinery
_IGNORED = (
    tracemalloc.Filter(False, __file__, all_frames=True),
    tracemalloc.Filter(False, tracemalloc.__file__, all_frames=True),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
)


_PYMALLOC = {
    "# arenas allocated current": "pymalloc_arenas",
    "# arenas allocated total": "pymalloc_arenas_total",
    "# bytes in allocated blocks": "pymalloc_in_use_bytes",
    "# bytes in available blocks": "pymalloc_available_bytes",
}
_UNUSED_POOLS = re.compile(r"^(\d+) unused pools \* (\d+) bytes")


def pymalloc_stats() -> dict[str, int]:
    """CPython's small-object allocator (``sys._debugmallocstats``, which writes to the C
    stderr: read back through a temporary file put on fd 2 meanwhile): its arenas now and
    ever, and the bytes in blocks in use and free in its pools (free blocks and unused
    pools: memory pymalloc keeps for reuse, counted in RSS). Empty when not CPython."""
    if not hasattr(sys, "_debugmallocstats"):
        return {}
    with tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        name = _PYMALLOC.get(key.strip())
        if name is not None:
            found[name] = int(value.strip().replace(",", ""))
        elif unused := _UNUSED_POOLS.match(line):
            found["pymalloc_unused_pool_bytes"] = int(unused[1]) * int(unused[2])
    return found


def _rss_kb(field: str = "VmRSS") -> int:
    """A figure of /proc/self/status in KiB: VmRSS, or its parts RssAnon (the heaps,
    stacks) and RssFile (mapped files: the code of Python and its libraries as it is run)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return -1


def _types() -> Counter[str]:
    return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


class HeapProbe:
    """Traces the heap from `start` on and writes what it finds after each cycle."""

    def __init__(
        self, work: Path, *, trace: bool = True, frames: int = 10, trim: bool = False
    ) -> None:
        if frames < 1:
            raise ValueError(f"tracemalloc needs at least 1 frame, got {frames}")
        self.csv_path = work / "heap.csv"
        self.report_path = work / "heap-growth.txt"
        self.frames = frames
        self.trace = trace  # False: the figures only (cheap), no tracemalloc
        self.tracing = False  # tracemalloc started by this probe (and not stopped yet)
        self.trim = trim
        self.baseline: tracemalloc.Snapshot | None = None
        self.previous: tracemalloc.Snapshot | None = None
        self.baseline_types: Counter[str] = Counter()
        self.previous_types: Counter[str] = Counter()
        self.rows: list[dict[str, float]] = []

    def start(self) -> None:
        if self.trace and not tracemalloc.is_tracing():
            tracemalloc.start(self.frames)
            self.tracing = True

    def stop(self) -> None:
        if self.tracing:
            tracemalloc.stop()
            self.tracing = False

    def after_cycle(self, cycle: int, elapsed_s: float) -> Mapping[str, float]:
        """Measure, compare with the first cycle's end, write both files; the row."""
        gc.collect()
        row: dict[str, float] = {"cycle": cycle, "elapsed_s": round(elapsed_s, 1)}
        row["rss_kb"] = _rss_kb()
        row["rss_anon_kb"] = _rss_kb("RssAnon")
        row["rss_file_kb"] = _rss_kb("RssFile")
        traced, peak = tracemalloc.get_traced_memory() if tracemalloc.is_tracing() else (-1, -1)
        row["traced_kb"] = traced // 1024 if traced >= 0 else -1
        row["traced_peak_kb"] = peak // 1024 if peak >= 0 else -1
        row["tracemalloc_overhead_kb"] = tracemalloc.get_tracemalloc_memory() // 1024
        info = malloc_info()
        row["malloc_arena_kb"] = info.arena // 1024 if info else -1
        row["malloc_in_use_kb"] = info.uordblks // 1024 if info else -1
        row["malloc_free_kb"] = info.fordblks // 1024 if info else -1
        row["malloc_mmap_kb"] = info.hblkhd // 1024 if info else -1
        pym = pymalloc_stats()
        row["pymalloc_arenas"] = pym.get("pymalloc_arenas", -1)
        row["pymalloc_arenas_total"] = pym.get("pymalloc_arenas_total", -1)
        row["pymalloc_in_use_kb"] = pym.get("pymalloc_in_use_bytes", -1024) // 1024
        row["pymalloc_free_kb"] = (
            pym.get("pymalloc_available_bytes", 0) + pym.get("pymalloc_unused_pool_bytes", 0)
        ) // 1024
        row["threads"] = len(os.listdir("/proc/self/task"))
        types = _types()
        row["gc_objects"] = sum(types.values())
        snapshot = (
            tracemalloc.take_snapshot().filter_traces(_IGNORED)
            if tracemalloc.is_tracing()
            else None
        )
        # the traced heap without this probe's own (what the bot and the harness hold)
        row["traced_bot_kb"] = (
            sum(t.size for t in snapshot.traces) // 1024 if snapshot is not None else -1
        )
        row["rss_before_trim_kb"] = _rss_kb()  # the snapshot and the type count weigh too
        row["rss_after_trim_kb"] = _rss_kb() if self.trim and malloc_trim() else -1
        self._write_row(row)
        with self.report_path.open("a", encoding="utf-8") as out:
            self._report(out, cycle, row, snapshot, types)
        if self.baseline is None:
            self.baseline, self.baseline_types = snapshot, types
        self.previous, self.previous_types = snapshot, types
        self.rows.append(row)
        return row

    def _write_row(self, row: Mapping[str, float]) -> None:
        first = not self.csv_path.exists()
        with self.csv_path.open("a", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=HEAP_COLUMNS)
            if first:
                writer.writeheader()
            writer.writerow({c: row.get(c, -1) for c in HEAP_COLUMNS})

    def _report(
        self,
        out: TextIO,
        cycle: int,
        row: Mapping[str, float],
        snapshot: tracemalloc.Snapshot | None,
        types: Counter[str],
    ) -> None:
        figures = ", ".join(f"{k} {v:g}" for k, v in row.items() if k != "cycle")
        out.write(f"=== cycle {cycle}: {figures}\n")
        if self.baseline is None or snapshot is None:
            out.write("(baseline: the end of this cycle)\n\n")
            return
        for label, base, base_types in (
            ("since cycle 1", self.baseline, self.baseline_types),
            ("since the cycle before", self.previous, self.previous_types),
        ):
            assert base is not None
            stats = snapshot.compare_to(base, "lineno")
            total = sum(s.size_diff for s in stats)
            out.write(f"--- allocation sites {label} (traced total {total / 1024:+.1f} KiB)\n")
            for stat in sorted(stats, key=lambda s: s.size_diff, reverse=True)[:TOP_SITES]:
                frame = stat.traceback[0]
                out.write(
                    f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks "
                    f"(now {stat.size / 1024:.1f} KiB)  {frame.filename}:{frame.lineno}\n"
                )
            grown = {t: n - base_types.get(t, 0) for t, n in types.items()}
            top = sorted(grown.items(), key=lambda kv: kv[1], reverse=True)[:TOP_TYPES]
            out.write(f"--- object types {label}\n")
            for name, diff in top:
                if diff > 0:
                    out.write(f"  {diff:+8d} (now {types[name]})  {name}\n")
        self._report_holders(out, snapshot)
        stats = snapshot.compare_to(self.baseline, "traceback")
        for stat in sorted(stats, key=lambda s: s.size_diff, reverse=True)[:TRACEBACKS]:
            if stat.size_diff <= 0:
                break
            out.write(
                f"--- traceback of {stat.size_diff / 1024:+.1f} KiB "
                f"({stat.count_diff:+d} blocks) since cycle 1:\n"
            )
            for line in stat.traceback.format():
                out.write(f"    {line}\n")
        out.write("\n")

    def _report_holders(self, out: TextIO, snapshot: tracemalloc.Snapshot) -> None:
        """For the site that grew most since cycle 1: its live blocks by size, and which
        objects the collector sees refer to them (looking one level into the containers
        it does not track). Blocks no such object refers to are held from C: an
        extension's cache or free list, or a leaked reference."""
        assert self.baseline is not None
        grown = max(snapshot.compare_to(self.baseline, "lineno"), key=lambda s: s.size_diff)
        if grown.size_diff <= 0:
            return
        site = (grown.traceback[-1].filename, grown.traceback[-1].lineno)
        sizes = Counter(t.size for t in snapshot.traces if _frame(t.traceback) == site)
        out.write(f"--- blocks at {site[0]}:{site[1]} by size (bytes x blocks)\n")
        out.write("  " + ", ".join(f"{b} x {n}" for b, n in sizes.most_common(TOP_SIZES)) + "\n")

        def from_site(obj: object) -> bool:
            traceback = tracemalloc.get_object_traceback(obj)
            return traceback is not None and _frame(traceback) == site

        holders: Counter[str] = Counter()
        referred: set[int] = set()  # the blocks' objects referred to (by id)
        for holder in gc.get_objects():
            for ref in gc.get_referents(holder):
                if from_site(ref):
                    holders[_name(holder)] += 1
                    referred.add(id(ref))
                elif isinstance(ref, dict | list | tuple | set) and not gc.is_tracked(ref):
                    inner = [r for r in gc.get_referents(ref) if from_site(r)]
                    if inner:
                        holders[f"{_name(ref)} (untracked) in {_name(holder)}"] += len(inner)
                        referred.update(id(r) for r in inner)
        seen = len(referred)
        out.write(
            f"--- what refers to them: {seen} of {sizes.total()} blocks are objects referred"
            " to by objects the collector sees; the others are objects' own buffers (a"
            " bytearray's bytes) or objects held from C (an extension's cache or free list,"
            " a leaked reference)\n"
        )
        for name, count in holders.most_common(TOP_HOLDERS):
            out.write(f"  {count:8d}  {name}\n")


def _frame(traceback: tracemalloc.Traceback) -> tuple[str, int]:
    """File and line of a traceback's most recent frame (the allocation site)."""
    frame = traceback[-1]
    return frame.filename, frame.lineno


def _name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"
