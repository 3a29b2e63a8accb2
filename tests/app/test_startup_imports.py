"""`daz-actors --help` and `config check` import no driver, actor or chat stack (issue 15:
they answer in under 0.3 s; `python -m bench.startup` measures the time, this checks what
keeps it short)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "asyncio",
    "asyncpg",
    "trio",
    "trio_asyncio",
    "trio_websocket",
    "httpx",
    "prometheus_client",
    "daz_actors.cytube.connection",
    "daz_actors.cytube.router",
    "daz_actors.ops.health",
    "daz_actors.retry.kind",
    "daz_actors.storage.queue",
    "daz_actors.storage.sql_gateway",
    # the web stack of the HTTP endpoints and the dashboard (about 0.2 s)
    "starlette",
    "hypercorn",
    "jinja2",
    "daz_actors.ops.http",
    "daz_actors.ops.dashboard",
)

PROGRAM = """
import json, sys
from daz_actors.app.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


@pytest.mark.parametrize("args", [["--help"], ["config", "check"]])
def test_help_and_config_check_import_nothing_heavy(args):
    """In a fresh interpreter, the command runs and leaves none of the heavy modules
    imported."""
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_the_built_in_kinds_still_build_what_they_did():
    """The light factories of the built-in kinds hand over to the kinds' own factories."""
    from daz_actors.app.builtin_kinds import default_kinds
    from daz_actors.retry.failure_log import FailureLogParams

    kinds = default_kinds()
    assert {"failure-log", "health-monitor", "retry", "rooms", "sql-gateway"} <= set(kinds.names())
    start = kinds.get("failure-log").build(FailureLogParams(), None)  # type: ignore[arg-type]
    assert callable(start)
