"""Plugins: installable units bringing commands, actors, migrations and retry handlers.

The public API for writing one (docs/plugins.md)::

    from daz_actors.plugins import Plugin, PluginContext, PluginParts, PluginCommand
"""

from daz_actors.cytube.channel_events import ChannelEventKind as ChannelEventKind
from daz_actors.cytube.commands import CommandContext as CommandContext
from daz_actors.plugins.api import NoParams as NoParams
from daz_actors.plugins.api import NotConnected as NotConnected
from daz_actors.plugins.api import Plugin as Plugin
from daz_actors.plugins.api import PluginActor as PluginActor
from daz_actors.plugins.api import PluginCommand as PluginCommand
from daz_actors.plugins.api import PluginContext as PluginContext
from daz_actors.plugins.api import PluginParts as PluginParts
from daz_actors.plugins.api import actor_with_nursery as actor_with_nursery
from daz_actors.plugins.api import plugin_actor_name as plugin_actor_name
from daz_actors.plugins.discovery import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
from daz_actors.plugins.discovery import InstalledPlugin as InstalledPlugin
from daz_actors.plugins.discovery import installed_plugins as installed_plugins
from daz_actors.retry.handlers import AttemptContext as AttemptContext
from daz_actors.retry.handlers import PermanentError as PermanentError
from daz_actors.retry.intents import IntentType as IntentType
from daz_actors.retry.policies import RetryPolicy as RetryPolicy
from daz_actors.runtime.bus import Published as Published
from daz_actors.runtime.events import new_id as new_id
from daz_actors.storage.sql_messages import CALL_FAILED as CALL_FAILED
from daz_actors.storage.sql_messages import SqlClient as SqlClient

__all__ = [
    "CALL_FAILED",
    "ENTRY_POINT_GROUP",
    "AttemptContext",
    "ChannelEventKind",
    "CommandContext",
    "InstalledPlugin",
    "IntentType",
    "NoParams",
    "NotConnected",
    "PermanentError",
    "Plugin",
    "PluginActor",
    "PluginCommand",
    "PluginContext",
    "PluginParts",
    "Published",
    "RetryPolicy",
    "SqlClient",
    "actor_with_nursery",
    "installed_plugins",
    "new_id",
    "plugin_actor_name",
]
