"""Prometheus metrics fed by actors: made once per registry, shared by every feeder.

Several actors (every retry worker, every incarnation of the capture or the gateway, a
second subtree on the same registry) feed the same metric; prometheus-client refuses a
second metric of the same name on one registry, so each is made on first use only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast
from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry

__all__ = ["metric_once"]

_made: WeakKeyDictionary[CollectorRegistry, dict[str, Any]] = WeakKeyDictionary()

M = TypeVar("M")


def metric_once(registry: CollectorRegistry, name: str, make: Callable[[], M]) -> M:
    """The metric `name` of `registry`: `make()` (which registers it there) on first use."""
    made = _made.setdefault(registry, {})
    if name not in made:
        made[name] = make()
    return cast(M, made[name])
