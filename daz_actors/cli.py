"""The ``daz-actors`` command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import trio

from ._build import build_tree, format_tree
from ._builtin_kinds import default_kinds
from ._bus import EventBus
from ._cli_db import migrate_command
from ._config import Config, load_config
from ._errors import ConfigError, SupervisorGaveUp
from ._registry import Registry
from ._tree import run_tree

log = logging.getLogger("daz_actors.cli")

CONFIG_ARG = click.argument(
    "config_file", required=False, type=click.Path(dir_okay=False, path_type=Path)
)


def _load(config_file: Path | None) -> Config:
    try:
        return load_config(config_file, default_kinds())
    except ConfigError as exc:
        source = str(config_file) if config_file else "the default config"
        raise click.ClickException(f"invalid config ({source}): {exc}") from None


@click.group()
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """daz-actors: a CyTube bot runtime of supervised actors with a durable retry queue."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


@main.group()
def config() -> None:
    """Check configuration files."""


@config.command("check")
@CONFIG_ARG
def config_check(config_file: Path | None) -> None:
    """Validate CONFIG_FILE (default: the shipped config) and say what it holds."""
    cfg = _load(config_file)
    click.echo(
        f"{cfg.source}: OK ({len(cfg.supervisors)} supervisors, {len(cfg.actors)} actors, "
        f"{len(cfg.retry_policies)} retry policies)"
    )


@main.command()
@CONFIG_ARG
def tree(config_file: Path | None) -> None:
    """Print the supervision tree of CONFIG_FILE with each node's policy."""
    click.echo(format_tree(_load(config_file)))


@main.command()
@CONFIG_ARG
def run(config_file: Path | None) -> None:
    """Run the tree of CONFIG_FILE until SIGINT/SIGTERM (then shut down in order)."""
    cfg = _load(config_file)
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    registry, bus = Registry(), EventBus()
    root = build_tree(cfg, default_kinds(), registry=registry, bus=bus)

    async def main_task() -> None:
        log.info("starting tree %r from %s", cfg.root, cfg.source)
        await run_tree(root, handle_signals=True)
        log.info("stopped in order")

    try:
        trio.run(main_task)
    except SupervisorGaveUp as exc:
        log.critical("the root supervisor gave up: %s (cause: %r)", exc, exc.__cause__)
        sys.exit(1)


main.add_command(migrate_command)
