"""The names the application uses to place the plugins (light: read by config checking)."""

from __future__ import annotations

__all__ = ["PLUGINS_KIND", "PLUGIN_HOST_RESOURCE", "plugin_actor_name"]

PLUGINS_KIND = "plugins"  # the actor kind of the plugins subtree
PLUGIN_HOST_RESOURCE = "plugin_host"  # the build resource holding the PluginHost


def plugin_actor_name(plugin: str, actor: str | None = None) -> str:
    """The registered name of a plugin's supervisor (``plugin:<name>``) or of one of its
    actors (``plugin:<name>/<actor>``)."""
    return f"plugin:{plugin}" if actor is None else f"plugin:{plugin}/{actor}"
