"""The fence of a room: whether this process may act in its channel right now.

A single process may always act (`OPEN`). Where several processes share a database (the
cluster layer), a room is joined only while its process holds the channel's lease, and the
room gets a fence that closes when the lease is lost or can no longer be known to be held.
The connection asks `Fence.is_open` right before every chat line it writes and before
every event it passes on, so a process that wakes up late (paused, starved) says and
stores nothing once its lease may be someone else's, whatever its other tasks have not
noticed yet.
"""

from __future__ import annotations

from typing import Protocol

import trio

__all__ = ["OPEN", "Fence", "OpenFence"]


class Fence(Protocol):
    """May the room act in its channel? Once closed, a fence stays closed."""

    def is_open(self) -> bool:
        """True while acting is allowed (asked right before each action)."""
        ...

    async def wait_closed(self) -> None:
        """Return once the fence is closed (never, for a fence that cannot close)."""
        ...

    @property
    def token(self) -> int | None:
        """The fencing token this room acts under (None without a lease)."""
        ...

    def vacated(self) -> None:
        """Told by the connection once the fence is closed and its websocket is closed too:
        the room is out of the channel, so the lease can go to another process now."""
        ...


class OpenFence:
    """The fence of a room in a single process: always open."""

    def is_open(self) -> bool:
        return True

    async def wait_closed(self) -> None:
        await trio.sleep_forever()

    @property
    def token(self) -> int | None:
        return None

    def vacated(self) -> None:
        pass


OPEN: Fence = OpenFence()
