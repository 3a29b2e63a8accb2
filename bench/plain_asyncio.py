"""Run a baseline on asyncio's own event loop, whatever trio-asyncio has patched.

Importing trio-asyncio installs its event loop policy: from then on ``asyncio.run`` runs
on trio-asyncio's ``SyncTrioEventLoop`` (a trio loop in a thread), not on asyncio's
selector loop. A benchmark that imports trio-asyncio (for its daz side) and measures a
"plain asyncio" baseline with ``asyncio.run`` was measuring that instead (found in issue
15: the bench.retry baselines before commit "bench: plain asyncio baselines").
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_plain(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` on a fresh ``asyncio.SelectorEventLoop``."""
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(coro)
