"""The actor kinds that ship with daz-actors."""

from __future__ import annotations

from ._failure_log import FailureLogParams, build_failure_log
from ._kinds import ActorKind, ActorKinds

__all__ = ["default_kinds"]


def default_kinds() -> ActorKinds:
    """A fresh registry holding every built-in kind; add your own to it."""
    kinds = ActorKinds()
    kinds.add(
        ActorKind(
            name="failure-log",
            params=FailureLogParams,
            build=build_failure_log,
            description="logs failure events from the bus",
        )
    )
    return kinds
