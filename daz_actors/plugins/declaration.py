"""What a plugin declares: its `Plugin` object and the parts its setup returns.

Light on purpose: reading a config (``daz-actors config check``) loads every installed
plugin's `Plugin` through its entry point, and must not import the actor runtime, the
chat stack or a database driver. Everything a plugin is *given* is in api.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from daz_actors.plugins.names import plugin_actor_name
from daz_actors.runtime.kinds import NoParams
from daz_actors.runtime.supervision_policy import Restart

if TYPE_CHECKING:
    from daz_actors.cytube.commands import CommandFn
    from daz_actors.plugins.api import PluginContext
    from daz_actors.retry.intents import IntentType
    from daz_actors.runtime.actor import Startable

__all__ = [
    "MigrationFolder",
    "NoParams",
    "Plugin",
    "PluginActor",
    "PluginCommand",
    "PluginParts",
    "plugin_actor_name",
]

P = TypeVar("P")

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def _plugin_name(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(
            f"invalid plugin name {value!r}: use 1-32 lower-case letters, digits or '_', "
            "starting with a letter (it names a config table and a topic part)"
        )


@attrs.frozen(kw_only=True)
class PluginCommand:
    """A chat command a plugin brings (``!name``)."""

    name: str  # what follows the prefix, lower case
    fn: CommandFn  # async (CommandContext) -> reply or None
    help: str  # one line, shown by !help
    min_rank: float = 0  # users below this rank are ignored
    cooldown: float | None = None  # seconds per user; None: the room's command_cooldown


@attrs.frozen(kw_only=True)
class PluginActor:
    """An actor a plugin runs, in its own one_for_one supervisor ``plugin:<name>``."""

    name: str  # registered as plugin:<plugin>/<name>
    start: Startable  # e.g. actor_factory(lambda: MyActor(ctx))
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float | None = 5.0
    mailbox_size: int = 1000


@attrs.frozen(kw_only=True)
class PluginParts:
    """What `Plugin.setup` returns."""

    commands: Sequence[PluginCommand] = ()
    actors: Sequence[PluginActor] = ()
    # retry handlers of the plugin's own operations; each name starts with "<plugin>."
    intents: Sequence[IntentType[Any]] = ()


MigrationFolder = Traversable | Path


@attrs.frozen(kw_only=True)
class Plugin(Generic[P]):
    """What an entry point of the group ``daz_actors.plugins`` names."""

    name: str = attrs.field(validator=_plugin_name)  # its config table: [plugins.<name>]
    description: str  # one line, shown by `daz-actors plugins`
    setup: Callable[[PluginContext[P]], PluginParts]
    params: type[P] = NoParams  # type: ignore[assignment]  # an attrs class
    migrations: MigrationFolder | None = None  # NNNN_name.up.sql / .down.sql, from 0001
    version: str = "0"  # shown by `daz-actors plugins`
    # on without a [plugins.<name>] table, in a config that places the `plugins` actor
    enabled_by_default: bool = False

    def __attrs_post_init__(self) -> None:
        if not attrs.has(self.params):
            raise TypeError(f"plugin {self.name!r}: params must be an attrs class")
        if not self.description.strip():
            raise ValueError(f"plugin {self.name!r}: description must not be empty")
