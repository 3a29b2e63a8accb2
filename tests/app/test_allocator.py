"""`tune_malloc`: glibc's mmap threshold stays fixed, so a freed big buffer does not turn
the next buffers of its size into heap blocks that leave holes (the soak's RSS growth,
bench/README.md); the operator's own settings win.

glibc's settings are the process's: the effect is measured in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from daz_actors.app.allocator import tune_malloc
from daz_actors.app.soak_heap import malloc_info

PROGRAM = """
import json, sys
from daz_actors.app.allocator import tune_malloc
from daz_actors.app.soak_heap import malloc_info
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
    assert said == (
        "glibc malloc left as the environment sets it (MALLOC_MMAP_THRESHOLD_, MALLOC_TOP_PAD_)"
    )
    assert tune_malloc({"DAZ_MALLOC_TUNING": "off"}) == (
        "glibc malloc left at its defaults (DAZ_MALLOC_TUNING=off)"
    )
