"""Which database ``migrate`` and ``queue ...`` use: the same one ``run`` would.

Every such command takes ``--config FILE`` (the file ``run`` takes), ``--database-url`` and
``--data-dir``. The URL is the first of ``--database-url``, ``$DAZ_DATABASE_URL`` and the
config's ``[database] url``; without one, the embedded server in the data directory is
used, the first of ``--data-dir``, ``$DAZ_DATA_DIR`` and the config's ``data_dir`` (else the
user data directory). The choice and where it came from go to stderr, password redacted.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import attrs
import click

from daz_actors.app.cli_config import config_option, load_cli_config
from daz_actors.storage.embedded_pg import (
    DATA_DIR_ENV,
    DATABASE_URL_ENV,
    ResolvedDatabase,
    default_data_dir,
    open_database,
)

__all__ = [
    "DatabaseChoice",
    "choose_database",
    "current_choice",
    "database_options",
    "open_cli_database",
]

F = TypeVar("F", bound=Callable[..., Any])

_META_KEY = "daz_actors.database_options"


@attrs.frozen(kw_only=True)
class DatabaseChoice:
    """The database a command will use, before it is opened."""

    url: str | None = attrs.field(repr=False)  # None: the embedded server in `data_dir`
    data_dir: Path
    origin: str  # where the choice came from, for the `database:` line
    config_file: Path | None  # the --config given, to repeat in advice

    def command(self, name: str) -> str:
        """``daz-actors NAME`` with the options that pick this same database."""
        if self.config_file is not None:
            return f"daz-actors {name} --config {self.config_file}"
        return f"daz-actors {name}"


def choose_database(
    config_file: Path | None, database_url: str | None, data_dir: Path | None
) -> DatabaseChoice:
    """The database of `config_file` (as ``run`` would pick it), overridden by the options."""
    config = load_cli_config(config_file)
    named = f" in {config_file}" if config_file is not None else " in the default config"
    env_url = os.environ.get(DATABASE_URL_ENV)
    if database_url:
        url, origin = database_url, "from --database-url"
    elif env_url:
        url, origin = env_url, f"from ${DATABASE_URL_ENV}"
    elif config.database.url:
        url, origin = config.database.url, f"from [database] url{named}"
    else:
        url = None
        if data_dir is not None:
            where = "--data-dir"
        elif os.environ.get(DATA_DIR_ENV):
            where = f"${DATA_DIR_ENV}"
        elif config.data_dir != default_data_dir():
            where = f"data_dir{named}"
        else:
            where = "the default data directory"
        data_dir = data_dir or config.data_dir
        origin = f"embedded in {data_dir}, from {where}"
    return DatabaseChoice(
        url=url, data_dir=data_dir or config.data_dir, origin=origin, config_file=config_file
    )


def _store(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta.setdefault(_META_KEY, {})[param.name] = value
    return value


def database_options(fn: F) -> F:
    """``--config``, ``--database-url`` and ``--data-dir``; read by `open_cli_database`."""
    fn = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        expose_value=False,
        callback=_store,
        help=f"Data directory of the embedded server [default: ${DATA_DIR_ENV}, else the "
        "config's data_dir, else $XDG_DATA_HOME/daz-actors or ~/.local/share/daz-actors].",
    )(fn)
    fn = click.option(
        "--database-url",
        default=None,
        expose_value=False,
        callback=_store,
        help=f"PostgreSQL URL [default: ${DATABASE_URL_ENV}, else the config's [database] url; "
        "with neither, the embedded server in the data directory].",
    )(fn)
    return config_option(expose_value=False, callback=_store)(fn)


def current_choice() -> DatabaseChoice:
    """The database chosen by the options of the command being run."""
    given = click.get_current_context().meta.get(_META_KEY, {})
    return choose_database(
        given.get("config_file"), given.get("database_url"), given.get("data_dir")
    )


@contextlib.contextmanager
def open_cli_database(choice: DatabaseChoice) -> Iterator[ResolvedDatabase]:
    """Open `choice` (starting the embedded server if needed) and say which it is on stderr."""
    with open_database(choice.url, data_dir=choice.data_dir, env={}) as db:
        click.echo(f"database: {db.redacted} ({choice.origin})", err=True)
        yield db
