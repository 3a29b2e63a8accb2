"""Fixtures of the retry tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own data directory (where the retry spool lives)."""
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"
