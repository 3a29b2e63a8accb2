"""Repeated warnings of one kind become one line per interval with a count (issue 13, 13)."""

from __future__ import annotations

import logging

import pytest

from daz_actors.runtime.log_summary import MAX_KINDS, RepeatedWarnings


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


def test_the_table_of_kinds_is_bounded_the_oldest_forgotten_first(
    caplog: pytest.LogCaptureFixture,
):
    """More kinds than MAX_KINDS (an error code per item, say): the table stays at
    MAX_KINDS; the newest kinds are still summarised, the oldest logged afresh."""
    now = [0.0]
    warnings = RepeatedWarnings(logging.getLogger("test.bound"), clock=lambda: now[0])
    for n in range(MAX_KINDS * 3):
        now[0] += 0.001
        warnings.warning(f"kind {n}", "message %d", n)
    assert len(warnings) == MAX_KINDS
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="test.bound"):
        warnings.warning(f"kind {MAX_KINDS * 3 - 1}", "newest again")
        warnings.warning("kind 0", "oldest again")
    levels = {r.getMessage(): r.levelno for r in caplog.records}
    assert levels == {"newest again": logging.DEBUG, "oldest again": logging.WARNING}
    assert len(warnings) == MAX_KINDS


def test_the_count_of_a_burst_is_logged_once_it_is_over_not_with_the_next_one(
    caplog: pytest.LogCaptureFixture,
):
    """An outage's suppressed warnings are counted in a line of their own once the
    interval has passed with no WARNING of their kind, and the kind is forgotten: the next
    outage's first warning is logged afresh, with no count of the old one."""
    now = [0.0]
    warnings = RepeatedWarnings(
        logging.getLogger("test.flush"), interval=10.0, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="test.flush"):
        for n in range(20):  # the outage: one WARNING, 19 counted
            now[0] += 0.1
            warnings.warning("spooling", "spooling e%d", n)
        warnings.warning("quiet", "one of another kind")
        assert warnings.flush_due() == 0  # within the interval: not due yet
        now[0] = 10.2  # 10 s after the outage's WARNING (at 0.1); "quiet" had none suppressed
        assert warnings.flush_due() == 1
        assert warnings.flush_due() == 0  # once only
        now[0] = 100.0
        warnings.warning("spooling", "spooling e%d", 100)  # the next outage
    assert [r.getMessage() for r in caplog.records] == [
        "spooling e0",
        "one of another kind",
        "spooling: 19 more like this in the last 10 s",
        "spooling e100",
    ]
    assert len(warnings) == 2  # "quiet" (nothing to report) and the new "spooling"
