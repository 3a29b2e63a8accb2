"""Plugins' migrations: each plugin's own version sequence, applied and rolled back alone.

The files live with the plugin (`Plugin.migrations`, ``NNNN_name.up.sql`` and
``.down.sql`` from 0001); the versions applied are rows of ``daz_plugin_migrations``
(plugin, version), created by the core migration 0011. asyncio coroutines over one asyncpg
connection, like `daz_actors.storage.migrations`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from daz_actors.plugins.declaration import Plugin
from daz_actors.storage.migrations import (
    Migration,
    MigrationStatus,
    load_migrations,
    migrate,
    rollback,
    status,
)

__all__ = ["migrate_plugins", "plugin_migrations", "plugin_status", "rollback_plugin"]


def plugin_migrations(plugin: Plugin[Any]) -> tuple[Migration, ...]:
    """The plugin's migrations (none if it has no folder)."""
    if plugin.migrations is None:
        return ()
    return load_migrations(plugin.migrations)


async def migrate_plugins(conn: Any, plugins: Iterable[Plugin[Any]]) -> list[tuple[str, Migration]]:
    """Apply every pending migration of each plugin; (plugin, migration) for each applied."""
    done = []
    for plugin in plugins:
        known = plugin_migrations(plugin)
        if known:
            for migration in await migrate(conn, migrations=known, plugin=plugin.name):
                done.append((plugin.name, migration))
    return done


async def rollback_plugin(conn: Any, plugin: Plugin[Any], to_version: int) -> list[Migration]:
    """Roll back the plugin's migrations newer than `to_version` (0: all of them)."""
    known = plugin_migrations(plugin)
    return await rollback(conn, to_version, migrations=known, plugin=plugin.name)


async def plugin_status(conn: Any, plugin: Plugin[Any]) -> MigrationStatus:
    """Applied, pending and unknown migrations of the plugin."""
    return await status(conn, migrations=plugin_migrations(plugin), plugin=plugin.name)
