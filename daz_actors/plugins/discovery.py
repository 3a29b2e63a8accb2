"""Finding the installed plugins: the entry points of the group ``daz_actors.plugins``.

A distribution ships a plugin by naming its `Plugin` object (or a function without
arguments returning one) in its metadata::

    [project.entry-points."daz_actors.plugins"]
    hello = "hello_plugin:plugin"

The entry point's name must be the plugin's name. The built-in plugins (tell, remind) are
declared the same way in daz-actors' own pyproject.toml. A plugin that fails to load is
listed with its error (`daz-actors plugins`); enabling it is then a config error.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from typing import Any

import attrs

from daz_actors.plugins.declaration import Plugin

__all__ = ["ENTRY_POINT_GROUP", "InstalledPlugin", "installed_plugins"]

ENTRY_POINT_GROUP = "daz_actors.plugins"


@attrs.frozen(kw_only=True)
class InstalledPlugin:
    """One entry point of the group, loaded (or not)."""

    name: str  # the entry point's name
    value: str  # what it points at, "module:attribute"
    distribution: str  # the distribution that declares it ("?" if unknown)
    plugin: Plugin[Any] | None  # None when it failed to load
    error: str | None = None  # why it failed to load


def _load(entry: importlib.metadata.EntryPoint) -> InstalledPlugin:
    dist = entry.dist.name if entry.dist is not None else "?"
    try:
        loaded = entry.load()
        plugin = loaded() if callable(loaded) and not isinstance(loaded, Plugin) else loaded
        if not isinstance(plugin, Plugin):
            raise TypeError(f"{entry.value} is not a daz_actors Plugin (got {plugin!r})")
        if plugin.name != entry.name:
            raise ValueError(
                f"the entry point is named {entry.name!r} but its plugin calls itself "
                f"{plugin.name!r}"
            )
    except Exception as exc:  # a broken plugin is reported, never fatal to the listing
        return InstalledPlugin(
            name=entry.name, value=entry.value, distribution=dist, plugin=None,
            error=f"{type(exc).__name__}: {exc}",
        )  # fmt: skip
    return InstalledPlugin(name=entry.name, value=entry.value, distribution=dist, plugin=plugin)


def installed_plugins() -> Mapping[str, InstalledPlugin]:
    """Every plugin installed in this environment, by name (sorted)."""
    found: dict[str, InstalledPlugin] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in found:  # two distributions claim one name: the first one wins
            first = found[entry.name]
            found[entry.name] = attrs.evolve(
                first,
                plugin=None,
                error=f"two installed distributions declare the plugin {entry.name!r}: "
                f"{first.distribution} and {entry.dist.name if entry.dist else '?'}",
            )
            continue
        found[entry.name] = _load(entry)
    return dict(sorted(found.items()))
