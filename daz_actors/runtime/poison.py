"""What a mailbox remembers of the messages dropped as poison, so a copy is skipped.

A tell an actor crashed on `ChildSpec.redeliver` times is dropped as poison. The same
message may come again as a new object: a chat server replays its last lines after every
reconnect, and the reconnect was caused by the very crash. A message that says what makes
it "the same" (`PoisonKeyed`) is remembered when dropped, and a later copy is skipped
(counted, logged) instead of crashing the actor again. Messages without a key are never
skipped.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable
from typing import Protocol, runtime_checkable

__all__ = ["POISON_MEMORY", "PoisonKeyed", "PoisonMemory", "poison_key"]

POISON_MEMORY = 256  # keys kept per mailbox; the oldest is forgotten first


@runtime_checkable
class PoisonKeyed(Protocol):
    """A message that can say which later messages are copies of it."""

    def poison_key(self) -> Hashable:
        """Equal for every copy of this message (e.g. a replay), whatever its object."""
        ...


def poison_key(message: object) -> Hashable | None:
    """`message`'s key if it has one, else None."""
    return message.poison_key() if isinstance(message, PoisonKeyed) else None


class PoisonMemory:
    """A bounded set of the keys of messages dropped as poison."""

    __slots__ = ("_keys", "capacity")

    def __init__(self, capacity: int = POISON_MEMORY) -> None:
        self.capacity = capacity
        self._keys: collections.OrderedDict[Hashable, None] = collections.OrderedDict()

    def remember(self, key: Hashable) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)
