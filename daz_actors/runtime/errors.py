"""The exception family of daz-actors.

Every error the package raises on purpose derives from `DazActorsError`; leaves also
derive from the builtin they stand for, so ``except ValueError`` still works for a bad
config value. "Stopped on purpose" (`ActorStopped`) is kept apart from "crashed"
(`ActorCrashed`), as trio keeps `ClosedResourceError` apart from `BrokenResourceError`.
"""

from __future__ import annotations


class DazActorsError(Exception):
    """Root of every error raised by daz-actors."""


class ConfigError(DazActorsError, ValueError):
    """A configuration file or value is invalid; the message names the key path."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


class UnknownActorKind(ConfigError):
    """A config or spec names an actor kind that nobody registered."""


class AskTimeout(DazActorsError, TimeoutError):
    """An `ask` got no reply within its timeout."""


class ActorCrashed(DazActorsError, RuntimeError):
    """The actor crashed while handling the message of an `ask`; the cause is chained."""


class Killed(DazActorsError, RuntimeError):
    """The error a child crashed with when `Supervisor.kill_child` killed it."""


class ActorStopped(DazActorsError, RuntimeError):
    """The actor behind a ref was stopped on purpose and takes no more messages."""


class NameTaken(DazActorsError, ValueError):
    """A registry or supervisor already has a child of that name."""


class NoSuchActor(DazActorsError, LookupError):
    """No actor is registered (or supervised) under that name."""


class SupervisorGaveUp(DazActorsError, RuntimeError):
    """A supervisor exceeded its restart intensity and stopped; the child's error is the cause."""

    def __init__(self, supervisor: str, child: str, restarts: int, within: float) -> None:
        self.supervisor = supervisor
        self.child = child
        self.restarts = restarts
        self.within = within
        super().__init__(
            f"supervisor {supervisor!r} gave up: child {child!r} needed more than "
            f"{restarts} restarts within {within:g} s"
        )


class StartFailed(DazActorsError, RuntimeError):
    """A child failed before it reported ready; the child's error is the cause."""


class StopForced(DazActorsError, RuntimeError):
    """A second signal cancelled what an orderly shutdown had not yet stopped."""
