"""Repeated warnings of one kind become one line per interval with a count (issue 13, 13)."""

from __future__ import annotations

import logging

import pytest

from daz_actors.runtime.log_summary import RepeatedWarnings


def test_a_burst_of_one_kind_logs_one_warning_then_a_count(caplog: pytest.LogCaptureFixture):
    now = [100.0]
    log = logging.getLogger("test.summary")
    warnings = RepeatedWarnings(log, interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="test.summary"):
        for n in range(50):
            warnings.warning("db.down", "spooling %s", f"e{n}")
            warnings.warning("other", "other %d", n)
        now[0] += 10.0
        warnings.warning("db.down", "spooling %s", "e50")
    at = {level: [r.getMessage() for r in caplog.records if r.levelno == level]
          for level in (logging.WARNING, logging.DEBUG)}  # fmt: skip
    assert at[logging.WARNING] == [
        "spooling e0",
        "other 0",
        "spooling e50 (49 more like this in the last 10 s)",
    ]
    assert len(at[logging.DEBUG]) == 98  # every item's detail, at DEBUG
    assert "spooling e1" in at[logging.DEBUG]
