"""The registry: actor names to refs, passed explicitly (no hidden globals)."""

from __future__ import annotations

from daz_actors.runtime.errors import NameTaken, NoSuchActor
from daz_actors.runtime.ref import ActorRef

__all__ = ["Registry"]


class Registry:
    """Maps names to `ActorRef`s; supervisors register their children here."""

    def __init__(self) -> None:
        self._refs: dict[str, ActorRef] = {}

    def register(self, name: str, ref: ActorRef) -> None:
        """Register `ref` under `name`; a name is held by one actor at a time."""
        existing = self._refs.get(name)
        if existing is not None and existing is not ref:
            raise NameTaken(f"an actor named {name!r} is already registered")
        self._refs[name] = ref

    def unregister(self, name: str) -> None:
        """Forget `name` (no error if it was not registered)."""
        self._refs.pop(name, None)

    def lookup(self, name: str) -> ActorRef:
        """The ref registered under `name`; raises `NoSuchActor` if none is."""
        try:
            return self._refs[name]
        except KeyError:
            raise NoSuchActor(f"no actor is registered as {name!r}") from None

    def get(self, name: str) -> ActorRef | None:
        """The ref registered under `name`, or None."""
        return self._refs.get(name)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._refs)

    def __contains__(self, name: object) -> bool:
        return name in self._refs
