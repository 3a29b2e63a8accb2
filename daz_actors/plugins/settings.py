"""The ``[plugins.<name>]`` tables of the config file: which plugins run where, with what.

::

    [plugins.tell]
    enabled = true              # default: the plugin's own default (built-ins: on)
    channels = ["lobby"]        # default: every channel of the rooms
    delivery = "pm"             # the rest is the plugin's params, validated strictly

A table for a plugin that is not installed is an error (unless ``enabled = false``); so is
a key the plugin's params do not have. Plugins enabled by default run only where the
config places the ``plugins`` actor; enabling one explicitly without it is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from daz_actors.plugins.declaration import Plugin
from daz_actors.plugins.discovery import InstalledPlugin
from daz_actors.runtime.config_reader import read_attrs
from daz_actors.runtime.errors import ConfigError

__all__ = ["PluginSettings", "read_plugin_settings"]

RESERVED = ("enabled", "channels")


@attrs.frozen(kw_only=True)
class PluginSettings:
    """One enabled plugin, as the config sets it up."""

    plugin: Plugin[Any]
    params: Any  # an instance of plugin.params
    channels: frozenset[str] | None  # None: every channel

    @property
    def name(self) -> str:
        return self.plugin.name


def _channels(value: Any, path: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
        raise ConfigError(path, "expected a list of channel names")
    return frozenset(value)


def read_plugin_settings(
    tables: Mapping[str, Any],
    installed: Mapping[str, InstalledPlugin],
    *,
    placed: bool,
) -> dict[str, PluginSettings]:
    """The enabled plugins, by name, from the config's ``[plugins]`` `tables`.

    `placed`: the config places an actor of kind ``plugins`` (plugins enabled by default
    then run; without it only explicitly enabled ones would, and that is an error).
    """
    enabled: dict[str, PluginSettings] = {}
    for name, table in tables.items():
        path = f"plugins.{name}"
        if not isinstance(table, dict):
            raise ConfigError(path, "expected a table")
        on = table.get("enabled", True)
        if not isinstance(on, bool):
            raise ConfigError(f"{path}.enabled", "expected true or false")
        entry = installed.get(name)
        if entry is None:
            if not on:
                continue  # switched off, and not even installed here: fine
            known = ", ".join(installed) or "none"
            raise ConfigError(path, f"no installed plugin named {name!r} (installed: {known})")
        if entry.plugin is None:
            if not on:
                continue
            raise ConfigError(path, f"plugin {name!r} failed to load: {entry.error}")
        if not on:
            continue
        if not placed:
            raise ConfigError(
                path,
                f"plugin {name!r} is enabled but no actor of kind 'plugins' is placed in the "
                'tree (add one, e.g. [actors.plugins] kind = "plugins", as a child of the root)',
            )
        params = {k: v for k, v in table.items() if k not in RESERVED}
        enabled[name] = PluginSettings(
            plugin=entry.plugin,
            params=read_attrs(params, entry.plugin.params, path),
            channels=_channels(table.get("channels"), f"{path}.channels"),
        )
    if placed:
        for name, entry in installed.items():
            if name in tables or entry.plugin is None or not entry.plugin.enabled_by_default:
                continue
            enabled[name] = PluginSettings(
                plugin=entry.plugin,
                params=read_attrs({}, entry.plugin.params, f"plugins.{name}"),
                channels=None,
            )
    return dict(sorted(enabled.items()))
