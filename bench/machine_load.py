"""The machine's load and this process's CPU around a benchmark run, printed the same way
by every benchmark that compares its sides with a baseline on PostgreSQL."""

from __future__ import annotations

import os
import resource
import time

__all__ = ["LoadReport", "process_cpu"]


def process_cpu() -> float:
    """CPU seconds this process has used (user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} {five:.2f}"


class LoadReport:
    """Prints the load average when made, and at `end` the load again with the share of
    one core this process used in between."""

    def __init__(self) -> None:
        print(f"load average at start: {_load()}")
        self.wall, self.cpu = time.perf_counter(), process_cpu()

    def end(self) -> None:
        share = (process_cpu() - self.cpu) / (time.perf_counter() - self.wall)
        print(
            f"\nload average at end: {_load()}; "
            f"this process used {share:.0%} of one core (PostgreSQL runs in its own processes)"
        )
