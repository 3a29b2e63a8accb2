"""``daz-actors demo --soak DURATION``: what the process holds, measured once per cycle.

The demo's chaos schedule runs again and again (`demo.Demo`); after each cycle's
invariants are checked, `measure` takes the figures that grow when something leaks: the
process's RSS and open file descriptors, the trio tasks, the asyncio tasks of the
trio-asyncio bridge (the SQL gateway's loop), the rows of every table, the spool's bytes on
disk, the series on ``/metrics`` and the sizes of the runtime's own per-user and per-event
maps. `SoakRecorder` appends one CSV row per cycle (``soak.csv`` in the work directory);
`summarise` reports each figure's slope per hour after the first cycle and whether it is
flat (`FLAT_RULES`, documented in docs/operating.md).
"""

from __future__ import annotations

import csv
import math
import os
import re
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from daz_actors.app.runner import RunningSystem
from daz_actors.cytube.commands import COOLDOWNS_KEPT
from daz_actors.cytube.connection import DELAYS_KEPT, CytubeConnection
from daz_actors.cytube.router import MAX_RANKS, GetRouterStats, RouterStats
from daz_actors.ops.metrics import connections_in, snapshot
from daz_actors.retry import capture, failure_log
from daz_actors.runtime.errors import DazActorsError, NoSuchActor
from daz_actors.runtime.log_summary import MAX_KINDS
from daz_actors.storage import sql_gateway
from daz_actors.storage.sql_gateway import SqlGateway
from daz_actors.storage.sql_messages import SqlClient

__all__ = [
    "FIXED_COLUMNS",
    "FlatRule",
    "Sample",
    "SoakRecorder",
    "Verdict",
    "measure",
    "parse_duration",
    "read_samples",
    "summarise",
]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str) -> float:
    """Seconds in ``"90s"``, ``"30m"``, ``"2h"``, ``"1h30m"`` or a bare number of seconds."""
    text = text.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(
                f"a duration is a number of seconds or like 90s, 30m, 2h, 1h30m; got {text!r}"
            ) from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"a duration must be positive, got {text!r}")
    return seconds


# ------------------------------------------------------------------ the figures

# the CSV's columns before the per-table row counts ("rows:<table>"), in order
FIXED_COLUMNS = (
    "cycle",
    "elapsed_s",
    "invariants_held",
    "rss_kb",
    "open_fds",
    "trio_tasks",
    "asyncio_tasks",
    "spool_bytes",
    "metric_series",
    "map_router_ranks",
    "map_router_cooldowns",
    "map_connection_delays",
    "map_connection_rejected",
    "map_connection_flagged",
    "map_repeated_warning_kinds",
    "map_poison_keys",
)


@attrs.frozen(kw_only=True)
class Sample:
    """The figures at the end of one cycle."""

    cycle: int
    elapsed_s: float  # since the soak started
    invariants_held: bool
    figures: Mapping[str, float]  # FIXED_COLUMNS[3:] (-1: could not be read)
    rows: Mapping[str, int]  # table -> rows (-1: could not be read)

    def row(self, tables: Sequence[str]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "cycle": self.cycle,
            "elapsed_s": round(self.elapsed_s, 1),
            "invariants_held": int(self.invariants_held),
        }
        record.update({name: self.figures.get(name, -1) for name in FIXED_COLUMNS[3:]})
        record.update({f"rows:{t}": self.rows.get(t, -1) for t in tables})
        return record


