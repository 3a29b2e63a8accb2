"""`tune_malloc`: glibc's mmap threshold stays fixed, so a freed big buffer does not turn
the next buffers of its size into heap blocks that leave holes (the soak's RSS growth,
bench/README.md); the operator's own settings win.

glibc's settings are the process's: the effect is measured in a fresh interpreter."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from daz_actors.app.allocator import Tuning, malloc_info, trim_malloc_every, tune_malloc
from daz_actors.testing import wait_until

PROGRAM = """
import json, sys
from daz_actors.app.allocator import malloc_info, tune_malloc
if sys.argv[1] == "tuned":
    tune_malloc({})
big = bytearray(4 * 1024 * 1024)  # served by mmap (over the 128 KiB starting threshold)
del big  # freed: glibc's dynamic threshold would rise to 4 MiB
before = malloc_info().hblkhd
held = bytearray(512 * 1024)
print(json.dumps({"mmapped": malloc_info().hblkhd - before}))
"""

pytestmark = pytest.mark.skipif(malloc_info() is None, reason="glibc 2.33+ only")


def mmapped_by_a_512k_buffer(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},  # no MALLOC_* of the caller's
    )
    result: int = json.loads(done.stdout.splitlines()[-1])["mmapped"]
    return result


def test_tuned_a_buffer_after_a_freed_bigger_one_is_still_its_own_mapping() -> None:
    """Untuned, the 512 KiB buffer is carved from the heap (the threshold rose to 4 MiB
    when the first buffer was freed); tuned, it is a mapping of its own, returned to the
    system when freed."""
    assert mmapped_by_a_512k_buffer("default") == 0
    assert mmapped_by_a_512k_buffer("tuned") >= 512 * 1024


def test_the_operators_settings_win() -> None:
    """glibc's own variables, or DAZ_MALLOC_TUNING=off, leave glibc alone (and say so)."""
    said = tune_malloc({"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TOP_PAD_": "0"})
    assert not said.tuned
    assert said.said == (
        "glibc malloc left as the environment sets it (MALLOC_MMAP_THRESHOLD_, MALLOC_TOP_PAD_)"
    )
    assert tune_malloc({"DAZ_MALLOC_TUNING": "off"}) == Tuning(
        tuned=False, said="glibc malloc left at its defaults (DAZ_MALLOC_TUNING=off)"
    )


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_the_periodic_trim_gives_the_heaps_holes_back() -> None:
    """Blocks of 8 to 16 KiB (under the mmap threshold: carved from the heap), three in
    four freed: holes between the kept ones, that glibc keeps resident. The trim task
    gives their pages back: the resident size falls by most of the 36 MiB or so freed."""
    rng = random.Random(7)
    kept, freed = [], []
    for n in range(4000):
        (kept if n % 4 == 0 else freed).append(bytearray(rng.randint(8000, 16000)))
    del freed
    before = rss_kb()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trim_malloc_every, 0.05)
        # the trim ran: 16 MiB went back at least
        await wait_until(lambda: before - rss_kb() >= 16 * 1024, timeout=20, interval=0.05)
        nursery.cancel_scope.cancel()
    assert len(kept) == 1000
