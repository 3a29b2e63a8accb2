"""glibc's malloc, set for a process that runs for months (`tune_malloc`, at start-up).

What the soaks found (bench/README.md, "Soak"): the Python objects stay flat (tracemalloc's
traced total, pymalloc's blocks in use, glibc's bytes in use all flat from the second
cycle on) while the resident size rose by a few hundred KiB a cycle: free memory that
glibc's heap kept and did not give back. glibc's default mmap threshold is dynamic: once
a block served by mmap is freed, the threshold rises to that block's size (up to 32 MiB),
so from then on buffers of that size are carved out of the heap; between such transient
buffers the heap keeps small long-lived blocks, and the holes the buffers leave are
free yet not returned (only the top of the heap can be trimmed). Fixing the thresholds
keeps every block of `MMAP_THRESHOLD` or more in a mapping of its own, returned to the
system when it is freed, and trims the top of the heap past `TRIM_THRESHOLD`. The cost: a
mmap/munmap pair per buffer of 128 KiB or more (a chat bot makes few).

The operator decides otherwise with glibc's own variables (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_``: when any is set,
glibc is left as they set it) or ``DAZ_MALLOC_TUNING=off`` (glibc's defaults). Not glibc
(musl, macOS): nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable, Mapping

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "TUNING_ENV", "tune_malloc"]

log = logging.getLogger("daz_actors.app")

MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept fixed
TRIM_THRESHOLD = 128 * 1024  # the free top of the heap given back past this
TUNING_ENV = "DAZ_MALLOC_TUNING"
# glibc's variables: set by the operator, they win
GLIBC_ENV = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
)
_M_TRIM_THRESHOLD = -1  # mallopt's parameters (malloc.h)
_M_MMAP_THRESHOLD = -3


def tune_malloc(environ: Mapping[str, str] | None = None) -> str:
    """Fix glibc's mmap and trim thresholds (see the module's text); what was done, in
    words (also logged)."""
    env = os.environ if environ is None else environ
    if env.get(TUNING_ENV, "").strip().lower() in {"off", "0", "no", "false"}:
        outcome = f"glibc malloc left at its defaults ({TUNING_ENV}=off)"
    elif chosen := [name for name in GLIBC_ENV if name in env]:
        outcome = f"glibc malloc left as the environment sets it ({', '.join(chosen)})"
    else:
        mallopt = _mallopt()
        if mallopt is None:
            outcome = "not glibc: the allocator is left as it is"
        elif mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(
            _M_TRIM_THRESHOLD, TRIM_THRESHOLD
        ):
            outcome = (
                f"glibc malloc: mmap threshold fixed at {MMAP_THRESHOLD // 1024} KiB, "
                f"trim threshold {TRIM_THRESHOLD // 1024} KiB (freed buffers go back to "
                "the system)"
            )
        else:
            outcome = "glibc malloc refused the thresholds: left at its defaults"
    log.info("%s", outcome)
    return outcome


def _mallopt() -> Callable[[int, int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # mallopt exists in musl too (a no-op there): gnu_get_libc_version tells glibc apart
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    fn = libc.mallopt
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn
