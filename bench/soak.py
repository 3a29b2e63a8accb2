"""Soak: the demo's chaos in cycles for half an hour or more; do the figures stay flat?

    python -m bench.soak                          # 30 minutes of 60 s cycles, 3 chatters
    python -m bench.soak --duration 2h --cycle 90 --work-dir bench-out/soak-2h

Runs ``daz-actors demo --soak DURATION`` as a process of its own (the real command, its
embedded PostgreSQL and local chat server) and follows it: after each cycle it prints the
cycle's invariants (and the name of any that broke) and, from ``soak.csv``, each figure's
slope per hour over the cycles after the first. The first cycle is the baseline measured
in the same run: the closing table gives each figure at the end of cycle 1 and at the end,
their ratio, the slope per hour and the target (issue 19: RSS under 1 MB an hour, file
descriptors, tasks and metric series flat by the flat rule of docs/operating.md, every
cycle's invariants held), and the slope over the later half of the cycles alone (a
warm-up falls to about 0 there, a leak keeps its slope). The demo's output goes to
``bench-soak.out`` in the work directory.

Exit code: 0 when every cycle's invariants held, the demo passed and every target was
met; 1 when an invariant broke or the demo failed; 2 when only a target was missed.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from daz_actors.app.soak import Sample, Verdict, parse_duration, read_samples, summarise

# figure -> the slope per hour it must stay under, after the first cycle (issue 19: RSS
# under 1 MB an hour); None: flat by the flat rule of docs/operating.md (a count that may
# wobble by a call in flight, never set new highs; no new metric series at all)
TARGETS: dict[str, float | None] = {
    "rss_kb": 1024.0,
    "open_fds": None,
    "trio_tasks": None,
    "asyncio_tasks": None,
    "metric_series": None,
}
SHOWN = (*TARGETS, "spool_bytes", "rows:daz_chat_messages", "rows:daz_retry_queue")
CYCLE_LINE = re.compile(r"^\[cycle (\d+)\] invariants (held|BROKEN)")
INVARIANT_LINE = re.compile(r"^\s+\[(ok  |FAIL)\] ([^:]+):")
HEAP_LINE = re.compile(r"^\[cycle \d+\] heap: ")
METRICS_URL = re.compile(r"metrics (http://\S+/metrics)")
EXIT_INVARIANT, EXIT_TARGET = 1, 2


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} cores)"


def series(url: str) -> set[str]:
    """The series on `url` (each sample's name and labels); empty if it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = reply.read().decode()
    except OSError:
        return set()
    return {
        line.rsplit(" ", 1)[0]
        for line in body.splitlines()
        if line.strip() and not line.startswith("#")
    }


def slopes_line(samples: Sequence[Sample]) -> str:
    """Each target figure's slope per hour over the cycles after the first, so far."""
    verdicts = {v.name: v for v in summarise(samples)}
    parts = []
    for name in TARGETS:
        slope = verdicts[name].slope_per_hour if name in verdicts else None
        parts.append(f"{name} {'n/a' if slope is None else f'{slope:+.1f}/h'}")
    return "slopes after cycle 1: " + ", ".join(parts)


def target_met(verdict: Verdict) -> bool | None:
    """Whether a figure meets its target: its slope over every cycle after the first is
    under its allowance, or it is flat by the flat rule; None: too few cycles."""
    allowance = TARGETS[verdict.name]
    if allowance is None:
        return verdict.flat
    if verdict.slope_per_hour is None or verdict.first < 0 or verdict.last < 0:
        return None
    return verdict.slope_per_hour < allowance


def closing_table(samples: Sequence[Sample]) -> tuple[str, bool]:
    """The table against cycle 1 (the baseline), and whether every target was met.

    ``2nd half/h``: the slope over the later half of the cycles only, beside the slope
    over every cycle after the first: a warm-up that ends early shows as a slope that
    falls to about 0 in the second half; a leak keeps its slope.
    """
    verdicts = {v.name: v for v in summarise(samples)}
    later = {v.name: v for v in summarise(samples[len(samples) // 2 - 1 :])}
    lines = [
        f"{'figure':<26} {'cycle 1':>10} {'last':>10} {'ratio':>6} {'slope/h':>11} "
        f"{'2nd half/h':>11} {'target':>9}  met",
    ]
    met_all = True
    for name in SHOWN:
        v = verdicts.get(name)
        if v is None:
            continue
        ratio = f"{v.last / v.first:6.3f}" if v.first > 0 else "   n/a"
        slope = "n/a" if v.slope_per_hour is None else f"{v.slope_per_hour:+.1f}"
        half = later[name].slope_per_hour if name in later and len(samples) >= 6 else None
        half_text = "n/a" if half is None else f"{half:+.1f}"
        if name in TARGETS:
            met = target_met(v)
            met_all = met_all and met is True
            allowance = TARGETS[name]
            target = "flat" if allowance is None else f"< {allowance:g}/h"
            mark = {True: "yes", False: "NO", None: "n/a (too few cycles)"}[met]
        else:
            target, mark = "-", "-"
        lines.append(
            f"{name:<26} {v.first:>10g} {v.last:>10g} {ratio} {slope:>11} {half_text:>11} "
            f"{target:>9}  {mark}"
        )
    return "\n".join(lines), met_all


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="30m", help="how long to soak (30m, 2h, 5400)")
    parser.add_argument("--cycle", type=float, default=60.0, help="seconds per cycle (>= 20)")
    parser.add_argument("--chatters", type=int, default=3, help="simulated users (1-6)")
    parser.add_argument(
        "--work-dir", type=Path, help="new or empty directory for the run (default: a temp one)"
    )
    parser.add_argument(
        "--trace-heap",
        action="store_true",
        help="trace the demo's Python heap (tracemalloc): heap.csv and heap-growth.txt "
        "in its work directory (a diagnostic: slower, bigger)",
    )
    parser.add_argument(
        "--heap-stats",
        action="store_true",
        help="write heap.csv (the allocators' figures) without tracemalloc (a diagnostic)",
    )
    parser.add_argument(
        "--malloc-trim",
        action="store_true",
        help="give glibc's free heap back after each cycle's figures (a diagnostic)",
    )
    args = parser.parse_args(argv)
    try:
        seconds = parse_duration(args.duration)
    except ValueError as exc:
        parser.error(str(exc))
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="daz-soak-"))
    work = work.expanduser().resolve()
    if work.exists() and any(work.iterdir()):
        parser.error(f"--work-dir {work} is not empty (the soak needs a fresh one)")
    work.mkdir(parents=True, exist_ok=True)
    demo_dir, output = work / "demo", work / "bench-soak.out"
    command = [
        sys.executable, "-m", "daz_actors.app.cli", "demo", "--soak", f"{seconds:g}",
        "--duration", f"{args.cycle:g}", "--chatters", str(args.chatters), "--no-live",
        "--work-dir", str(demo_dir),
        *(["--trace-heap"] if args.trace_heap else []),
        *(["--heap-stats"] if args.heap_stats else []),
        *(["--malloc-trim"] if args.malloc_trim else []),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "DAZ_DATABASE_URL"}
    print(f"soak of {seconds:g} s in cycles of {args.cycle:g} s, {args.chatters} chatters")
    print(f"work directory {work} (the demo's output: {output.name}); {load()}", flush=True)
    started = time.monotonic()
    broken: dict[int, list[str]] = {}  # cycle -> invariants that failed
    cycle, failed_now = 0, []
    metrics_url, seen = "", set[str]()  # the demo's /metrics, and its series last cycle
    with (
        output.open("w", encoding="utf-8") as out,
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        ) as demo,
    ):
        assert demo.stdout is not None
        for line in demo.stdout:
            out.write(line)
            out.flush()
            if not metrics_url and (found := METRICS_URL.search(line)):
                metrics_url = found[1]
            if found := CYCLE_LINE.match(line):
                cycle, failed_now = int(found[1]), []
                try:
                    samples = read_samples(demo_dir / "soak.csv")
                except (OSError, ValueError) as exc:
                    print(f"cycle {cycle}: cannot read soak.csv yet ({exc})")
                    continue
                print(
                    f"cycle {cycle} at {time.monotonic() - started:6.0f} s: invariants "
                    f"{found[2]}; {slopes_line(samples)}",
                    flush=True,
                )
                now = series(metrics_url) if metrics_url else set()
                if seen and now - seen:  # what made the series grow, named
                    print(f"  new series since cycle {cycle - 1}: {sorted(now - seen)}")
                seen = now or seen
            elif HEAP_LINE.match(line):
                print(f"  {line.strip()}", flush=True)
            elif cycle and (found := INVARIANT_LINE.match(line)) and found[1] == "FAIL":
                failed_now.append(found[2].strip())
                broken[cycle] = failed_now
                print(f"  cycle {cycle}: invariant broken: {line.strip()}", flush=True)
        code = demo.wait()
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.monotonic() - started
    try:
        samples = read_samples(demo_dir / "soak.csv")
    except (OSError, ValueError) as exc:
        print(f"no soak.csv to read ({exc}); the demo exited with {code}")
        return EXIT_INVARIANT
    held = [s.cycle for s in samples if s.invariants_held]
    print()
    print(
        f"{len(samples)} cycle(s) in {wall:.0f} s; invariants held in {len(held)}"
        + (f"; broken in cycles {sorted(broken)}" if broken else "")
    )
    table, met_all = closing_table(samples)
    print(table)
    cpu = child.ru_utime + child.ru_stime
    print(f"the demo process used {cpu:.0f} s of CPU ({cpu / wall:.0%} of one core); {load()}")
    print(f"the demo exited with {code} (0: every invariant held and its flat rule passed)")
    if len(held) != len(samples) or broken:
        print("SOAK FAILED: an invariant broke (see bench-soak.out)")
        return EXIT_INVARIANT
    said = output.read_text(encoding="utf-8")
    if code != 0 and "soak passed" not in said and "SOAK FAILED: not flat" not in said:
        print("SOAK FAILED: the demo did not run its course (see bench-soak.out)")
        return EXIT_INVARIANT
    if not met_all:
        print("soak: invariants held, but a target was missed (see the table)")
        return EXIT_TARGET
    print("soak met its targets: every cycle's invariants held, every figure flat")
    return 0


if __name__ == "__main__":
    sys.exit(main())
