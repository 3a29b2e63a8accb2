"""The ``daz-actors config check`` and ``daz-actors tree`` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from daz_actors.app.cli import main

GOOD = """\
[tree]
root = "bot"

[supervisors.bot]
strategy = "one_for_all"
max_restarts = 3
children = ["observers", "failures"]

[supervisors.observers]
strategy = "rest_for_one"
restart = "transient"
children = ["crash-log"]
backoff = { initial = 2, multiplier = 2, max_delay = 300, jitter = "full" }

[actors.failures]
kind = "failure-log"

[actors.crash-log]
kind = "failure-log"
restart = "temporary"
mailbox_size = 10
params = { patterns = ["actor.crashed"] }

[retry_policies.cytube_command]
max_retries = 9
"""


@pytest.fixture(autouse=True)
def _no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands see only the config file, not a URL from the environment."""
    monkeypatch.delenv("DAZ_DATABASE_URL", raising=False)


def invoke(*args: str) -> Result:
    """Run the ``daz-actors`` command line with `args`."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write(tmp_path: Path, text: str, name: str = "bot.toml") -> Path:
    """Write a config file and return its path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_config_check_accepts_a_good_file(tmp_path: Path) -> None:
    """``config check`` on a valid file exits 0 and says what the file holds."""
    path = write(tmp_path, GOOD)
    result = invoke("config", "check", str(path))
    assert result.exit_code == 0, result.output
    assert result.output == f"{path}: OK (2 supervisors, 2 actors, 4 retry policies)\n"


def test_config_check_without_a_file_checks_the_shipped_default() -> None:
    """``config check`` with no file validates the config inside the package."""
    result = invoke("config", "check")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("<default>: OK (2 supervisors, 6 actors, ")


@pytest.mark.parametrize(
    ("change", "key_path", "reason"),
    [
        (
            ('strategy = "one_for_all"', 'strategy = "all_for_one"'),
            "supervisors.bot.strategy",
            "expected one of 'one_for_one', 'one_for_all', 'rest_for_one'",
        ),
        (
            ('kind = "failure-log"\n\n', 'kind = "log-everything"\n\n'),
            "actors.failures.kind",
            "unknown actor kind 'log-everything' "
            "(known: failure-log, health-monitor, plugins, retry, rooms, sql-gateway)",
        ),
        (
            ("max_retries = 9", "max_retries = -9"),
            "retry_policies.cytube_command.max_retries",
            "max_retries must be >= 0",
        ),
        (
            ('params = { patterns = ["actor.crashed"] }', "params = { patterns = [] }"),
            "actors.crash-log.params.patterns",
            "patterns must be a non-empty list",
        ),
        (
            ('children = ["crash-log"]', 'children = ["crash-log", "failures"]'),
            "supervisors.observers.children[1]",
            "duplicate name: 'failures' is already a child of 'bot'",
        ),
        (("max_restarts = 3", "max_restarts = three"), "", "is not valid TOML"),
    ],
)
def test_config_check_rejects_a_bad_file_naming_the_key(
    tmp_path: Path, change: tuple[str, str], key_path: str, reason: str
) -> None:
    """``config check`` on a bad file exits non-zero and prints the key path and the reason."""
    old, new = change
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    result = invoke("config", "check", str(path))
    assert result.exit_code == 1
    assert "OK" not in result.output
    assert f"Error: invalid config ({path}): " in result.output
    assert (f"{key_path}: {reason}" if key_path else reason) in result.output


def test_config_check_reports_a_missing_file(tmp_path: Path) -> None:
    """``config check`` on a path that does not exist fails with a message naming it."""
    missing = tmp_path / "nowhere.toml"
    result = invoke("config", "check", str(missing))
    assert result.exit_code == 1
    assert "cannot read config file" in result.output
    assert "nowhere.toml" in result.output


def test_tree_without_a_file_prints_the_default_tree() -> None:
    """``tree`` with no file prints the shipped tree, each node with its policy."""
    result = invoke("tree")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("daz (supervisor one_for_one, permanent, max 5 restarts in 60 s, ")
    assert "backoff 0.5 s x2 up to 30 s, jitter proportional ±25%" in lines[0]
    assert lines[1].startswith("├── storage (supervisor rest_for_one, permanent, ")
    assert lines[2:] == [
        "│   ├── sql-gateway (actor sql-gateway, permanent, shutdown 10 s, mailbox 1000)",
        "│   └── retry (actor retry, permanent, shutdown 60 s, mailbox 100)",
        "├── plugins (actor plugins, permanent, shutdown 15 s, mailbox 100)",
        "├── rooms (actor rooms, permanent, shutdown 30 s, mailbox 100)",
        "├── health-monitor (actor health-monitor, permanent, shutdown 5 s, mailbox 100)",
        "└── failure-log (actor failure-log, permanent, shutdown 5 s, mailbox 100)",
    ]


def test_tree_with_a_file_prints_that_tree(tmp_path: Path) -> None:
    """``tree FILE`` prints the file's tree: nesting, order and every node's policy."""
    result = invoke("tree", str(write(tmp_path, GOOD)))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "bot (supervisor one_for_all, permanent, max 3 restarts in 60 s, backoff 0.1 s x2 "
        "up to 30 s, jitter proportional ±25%, reset after 30 s, shutdown no limit)",
        "├── observers (supervisor rest_for_one, transient, max 5 restarts in 60 s, backoff "
        "2 s x2 up to 300 s, jitter full, reset after 30 s, shutdown no limit)",
        "│   └── crash-log (actor failure-log, temporary, shutdown 5 s, mailbox 10)",
        "└── failures (actor failure-log, permanent, shutdown 5 s, mailbox 100)",
    ]


def test_tree_with_a_bad_file_fails_with_the_key_path(tmp_path: Path) -> None:
    """``tree`` refuses to print an invalid tree and names what is wrong."""
    path = write(tmp_path, GOOD.replace('children = ["crash-log"]', 'children = ["ghost"]'))
    result = invoke("tree", str(path))
    assert result.exit_code == 1
    assert "├──" not in result.output
    assert "supervisors.observers.children[0]: 'ghost' is not defined" in result.output


def test_help_lists_the_commands() -> None:
    """``--help`` names the config, tree and run commands."""
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("config", "tree", "run"):
        assert command in result.output
