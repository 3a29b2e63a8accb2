"""The config file as the commands take it: ``run CONFIG``, ``queue ... --config CONFIG``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from daz_actors.runtime.errors import ConfigError

if TYPE_CHECKING:  # the kinds and the config are imported when a config is loaded
    from daz_actors.app.config import Config

__all__ = ["CONFIG_ARG", "config_option", "load_cli_config"]

F = TypeVar("F", bound=Callable[..., Any])

_PATH = click.Path(dir_okay=False, path_type=Path)

# `run`, `tree`, `config check`: the config file is their one argument
CONFIG_ARG = click.argument("config_file", required=False, type=_PATH)


def config_option(**extra: Any) -> Callable[[F], F]:
    """``--config FILE``: the file ``run`` takes, as an option of ``migrate`` and ``queue``
    (their arguments are ids); `extra` goes to `click.option`."""
    return click.option(
        "--config",
        "config_file",
        type=_PATH,
        default=None,
        help="The config file `run` uses: its data_dir and [database] url choose the "
        "database [default: the shipped config].",
        **extra,
    )


def load_cli_config(config_file: Path | None) -> Config:
    """The validated config of `config_file` (the shipped one without it), or exit 1 naming
    the file and the key that is wrong."""
    try:
        from daz_actors.app.builtin_kinds import default_kinds
        from daz_actors.app.config import load_config

        return load_config(config_file, default_kinds())
    except ConfigError as exc:
        source = str(config_file) if config_file else "the default config"
        raise click.ClickException(f"invalid config ({source}): {exc}") from None
