"""Start-up of the command line: `daz-actors --help` and `daz-actors config check`.

    python -m bench.startup [--runs N]

Each command runs N times as a fresh process (the installed console script's module, so
the same imports a user's shell gets); the median wall time is printed beside a bare
``python -c pass`` measured in the same run, with the machine's load. Target (issue 15):
``--help`` and ``config check`` answer in under 0.3 s on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "daz-actors --help": [sys.executable, "-m", "daz_actors.app.cli", "--help"],
    "daz-actors config check": [sys.executable, "-m", "daz_actors.app.cli", "config", "check"],
}


def median_seconds(argv: list[str], runs: int) -> float:
    """The median wall time of `runs` runs of `argv` (each must exit 0)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command (median)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, {args.runs} runs each, median wall time")
    base = median_seconds(COMMANDS["python -c pass"], args.runs)
    for name, argv in COMMANDS.items():
        seconds = base if name == "python -c pass" else median_seconds(argv, args.runs)
        verdict = (
            ""
            if name == "python -c pass"
            else ("  within 0.3 s" if seconds <= 0.3 else "  over the 0.3 s target")
        )
        print(f"{name:26} {seconds:6.3f} s  ({seconds / base:5.1f}x python -c pass){verdict}")


if __name__ == "__main__":
    main()
