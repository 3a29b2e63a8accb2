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
mmap/munmap pair per buffer of 128 KiB or more (a chat bot makes few). Smaller blocks
still leave holes inside the heap, which only ``malloc_trim(0)`` gives back (the pages of
its free chunks): `trim_malloc_every` does that every `TRIM_INTERVAL` seconds while the
tree runs (a few milliseconds for a heap of tens of MiB).

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
from collections.abc import Mapping
from typing import Any

import attrs
import trio

__all__ = [
    "MMAP_THRESHOLD",
    "TRIM_INTERVAL",
    "TRIM_THRESHOLD",
    "TUNING_ENV",
    "MallocInfo",
    "Tuning",
    "malloc_info",
    "malloc_trim",
    "trim_malloc_every",
    "tune_malloc",
]

log = logging.getLogger("daz_actors.app")

MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept fixed
TRIM_THRESHOLD = 128 * 1024  # the free top of the heap given back past this
TRIM_INTERVAL = 60.0  # seconds between two malloc_trim(0) while the tree runs
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


@attrs.frozen
class Tuning:
    """What `tune_malloc` did."""

    tuned: bool  # the thresholds are fixed (and the periodic trim is worth running)
    said: str  # in words (also logged)


def tune_malloc(environ: Mapping[str, str] | None = None) -> Tuning:
    """Fix glibc's mmap and trim thresholds (see the module's text)."""
    env = os.environ if environ is None else environ
    tuned = False
    if env.get(TUNING_ENV, "").strip().lower() in {"off", "0", "no", "false"}:
        outcome = f"glibc malloc left at its defaults ({TUNING_ENV}=off)"
    elif chosen := [name for name in GLIBC_ENV if name in env]:
        outcome = f"glibc malloc left as the environment sets it ({', '.join(chosen)})"
    else:
        mallopt = _function("mallopt", [ctypes.c_int, ctypes.c_int])
        if mallopt is None:
            outcome = "not glibc: the allocator is left as it is"
        elif mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(
            _M_TRIM_THRESHOLD, TRIM_THRESHOLD
        ):
            tuned = True
            outcome = (
                f"glibc malloc: mmap threshold fixed at {MMAP_THRESHOLD // 1024} KiB, "
                f"trim threshold {TRIM_THRESHOLD // 1024} KiB, free heap pages given back "
                f"every {TRIM_INTERVAL:g} s"
            )
        else:
            outcome = "glibc malloc refused the thresholds: left at its defaults"
    log.info("%s", outcome)
    return Tuning(tuned=tuned, said=outcome)


async def trim_malloc_every(interval: float = TRIM_INTERVAL) -> None:
    """Give glibc's free heap pages back to the system every `interval` seconds, for ever
    (until cancelled)."""
    while True:
        await trio.sleep(interval)
        malloc_trim()


class MallocInfo(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc 2.33 and later): sizes in bytes."""

    _fields_ = [
        ("arena", ctypes.c_size_t),  # non-mmapped space allocated from the system
        ("ordblks", ctypes.c_size_t),  # free chunks
        ("smblks", ctypes.c_size_t),
        ("hblks", ctypes.c_size_t),  # mmapped regions
        ("hblkhd", ctypes.c_size_t),  # space in mmapped regions
        ("usmblks", ctypes.c_size_t),
        ("fsmblks", ctypes.c_size_t),
        ("uordblks", ctypes.c_size_t),  # allocated (in use)
        ("fordblks", ctypes.c_size_t),  # free (kept by the allocator)
        ("keepcost", ctypes.c_size_t),
    ]


def malloc_info() -> MallocInfo | None:
    """glibc's heap figures over all its arenas; None when not glibc 2.33+."""
    fn = _function("mallinfo2", [], MallocInfo)
    if fn is None:
        return None
    info: MallocInfo = fn()
    return info


def malloc_trim() -> bool:
    """Give glibc's free heap pages back to the system (``malloc_trim(0)``); False if
    not glibc."""
    fn = _function("malloc_trim", [ctypes.c_size_t])
    if fn is None:
        return False
    fn(0)
    return True


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # mallopt exists in musl too (a no-op there): gnu_get_libc_version tells glibc apart
    return libc if hasattr(libc, "gnu_get_libc_version") else None


_LIBC = _libc()


def _function(name: str, argtypes: list[Any], restype: Any = ctypes.c_int) -> Any:
    if _LIBC is None or not hasattr(_LIBC, name):
        return None
    fn = getattr(_LIBC, name)
    fn.argtypes = argtypes
    fn.restype = restype
    return fn
