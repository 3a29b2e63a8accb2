"""`daz-actors migrate` with plugins (each its own sequence, rolled back alone) and
`daz-actors plugins` (installed, enabled, migration state), against a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from daz_actors.app.cli import main


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DAZ_DATABASE_URL", raising=False)
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path / "data"))


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def tables(pg: Any) -> set[str]:
    async def fetch(conn: Any) -> set[str]:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE tablename IN"
            " ('daz_tells', 'daz_reminders', 'hello_greetings')"
        )
        return {r["tablename"] for r in rows}

    return pg.run(fetch)


def test_migrate_applies_the_enabled_plugins_and_rolls_one_back_alone(pg, tmp_path):
    """The shipped config enables tell and remind (not the example): `migrate` applies
    theirs after the core's; `--plugin tell --rollback 0` removes tell's table only; the
    core cannot be rolled back below 0011 while a plugin has migrations applied."""
    url = pg.dsn
    result = invoke("migrate", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert "applied plugin remind: 0001_reminders.up.sql" in result.output
    assert "applied plugin tell: 0001_tells.up.sql" in result.output
    assert tables(pg) == {"daz_tells", "daz_reminders"}
    assert "nothing to apply" in invoke("migrate", "--database-url", url).output

    listing = invoke("plugins", "--database-url", url)
    assert listing.exit_code == 0, listing.output
    lines = listing.output.splitlines()
    hello = lines.index(next(line for line in lines if line.startswith("hello 0.1.0")))
    assert lines[hello + 1 : hello + 3] == [
        "  disabled",
        "  migrations: version 0, 0 applied, 1 pending",
    ]
    tell = lines.index(next(line for line in lines if line.startswith("tell 0.1.0 (daz-actors)")))
    assert lines[tell + 1 : tell + 4] == [
        "  enabled (every channel)",
        "  commands: !tell; actors: watcher",
        "  migrations: version 1, 1 applied, 0 pending",
    ]

    rolled = invoke("migrate", "--database-url", url, "--plugin", "tell", "--rollback", "0")
    assert rolled.exit_code == 0, rolled.output
    assert "rolled back plugin tell: 0001_tells.down.sql" in rolled.output
    assert tables(pg) == {"daz_reminders"}
    status = invoke("migrate", "--database-url", url, "--plugin", "tell", "--status")
    assert "pending  0001 tells" in status.output

    refused = CliRunner().invoke(main, ["migrate", "--database-url", url, "--rollback", "8"])
    assert refused.exit_code == 1
    assert "plugins still have migrations applied: remind" in refused.output

    # the example plugin, on its own: applied, then rolled back, the others untouched
    applied = invoke("migrate", "--database-url", url, "--plugin", "hello")
    assert "applied plugin hello: 0001_greetings.up.sql" in applied.output
    assert tables(pg) == {"daz_reminders", "hello_greetings"}
    unknown = CliRunner().invoke(main, ["migrate", "--database-url", url, "--plugin", "nope"])
    assert unknown.exit_code == 2
    assert "no installed plugin 'nope'" in unknown.output
