"""The circuit breaker's state machine and the error classifier, driven directly."""

from __future__ import annotations

import asyncpg
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from daz_actors import ActorCrashed
from daz_actors.runtime.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from daz_actors.storage.error_classes import ErrorClassifier


def breaker(**kw: object) -> CircuitBreaker:
    policy = {"window": 10, "min_calls": 4, "failure_ratio": 0.5, "open_seconds": 5.0, **kw}
    return CircuitBreaker(BreakerPolicy(**policy))  # type: ignore[arg-type]


def test_opens_only_after_min_calls_at_the_failure_ratio():
    """Failures below min_calls never open it; at the ratio with enough calls it opens."""
    b = breaker()
    for _ in range(3):
        assert b.allow(0)
        b.record_failure(0)
    assert b.state is BreakerState.CLOSED
    assert b.allow(0)
    b.record_failure(0)
    assert b.state is BreakerState.OPEN
    assert not b.allow(1)
    assert b.retry_after(1) == pytest.approx(4)


def test_successes_keep_the_ratio_below_the_threshold():
    """One failure in four calls stays under a 0.5 ratio."""
    b = breaker()
    for ok in (True, True, False, True, True, False, True):
        b.allow(0)
        (b.record_success if ok else b.record_failure)(0)
    assert b.state is BreakerState.CLOSED
    assert b.failure_ratio() == pytest.approx(2 / 7)


def test_half_open_lets_one_probe_and_closes_on_success():
    """After open_seconds one probe passes; a success closes the breaker."""
    b = breaker(min_calls=1, failure_ratio=1.0)
    b.allow(0)
    b.record_failure(0)
    assert b.state is BreakerState.OPEN
    assert b.allow(5)
    assert b.state is BreakerState.HALF_OPEN
    assert not b.allow(5), "only one probe at a time"
    b.record_success(5)
    assert b.state is BreakerState.CLOSED
    assert b.allow(5)
    assert b.transitions == 3


def test_failed_probe_opens_again_for_a_full_period():
    """A failed probe re-opens the breaker from the probe's time."""
    b = breaker(min_calls=1, failure_ratio=1.0)
    b.allow(0)
    b.record_failure(0)
    assert b.allow(6)
    b.record_failure(6)
    assert b.state is BreakerState.OPEN
    assert not b.allow(10)
    assert b.allow(11)


def test_cancelled_probe_frees_the_probe_slot():
    """A probe that ends without an outcome lets the next call probe."""
    b = breaker(min_calls=1, failure_ratio=1.0)
    b.allow(0)
    b.record_failure(0)
    assert b.allow(5)
    b.record_cancelled()
    assert b.allow(5)


@given(st.lists(st.booleans(), max_size=200))
def test_never_opens_below_min_calls_and_state_is_consistent(outcomes):
    """Whatever the outcomes, a closed breaker's window never holds a ratio at the threshold
    with min_calls or more outcomes."""
    b = breaker()
    for ok in outcomes:
        if b.allow(0):
            (b.record_success if ok else b.record_failure)(0)
        if b.state is BreakerState.CLOSED:
            window = b._outcomes
            assert not (len(window) >= 4 and window.count(False) / len(window) >= 0.5)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"window": 0}, "window"),
        ({"min_calls": 0}, "min_calls"),
        ({"failure_ratio": 0}, "failure_ratio"),
        ({"failure_ratio": 1.5}, "failure_ratio"),
        ({"open_seconds": 0}, "open_seconds"),
    ],
)
def test_bad_breaker_policies_are_refused(kw, message):
    """Each invalid breaker setting is refused with its name."""
    with pytest.raises(ValueError, match=message):
        BreakerPolicy(**kw)


@pytest.mark.parametrize(
    ("error", "retryable", "code"),
    [
        (asyncpg.SerializationError("x"), True, "40001"),
        (asyncpg.DeadlockDetectedError("x"), True, "40P01"),
        (asyncpg.TooManyConnectionsError("x"), True, "53300"),
        (asyncpg.AdminShutdownError("x"), True, "57P01"),
        (asyncpg.PostgresSyntaxError("x"), False, "42601"),
        (asyncpg.UniqueViolationError("x"), False, "23505"),
        (asyncpg.ConnectionDoesNotExistError("x"), True, "08003"),
        (ConnectionRefusedError("refused"), True, "ConnectionRefusedError"),
        (trio.TooSlowError(), True, "TooSlowError"),
        (ActorCrashed("the gateway crashed"), True, "ActorCrashed"),
        (ValueError("bad data"), False, "ValueError"),
    ],
)
def test_default_classification(error, retryable, code):
    """SQLSTATE classes and connection errors are retryable; syntax and constraints are not."""
    verdict = ErrorClassifier().classify(error)
    assert (verdict.retryable, verdict.code) == (retryable, code)


def test_classification_is_configurable_by_code_type_and_pattern():
    """Permanent rules win over retryable ones; patterns match the message."""
    classifier = ErrorClassifier(
        permanent_codes=("40P01",),
        retryable_patterns=(r"try again",),
        permanent_types=("ConnectionRefusedError",),
    )
    assert not classifier.classify(asyncpg.DeadlockDetectedError("x")).retryable
    assert classifier.classify(ValueError("please try again")).retryable
    assert not classifier.classify(ConnectionRefusedError("no")).retryable
    with pytest.raises(ValueError, match="invalid error pattern"):
        ErrorClassifier(retryable_patterns=("(",))
