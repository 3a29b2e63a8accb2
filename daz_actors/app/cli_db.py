"""``daz-actors migrate``: apply, roll back or list the schema migrations.

Attach to the main group with ``main.add_command(migrate_command)``. It takes ``--config``,
``--database-url`` and ``--data-dir`` and so migrates the database ``run`` would use
(`daz_actors.app.cli_database`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from daz_actors.app.cli_database import current_choice, database_options, open_cli_database

if TYPE_CHECKING:  # the driver and the migrations are imported when the command runs
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


async def _run(url: str, *, to: int | None, rollback_to: int | None, show: bool) -> None:
    import asyncpg

    from daz_actors.storage.migrations import migrate, rollback, status

    conn: Any = await asyncpg.connect(url)
    try:
        if show:
            _print_status(await status(conn))
        elif rollback_to is not None:
            done = await rollback(conn, rollback_to)
            for migration in done:
                click.echo(f"rolled back {migration.down_file}")
            if not done:
                click.echo(f"nothing to roll back: already at or below version {rollback_to}")
        else:
            done = await migrate(conn, to)
            for migration in done:
                click.echo(f"applied {migration.up_file}")
            if not done:
                click.echo("nothing to apply: the schema is up to date")
    finally:
        await conn.close()


@click.command("migrate")
@click.option("--to", "to", type=click.IntRange(min=0), help="Migrate up to this version.")
@click.option(
    "--rollback",
    "rollback_to",
    type=click.IntRange(min=0),
    help="Roll back every migration newer than this version (0: all of them).",
)
@click.option("--status", "show", is_flag=True, help="List applied and pending migrations.")
@database_options
def migrate_command(
    to: int | None,
    rollback_to: int | None,
    show: bool,
) -> None:
    """Apply the schema migrations (up to the latest, or --to N), roll back, or list them."""
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
    with open_cli_database(current_choice()) as db:
        try:
            asyncio.run(_run(db.url, to=to, rollback_to=rollback_to, show=show))
        except MigrationError as exc:
            raise click.ClickException(str(exc)) from exc
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise click.ClickException(f"database {db.redacted}: {exc}") from exc
