"""Plugins: installable units bringing commands, actors, migrations and retry handlers.

The public API for writing one (docs/plugins.md)::

    from daz_actors.plugins import Plugin, PluginContext, PluginParts, PluginCommand

The names are imported when first used (PEP 562): loading the installed plugins to check
a config imports this package, and must not pull in the actor runtime or the chat stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daz_actors.cytube.channel_events import ChannelEventKind as ChannelEventKind
    from daz_actors.cytube.commands import CommandContext as CommandContext
    from daz_actors.plugins.api import NotConnected as NotConnected
    from daz_actors.plugins.api import PluginContext as PluginContext
    from daz_actors.plugins.api import actor_with_nursery as actor_with_nursery
    from daz_actors.plugins.declaration import NoParams as NoParams
    from daz_actors.plugins.declaration import Plugin as Plugin
    from daz_actors.plugins.declaration import PluginActor as PluginActor
    from daz_actors.plugins.declaration import PluginCommand as PluginCommand
    from daz_actors.plugins.declaration import PluginParts as PluginParts
    from daz_actors.plugins.discovery import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
    from daz_actors.plugins.discovery import InstalledPlugin as InstalledPlugin
    from daz_actors.plugins.discovery import installed_plugins as installed_plugins
    from daz_actors.plugins.names import plugin_actor_name as plugin_actor_name
    from daz_actors.retry.handlers import AttemptContext as AttemptContext
    from daz_actors.retry.handlers import PermanentError as PermanentError
    from daz_actors.retry.intents import IntentType as IntentType
    from daz_actors.retry.policies import RetryPolicy as RetryPolicy
    from daz_actors.runtime.bus import Published as Published
    from daz_actors.runtime.events import new_id as new_id
    from daz_actors.storage.sql_messages import CALL_FAILED as CALL_FAILED
    from daz_actors.storage.sql_messages import SqlClient as SqlClient

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "ChannelEventKind": "daz_actors.cytube.channel_events",
    "CommandContext": "daz_actors.cytube.commands",
    "NotConnected": "daz_actors.plugins.api",
    "PluginContext": "daz_actors.plugins.api",
    "actor_with_nursery": "daz_actors.plugins.api",
    "NoParams": "daz_actors.plugins.declaration",
    "Plugin": "daz_actors.plugins.declaration",
    "PluginActor": "daz_actors.plugins.declaration",
    "PluginCommand": "daz_actors.plugins.declaration",
    "PluginParts": "daz_actors.plugins.declaration",
    "plugin_actor_name": "daz_actors.plugins.names",
    "ENTRY_POINT_GROUP": "daz_actors.plugins.discovery",
    "InstalledPlugin": "daz_actors.plugins.discovery",
    "installed_plugins": "daz_actors.plugins.discovery",
    "AttemptContext": "daz_actors.retry.handlers",
    "PermanentError": "daz_actors.retry.handlers",
    "IntentType": "daz_actors.retry.intents",
    "RetryPolicy": "daz_actors.retry.policies",
    "Published": "daz_actors.runtime.bus",
    "new_id": "daz_actors.runtime.events",
    "CALL_FAILED": "daz_actors.storage.sql_messages",
    "SqlClient": "daz_actors.storage.sql_messages",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name on first use and keep it (module-level ``__getattr__``)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names."""
    return sorted(__all__)
