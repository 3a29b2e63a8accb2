"""Actor kinds: named factories, so that a config file can place actors in the tree."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from daz_actors.runtime.config_reader import read_attrs
from daz_actors.runtime.errors import NameTaken, UnknownActorKind

if TYPE_CHECKING:  # a config is read without importing trio
    from daz_actors.runtime.actor import Startable
    from daz_actors.runtime.bus import EventBus
    from daz_actors.runtime.registry import Registry

__all__ = ["ActorKind", "ActorKinds", "BuildContext", "NoParams"]

P = TypeVar("P")


@attrs.frozen(kw_only=True)
class NoParams:
    """Parameters of a kind that takes none."""


@attrs.frozen(kw_only=True)
class BuildContext:
    """What a kind's factory gets besides its parameters."""

    name: str  # the actor's name in the tree
    # the application's whole validated config (in the shipped application a
    # `daz_actors.app.config.Config`); the runtime does not read it, kinds do
    config: Any
    registry: Registry  # to look up other actors at run time
    bus: EventBus  # to publish and subscribe
    resources: Mapping[str, Any]  # process-wide services made by the runner (database, ...)


@attrs.frozen(kw_only=True)
class ActorKind(Generic[P]):
    """A registered actor kind: a name, a params class, and a factory."""

    name: str  # what `kind = "..."` says in the config
    params: type[P]  # an attrs class; the config's [actors.X.params] table is read into it
    build: Callable[[P, BuildContext], Startable]  # makes the child's Startable
    description: str = ""  # shown by `daz-actors tree`

    def read_params(self, raw: Mapping[str, Any], path: str) -> P:
        """Validate a params table into `params`, naming the key path on error."""
        return read_attrs(dict(raw), self.params, path)


class ActorKinds:
    """A registry of actor kinds, passed to config loading and tree building."""

    def __init__(self) -> None:
        self._kinds: dict[str, ActorKind[Any]] = {}

    def add(self, kind: ActorKind[Any]) -> None:
        """Register `kind`; each name once."""
        if kind.name in self._kinds:
            raise NameTaken(f"an actor kind named {kind.name!r} is already registered")
        if not attrs.has(kind.params):
            raise TypeError(f"params of kind {kind.name!r} must be an attrs class")
        self._kinds[kind.name] = kind

    def register(
        self, name: str, *, params: type[P], description: str = ""
    ) -> Callable[[Callable[[P, BuildContext], Startable]], Callable[[P, BuildContext], Startable]]:
        """Decorator form of `add`: ``@kinds.register("echo", params=EchoParams)``."""

        def decorate(
            build: Callable[[P, BuildContext], Startable],
        ) -> Callable[[P, BuildContext], Startable]:
            self.add(ActorKind(name=name, params=params, build=build, description=description))
            return build

        return decorate

    def get(self, name: str, *, path: str = "kind") -> ActorKind[Any]:
        """The kind registered as `name`; `UnknownActorKind` naming `path` otherwise."""
        try:
            return self._kinds[name]
        except KeyError:
            known = ", ".join(sorted(self._kinds)) or "none registered"
            raise UnknownActorKind(path, f"unknown actor kind {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        """Registered kind names, sorted."""
        return sorted(self._kinds)

    def __contains__(self, name: object) -> bool:
        return name in self._kinds
