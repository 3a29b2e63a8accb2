"""Retry items for a channel this process does not serve: handed to the node that does.

In a single process a channel whose room is not here is served nowhere, and the retry
handlers drop the line or dead-letter the command, as they always did. On a cluster node
(several processes sharing one retry queue, daz_actors/cluster/) any node's worker may
claim an item that only the node holding the channel's lease can carry out; the cluster
layer gives the handlers an `Elsewhere` that hands such an item over (released without
counting an attempt, due again shortly, the holder's workers woken for it: schema 0016)
and says what became of it.
"""

from __future__ import annotations

import enum
from typing import Protocol

import attrs

from daz_actors.retry.handlers import AttemptContext
from daz_actors.runtime.errors import DazActorsError

__all__ = ["Elsewhere", "HandOver", "HandOverResult", "NotHeldHere"]


class HandOver(enum.Enum):
    """What became of an item offered to another node."""

    HANDED_OVER = "handed_over"  # released (no attempt counted), due again shortly
    STAY = "stay"  # (only_elsewhere) no other node holds the channel: keep it here
    UNSERVED = "unserved"  # no node holds the channel or lists it in its config
    EXHAUSTED = "exhausted"  # handed over too often already: fail this attempt (counted)
    LOST = "lost"  # this worker's lease on the item is gone: another worker has it


@attrs.frozen(kw_only=True)
class HandOverResult:
    """The verdict, the node holding the channel (if any) and the item's hand-overs."""

    verdict: HandOver
    holder: str | None = None
    hand_overs: int | None = None


class Elsewhere(Protocol):
    """Hands a claimed item over to the node that holds its channel."""

    async def hand_over(
        self, channel: str, ctx: AttemptContext, *, only_elsewhere: bool = False
    ) -> HandOverResult:
        """Offer the item of `ctx` (claimed by this worker) to the holder of `channel`.

        With `only_elsewhere`, only when another node holds a valid lease of it (the room
        is here but cannot speak: maybe it is leaving a lease lost); else `HandOver.STAY`.
        """
        ...


class NotHeldHere(DazActorsError, RuntimeError):
    """An item for a channel another node holds was handed over too often without that
    node taking it: this attempt fails (retryably, counted), so it ends as a dead letter."""

    retryable = True
    code = "not_held_here"