def rss_kb() -> int:
    """This process's resident set size, in KiB (VmRSS of /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def open_fds() -> int:
    """File descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def trio_tasks() -> int:
    """Every trio task of this run, from the root task down."""
    count, stack = 0, [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def spool_bytes(data_dir: Path) -> int:
    """Bytes of the retry spool and the files beside it (quarantine, offset)."""
    return sum(p.stat().st_size for p in data_dir.glob("retry-spool*") if p.is_file())


async def metric_series(port: int | None, system: RunningSystem) -> int:
    """Samples on /metrics (each line that is not a comment): one per series."""
    if port is not None:
        url = f"http://127.0.0.1:{port}/metrics"

        def fetch() -> bytes:
            with urllib.request.urlopen(url, timeout=10) as reply:
                body: bytes = reply.read()
                return body

        body = await trio.to_thread.run_sync(fetch)
    else:
        body = system.metrics.render(await snapshot(system.sources))
    return sum(
        1 for line in body.decode().splitlines() if line.strip() and not line.startswith("#")
    )


async def table_rows(db: SqlClient) -> dict[str, int]:
    """Rows of every table of the public schema (exact counts)."""
    tables = [
        str(row["tablename"])
        for row in await db.query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
    ]
    if not tables:
        return {}
    union = " UNION ALL ".join(
        f"SELECT {_literal(t)} AS t, count(*) AS n FROM {_ident(t)}" for t in tables
    )
    return {str(row["t"]): int(row["n"]) for row in await db.query(union)}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"


async def map_sizes(system: RunningSystem, router_name: str) -> dict[str, float]:
    """The sizes of the runtime's per-user and per-event maps (see docs/operating.md)."""
    sizes: dict[str, float] = {}
    try:
        stats: RouterStats = await system.registry.lookup(router_name).ask(
            GetRouterStats(), timeout=10
        )
        sizes["map_router_ranks"] = stats.ranks_tracked
        sizes["map_router_cooldowns"] = stats.cooldowns_tracked
    except (DazActorsError, NoSuchActor):
        pass
    conns: list[CytubeConnection] = connections_in(system.tree.root)
    sizes["map_connection_delays"] = sum(len(c.delays) for c in conns)
    sizes["map_connection_rejected"] = sum(len(c.rejected) for c in conns)
    sizes["map_connection_flagged"] = sum(len(c.flagged) for c in conns)
    sizes["map_repeated_warning_kinds"] = sum(
        len(w) for w in (capture.outage, failure_log.repeated, sql_gateway.failed_calls)
    )
    sizes["map_poison_keys"] = sum(len(mailbox.poison) for mailbox in system.tree.root.mailboxes())
    return sizes


async def measure(
    system: RunningSystem,
    db: SqlClient,
    *,
    data_dir: Path,
    router_name: str,
    cycle: int,
    elapsed_s: float,
    invariants_held: bool,
) -> Sample:
    """Every figure of one cycle; one that cannot be read is -1 (never raised)."""
    figures: dict[str, float] = {
        "rss_kb": rss_kb(),
        "open_fds": open_fds(),
        "trio_tasks": trio_tasks(),
        "spool_bytes": spool_bytes(data_dir),
    }
    gateways = [s for s in system.tree.root.startables() if isinstance(s, SqlGateway)]
    figures["asyncio_tasks"] = sum(g.asyncio_tasks() for g in gateways) if gateways else -1
    try:
        figures["metric_series"] = await metric_series(system.http_port, system)
    except OSError:
        figures["metric_series"] = -1
    figures.update(await map_sizes(system, router_name))
    try:
        rows = await table_rows(db)
    except DazActorsError:
        rows = {}
    return Sample(
        cycle=cycle,
        elapsed_s=elapsed_s,
        invariants_held=invariants_held,
        figures=figures,
        rows=rows,
    )


# ------------------------------------------------------------------ the record


class SoakRecorder:
    """``soak.csv``: one row per cycle, written (and flushed) as each cycle ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.samples: list[Sample] = []
        self.tables: list[str] | None = None  # fixed by the first sample

    def add(self, sample: Sample) -> None:
        first = self.tables is None
        if self.tables is None:
            self.tables = sorted(sample.rows)
        self.samples.append(sample)
        columns = [*FIXED_COLUMNS, *(f"rows:{t}" for t in self.tables)]
        with self.path.open("a", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            if first:
                writer.writeheader()
            writer.writerow(sample.row(self.tables))


def read_samples(path: Path) -> list[Sample]:
    """The samples of a ``soak.csv`` (what `SoakRecorder` wrote), in cycle order.

    Raises `ValueError` naming the line when a row is not one of its rows (a missing
    column, a figure that is not a number).
    """
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        columns = list(reader.fieldnames or ())
        missing = [c for c in FIXED_COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"{path}: not a soak.csv (no column {', '.join(missing)})")
        tables = [c[5:] for c in columns if c.startswith("rows:")]
        samples = []
        for line, row in enumerate(reader, start=2):
            try:
                samples.append(
                    Sample(
                        cycle=int(row["cycle"]),
                        elapsed_s=float(row["elapsed_s"]),
                        invariants_held=row["invariants_held"] == "1",
                        figures={c: float(row[c]) for c in FIXED_COLUMNS[3:]},
                        rows={t: int(float(row[f"rows:{t}"])) for t in tables},
                    )
                )
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}, line {line}: not a soak row ({exc})") from None
    return samples


# ------------------------------------------------------------------ the verdict


@attrs.frozen
class FlatRule:
    """A figure is flat when its slope after the first cycle is at most `per_hour`, or
    when the second half of those cycles never goes above the first half's high water
    mark by more than `slack` (a bounded figure wobbles, a leak keeps setting new highs).
    A map with a `bound` of its own is flat while it stays within it (it fills up to the
    bound, then stays there)."""

    per_hour: float = 0.0
    slack: float = 0.0
    bound: float | None = None


# None: reported, not judged (chat and event tables grow by design: retention is off)
FLAT_RULES: Mapping[str, FlatRule | None] = {
    "rss_kb": FlatRule(per_hour=1024, slack=1024),  # the target: 1 MB per hour
    "open_fds": FlatRule(per_hour=0, slack=2),  # a socket being reconnected at that moment
    "trio_tasks": FlatRule(per_hour=0, slack=10),  # commands and calls in flight
    "asyncio_tasks": FlatRule(per_hour=0, slack=2),
    "spool_bytes": FlatRule(),  # drained to empty (86 bytes: the header) after each cycle
    "metric_series": FlatRule(),
    "map_router_ranks": FlatRule(bound=MAX_RANKS),
    "map_router_cooldowns": FlatRule(bound=COOLDOWNS_KEPT),
    "map_connection_delays": FlatRule(bound=DELAYS_KEPT),
    "map_connection_rejected": FlatRule(),  # (event, reason): known events only
    "map_connection_flagged": FlatRule(),  # (event, flag): known events only
    # three loggers' tables of kinds
    "map_repeated_warning_kinds": FlatRule(bound=3 * MAX_KINDS),
    "map_poison_keys": FlatRule(),  # POISON_MEMORY per mailbox at most
}
MIN_JUDGED = 2  # samples after the first cycle needed to judge a figure


@attrs.frozen(kw_only=True)
class Verdict:
    """One figure over the soak."""

    name: str
    first: float  # at the end of the first cycle
    last: float
    slope_per_hour: float | None  # least squares over the cycles after the first
    flat: bool | None  # None: not judged (too few cycles, or a table that may grow)


def _slope(points: Sequence[tuple[float, float]]) -> float | None:
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def _judge(rule: FlatRule | None, values: Sequence[float], slope: float | None) -> bool | None:
    if rule is None or len(values) < MIN_JUDGED or min(values) < 0:
        return None
    if rule.bound is not None:
        return max(values) <= rule.bound
    if slope is None or slope <= rule.per_hour:
        return True
    half = max(1, len(values) // 2)
    return max(values[half:]) <= max(values[:half]) + rule.slack


def summarise(samples: Sequence[Sample]) -> list[Verdict]:
    """Each figure's slope per hour after the first cycle, and whether it is flat."""
    if not samples:
        return []
    later = samples[1:]
    names = list(FIXED_COLUMNS[3:]) + [f"rows:{t}" for t in sorted(samples[0].rows)]
    verdicts = []
    for name in names:

        def value(s: Sample, name: str = name) -> float:
            if name.startswith("rows:"):
                return s.rows.get(name[5:], -1)
            return s.figures.get(name, -1)

        points = [(s.elapsed_s / 3600.0, value(s)) for s in later]
        slope = _slope(points)
        verdicts.append(
            Verdict(
                name=name,
                first=value(samples[0]),
                last=value(samples[-1]),
                slope_per_hour=slope,
                flat=_judge(FLAT_RULES.get(name), [v for _, v in points], slope),
            )
        )
    return verdicts


def render_verdicts(samples: Sequence[Sample], verdicts: Sequence[Verdict]) -> str:
    """The soak's closing report: cycles, invariants, each figure and its slope."""
    held = sum(1 for s in samples if s.invariants_held)
    lines = ["", f"soak: {len(samples)} cycle(s), invariants held in {held}"]
    for v in verdicts:
        slope = "   n/a" if v.slope_per_hour is None else f"{v.slope_per_hour:+.1f}/h"
        mark = {True: "flat", False: "GROWS", None: "-"}[v.flat]
        lines.append(
            f"  {v.name:<32} first {v.first:>10g}  last {v.last:>10g}  {slope:>14}  {mark}"
        )
    broken = [v.name for v in verdicts if v.flat is False]
    if held != len(samples):
        lines.append("SOAK FAILED: invariants broke in some cycle (see soak.csv)")
    elif broken:
        lines.append(f"SOAK FAILED: not flat: {', '.join(broken)}")
    else:
        lines.append("soak passed: every cycle's invariants held and every judged figure is flat")
    return "\n".join(lines)


def soak_passed(samples: Sequence[Sample], verdicts: Sequence[Verdict]) -> bool:
    """Every cycle's invariants held and no judged figure grows."""
    return (
        bool(samples)
        and all(s.invariants_held for s in samples)
        and not any(v.flat is False for v in verdicts)
    )
