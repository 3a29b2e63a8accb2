"""``daz-actors migrate``: apply, roll back or list the schema migrations.

Attach to the main group with ``main.add_command(migrate_command)``. It takes ``--config``,
``--database-url`` and ``--data-dir`` and so migrates the database ``run`` would use
(`daz_actors.app.cli_database`). Without ``--plugin`` it applies the core migrations and
then those of every plugin the config enables (each plugin its own version sequence);
with ``--plugin NAME``, ``--to``, ``--rollback`` and ``--status`` concern that plugin's only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from daz_actors.app.cli_config import load_cli_config
from daz_actors.app.cli_database import current_choice, database_options, open_cli_database

if TYPE_CHECKING:  # the driver, the migrations and the plugins are imported when it runs
    from daz_actors.plugins.declaration import Plugin
    from daz_actors.storage.migrations import MigrationStatus

__all__ = ["migrate_command"]


def _print_status(report: MigrationStatus) -> None:
    click.echo(f"current version: {report.current_version}")
    for applied in report.applied:
        click.echo(
            f"  applied  {applied.version:04d} {applied.name}  "
            f"({applied.applied_at.isoformat(timespec='seconds')})"
        )
    for pending in report.pending:
        click.echo(f"  pending  {pending.version:04d} {pending.name}")
    for version in report.unknown:
        click.echo(f"  unknown  {version:04d} (applied, but no file for it here)")


async def _run(
    url: str,
    *,
    to: int | None,
    rollback_to: int | None,
    show: bool,
    plugins: list[Plugin[Any]],
    one: Plugin[Any] | None,
) -> None:
    import asyncpg

    from daz_actors.plugins.migrations import plugin_migrations
    from daz_actors.storage.migrations import (
        load_migrations,
        migrate,
        migration_lock,
        rollback,
        status,
    )

    conn: Any = await asyncpg.connect(url)
    try:
        if one is not None:  # one plugin's sequence only
            known, scope, label = plugin_migrations(one), one.name, f"plugin {one.name}: "
        else:
            known, scope, label = load_migrations(), None, ""
        if show:
            if label:
                click.echo(label.rstrip(": "))
            _print_status(await status(conn, migrations=known, plugin=scope))
        elif rollback_to is not None:
            done = await rollback(conn, rollback_to, migrations=known, plugin=scope)
            for migration in done:
                click.echo(f"rolled back {label}{migration.down_file}")
            if not done:
                click.echo(
                    f"{label}nothing to roll back: already at or below version {rollback_to}"
                )
        else:
            async with migration_lock(conn):  # the core's and the plugins' as one run
                done = await migrate(conn, to, migrations=known, plugin=scope)
                for migration in done:
                    click.echo(f"applied {label}{migration.up_file}")
                if one is None and to is None:  # then every enabled plugin's sequence
                    for plugin in plugins:
                        for migration in await migrate(
                            conn, migrations=plugin_migrations(plugin), plugin=plugin.name
                        ):
                            done.append(migration)
                            click.echo(f"applied plugin {plugin.name}: {migration.up_file}")
            if not done:
                click.echo(f"{label}nothing to apply: the schema is up to date")
    finally:
        await conn.close()


def _chosen_plugin(name: str) -> Plugin[Any]:
    from daz_actors.plugins.discovery import installed_plugins

    entry = installed_plugins().get(name)
    if entry is None:
        known = ", ".join(installed_plugins()) or "none"
        raise click.BadParameter(f"no installed plugin {name!r} (installed: {known})")
    if entry.plugin is None:
        raise click.BadParameter(f"plugin {name!r} failed to load: {entry.error}")
    return entry.plugin


@click.command("migrate")
@click.option("--to", "to", type=click.IntRange(min=0), help="Migrate up to this version.")
@click.option(
    "--rollback",
    "rollback_to",
    type=click.IntRange(min=0),
    help="Roll back every migration newer than this version (0: all of them).",
)
@click.option("--status", "show", is_flag=True, help="List applied and pending migrations.")
@click.option(
    "--plugin",
    "plugin_name",
    default=None,
    help="Work on this plugin's migrations only (its own version sequence).",
)
@database_options
def migrate_command(
    to: int | None,
    rollback_to: int | None,
    show: bool,
    plugin_name: str | None,
) -> None:
    """Apply the schema migrations (up to the latest, or --to N), roll back, or list them.

    Applying to the latest also applies the migrations of every plugin the config
    enables (--to N applies the core's only).
    """
    import asyncio

    import asyncpg

    from daz_actors.storage.migrations import MigrationError

    chosen = [
        name
        for name, on in (
            ("--to", to is not None),
            ("--rollback", rollback_to is not None),
            ("--status", show),
        )
        if on
    ]
    if len(chosen) > 1:
        raise click.UsageError(f"{' and '.join(chosen)} cannot be used together")
    choice = current_choice()
    one = _chosen_plugin(plugin_name) if plugin_name is not None else None
    plugins = [s.plugin for s in load_cli_config(choice.config_file).plugins.values()]
    with open_cli_database(choice) as db:
        try:
            asyncio.run(
                _run(db.url, to=to, rollback_to=rollback_to, show=show, plugins=plugins, one=one)
            )
        except MigrationError as exc:
            raise click.ClickException(str(exc)) from exc
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise click.ClickException(f"database {db.redacted}: {exc}") from exc
