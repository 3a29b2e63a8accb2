"""``daz-actors plugins``: the installed plugins, whether the config enables them (and
where), their commands, and the state of their migrations in the database ``run`` uses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from daz_actors.app.cli_config import load_cli_config
from daz_actors.app.cli_database import current_choice, database_options, open_cli_database

if TYPE_CHECKING:  # imported when the command runs: `daz-actors --help` stays quick
    from daz_actors.plugins.discovery import InstalledPlugin
    from daz_actors.plugins.settings import PluginSettings

__all__ = ["plugins_command"]


async def _states(url: str, installed: dict[str, InstalledPlugin]) -> dict[str, str]:
    import asyncpg

    from daz_actors.plugins.migrations import plugin_status
    from daz_actors.storage.errors import MigrationError

    conn: Any = await asyncpg.connect(url)
    try:
        states = {}
        for name, entry in installed.items():
            if entry.plugin is None:
                continue
            try:
                report = await plugin_status(conn, entry.plugin)
            except MigrationError as exc:
                states[name] = f"unknown ({exc})"
                continue
            states[name] = (
                f"version {report.current_version}, {len(report.applied)} applied, "
                f"{len(report.pending)} pending"
                + (f", {len(report.unknown)} unknown" if report.unknown else "")
            )
        return states
    finally:
        await conn.close()


def _enabled(settings: PluginSettings | None) -> str:
    if settings is None:
        return "disabled"
    if settings.channels is None:
        return "enabled (every channel)"
    return f"enabled in {', '.join(sorted(settings.channels))}"


@click.command("plugins")
@click.option(
    "--no-database",
    is_flag=True,
    help="Do not open the database: list the migration files instead of their state.",
)
@database_options
def plugins_command(no_database: bool) -> None:
    """List the installed plugins: enabled or not (and where), commands, migrations."""
    import asyncio

    import asyncpg

    from daz_actors.plugins.discovery import installed_plugins
    from daz_actors.plugins.migrations import plugin_migrations

    choice = current_choice()
    config = load_cli_config(choice.config_file)
    installed = dict(installed_plugins())
    if not installed:
        click.echo("no plugins installed (entry point group daz_actors.plugins)")
        return
    states: dict[str, str] = {}
    if not no_database:
        with open_cli_database(choice) as db:
            try:
                states = asyncio.run(_states(db.url, installed))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise click.ClickException(f"database {db.redacted}: {exc}") from exc
    from daz_actors.plugins.host import PluginHost
    from daz_actors.runtime.bus import EventBus
    from daz_actors.runtime.registry import Registry

    # set up as `run` would (nothing runs): what each enabled plugin brings
    host = PluginHost(config.plugins, registry=Registry(), bus=EventBus())
    for name, entry in installed.items():
        if entry.plugin is None:
            click.echo(f"{name}  BROKEN ({entry.distribution}: {entry.value}): {entry.error}")
            continue
        plugin = entry.plugin
        click.echo(f"{name} {plugin.version} ({entry.distribution}): {plugin.description}")
        click.echo(f"  {_enabled(config.plugins.get(name))}")
        loaded = host.plugins.get(name)
        if loaded is not None:
            commands = ", ".join(f"!{c.name}" for c in loaded.parts.commands) or "none"
            actors = ", ".join(a.name for a in loaded.parts.actors) or "none"
            click.echo(f"  commands: {commands}; actors: {actors}")
        files = len(plugin_migrations(plugin))
        state = states.get(name, f"{files} migration file(s)")
        click.echo(f"  migrations: {state}" if files else "  migrations: none")
