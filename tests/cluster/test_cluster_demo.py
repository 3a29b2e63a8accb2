"""`daz-actors demo --nodes N` runs its course and its invariants hold."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from daz_actors.app.demo_cluster import run_cluster_demo


def test_the_cluster_demo_passes_with_two_nodes(tmp_path: Path):
    """Two nodes, a SIGKILL and a SIGTERM: every invariant reported, all held, exit 0."""
    out = io.StringIO()
    assert run_cluster_demo(2, 10.0, tmp_path / "work", out) == 0, out.getvalue()
    text = out.getvalue()
    for name in (
        "failover within the TTL",
        "handover on SIGTERM",
        "every channel joined exactly once",
        "never two bot sessions in one channel",
        "every line stored once",
    ):
        assert f"ok   {name}" in text, text
    assert "every invariant held" in text


@pytest.mark.parametrize("nodes", ["1", "7"])
def test_the_cluster_demo_refuses_a_node_count_out_of_range(nodes: str):
    """`--nodes` outside 2-6 is refused naming the option, before anything starts."""
    result = subprocess.run(
        [sys.executable, "-m", "daz_actors.app.cli", "demo", "--nodes", nodes],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--nodes" in result.stderr
    assert "between 2 and 6" in result.stderr
