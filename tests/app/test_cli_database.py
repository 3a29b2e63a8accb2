"""``queue`` and ``migrate`` use the database ``run`` would: its config file, bounded input,
and a clear word when the schema is missing (real PostgreSQL, real embedded servers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from daz_actors.app.cli import main
from daz_actors.app.config import default_config_text
from daz_actors.storage.migrations import load_migrations, migrate
from tests.app.test_cli_queue import populate


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No database or data directory from the environment; the user data dir is a
    temporary one (the commands must not reach for it when the config names another)."""
    monkeypatch.delenv("DAZ_DATABASE_URL", raising=False)
    monkeypatch.delenv("DAZ_DATA_DIR", raising=False)
    user_data = tmp_path / "user-data"
    monkeypatch.setenv("XDG_DATA_HOME", str(user_data))
    return user_data


def invoke(*args: str) -> Result:
    """Run ``daz-actors ARGS``."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def command(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``daz-actors ARGS`` as a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "daz_actors.app.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def config_file(tmp_path: Path, *, url: str | None = None, data_dir: Path | None = None) -> Path:
    """The shipped config with `data_dir` and ``[database] url`` set."""
    top = f'data_dir = "{data_dir}"\n' if data_dir else ""
    database = f'\n[database]\nurl = "{url}"\n' if url else ""
    path = tmp_path / "bot.toml"
    path.write_text(top + default_config_text() + database, encoding="utf-8")
    return path


# --- usage errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("list", "--limit", "99999999999999999999"), "--limit"),
        (("dead-letters", "--limit", "100001"), "--limit"),
        (("cleanup", "--retention-days", "1e308"), "--retention-days"),
        (("cleanup", "--retention-days", "inf"), "--retention-days"),
        (("cleanup", "--retention-days", "nan"), "--retention-days"),
        (("cleanup", "--retention-days", "seven"), "--retention-days"),
        (("cleanup", "--dead-letter-retention-days", "1e308"), "--dead-letter-retention-days"),
        (("requeue", "--all-dead", "--older-than", "99999999d"), "--older-than"),
        (("purge", "--status", "completed", "--older-than", "36501d", "-y"), "--older-than"),
    ],
)
def test_absurd_numbers_are_usage_errors_that_name_the_option(
    pg: Any, args: tuple[str, ...], option: str
) -> None:
    """Exit 2 naming the option and its bounds, before any database is opened."""
    result = invoke("queue", *args, "--database-url", pg.dsn)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.stderr
    assert "database:" not in result.stderr  # refused before reaching the database
    assert "Traceback" not in result.output


def test_the_bounds_themselves_are_accepted(pg: Any) -> None:
    """100 years and 100000 items are still fine."""
    for args in (
        ("cleanup", "--retention-days", "36500", "--dead-letter-retention-days", "36500"),
        ("requeue", "--all-dead", "--older-than", "36500d"),
        ("list", "--limit", "100000"),
    ):
        result = invoke("queue", *args, "--database-url", pg.dsn)
        assert result.exit_code == 0, (args, result.output)


# --- a database without the schema -------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("requeue", "1"),
        ("cleanup",),
        ("stats",),
        ("list",),
        ("show", "1"),
        ("alerts",),
        ("purge", "--status", "completed", "--older-than", "1d", "-y"),
    ],
)
def test_a_database_without_the_schema_says_to_migrate(pg_empty: Any, args: tuple[str, ...]):
    """Exit 1 with one line that says what to run, no raw driver error; nothing is created."""
    result = invoke("queue", *args, "--database-url", pg_empty.dsn)
    assert result.exit_code == 1, result.output
    assert "has no retry queue (no migration applied): run `daz-actors migrate` first" in (
        result.stderr
    )
    assert "HINT" not in result.output
    assert "does not exist" not in result.output

    async def tables(conn: Any) -> list[str]:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
        return [row["tablename"] for row in rows]

    assert pg_empty.run(tables) == []  # the queue commands never touch the schema


def test_a_database_behind_on_migrations_says_so(pg_empty: Any) -> None:
    """Some migrations applied, not all: the version it is at, and what to run."""
    first = load_migrations()[0].version
    pg_empty.run(lambda conn: migrate(conn, to=first))
    result = invoke("queue", "stats", "--database-url", pg_empty.dsn)
    assert result.exit_code == 1
    assert f"is at schema version {first}, and" in result.stderr
    assert "run `daz-actors migrate` first" in result.stderr


# --- the config file ---------------------------------------------------------------------


def test_queue_uses_the_database_of_the_config_file(pg: Any, tmp_path: Path) -> None:
    """``--config FILE`` picks FILE's [database] url, and says so."""
    pg.run(populate)
    path = config_file(tmp_path, url=pg.dsn)
    result = invoke("queue", "stats", "--json", "--config", str(path))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total"] == 5
    assert f"from [database] url in {path})" in result.stderr


def test_an_unmigrated_database_of_a_config_file_names_the_config_to_migrate(
    pg_empty: Any, tmp_path: Path
) -> None:
    """The advice repeats --config, so it migrates that same database."""
    path = config_file(tmp_path, url=pg_empty.dsn)
    result = invoke("queue", "cleanup", "--config", str(path))
    assert result.exit_code == 1
    assert f"run `daz-actors migrate --config {path}` first" in result.stderr
    assert invoke("migrate", "--config", str(path)).exit_code == 0
    again = invoke("queue", "cleanup", "--config", str(path))
    assert again.exit_code == 0, again.output


def test_database_url_option_wins_over_the_config_file(pg: Any, tmp_path: Path) -> None:
    """--database-url overrides the file, as $DAZ_DATABASE_URL does for `run`."""
    path = config_file(tmp_path, url="postgresql://nobody@127.0.0.1:1/nothing")
    result = invoke("queue", "stats", "--config", str(path), "--database-url", pg.dsn)
    assert result.exit_code == 0, result.output
    assert "(from --database-url)" in result.stderr


def test_a_bad_config_file_is_refused_naming_it(tmp_path: Path) -> None:
    """An invalid --config stops before any database is opened."""
    path = tmp_path / "bad.toml"
    path.write_text("[tree]\nroot = 3\n", encoding="utf-8")
    result = invoke("queue", "stats", "--config", str(path))
    assert result.exit_code == 1
    assert f"invalid config ({path}): tree.root" in result.stderr
    assert "database:" not in result.stderr


def test_migrate_and_queue_use_the_data_dir_of_the_config_file(
    tmp_path: Path, isolated: Path
) -> None:
    """The embedded server lives in the config's data_dir, never the user data directory."""
    data_dir = tmp_path / "bot-data"
    path = config_file(tmp_path, data_dir=data_dir)
    migrated = command("migrate", "--config", str(path))  # a process each, as an operator's
    assert migrated.returncode == 0, migrated.stderr
    assert f"embedded in {data_dir}, from data_dir in {path})" in migrated.stderr
    assert (data_dir / "pg" / "PG_VERSION").is_file()
    stats = command("queue", "stats", "--config", str(path))
    assert stats.returncode == 0, stats.stderr
    assert stats.stdout == "the queue is empty\n"
    assert f"embedded in {data_dir}," in stats.stderr
    assert not isolated.exists()  # ~/.local/share/daz-actors (here: XDG_DATA_HOME) untouched
