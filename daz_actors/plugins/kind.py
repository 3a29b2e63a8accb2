"""The ``plugins`` actor kind: the subtree of the enabled plugins' actors.

Place it in the tree like any kind (the shipped config has it before ``rooms``, so the
plugins subscribe to the channel events before the rooms join)::

    [actors.plugins]
    kind = "plugins"

It needs the ``plugin_host`` resource (a `PluginHost`), which the application makes from
the config's ``[plugins.<name>]`` tables.
"""

from __future__ import annotations

from daz_actors.plugins.host import PluginHost
from daz_actors.plugins.names import PLUGIN_HOST_RESOURCE, PLUGINS_KIND
from daz_actors.runtime.kinds import BuildContext, NoParams
from daz_actors.runtime.supervisor import Supervisor

__all__ = ["PLUGINS_KIND", "PLUGIN_HOST_RESOURCE", "build_plugins"]


def build_plugins(_params: NoParams, ctx: BuildContext) -> Supervisor:
    """Factory of the ``plugins`` kind."""
    host = ctx.resources.get(PLUGIN_HOST_RESOURCE)
    if not isinstance(host, PluginHost):
        raise RuntimeError(
            f"the plugins actor needs the {PLUGIN_HOST_RESOURCE!r} resource (a PluginHost), "
            f"got {host!r}"
        )
    return host.subtree(ctx.name)
