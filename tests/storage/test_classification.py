"""The one classification of errors (`storage.error_classes`): the SQL gateway, the event
router's commands, the retry capture and the retry workers all ask it, so an error gets
the same verdict wherever it is raised."""

from __future__ import annotations

import asyncpg
import trio

from daz_actors import (
    ActorCrashed,
    ActorStopped,
    AskTimeout,
    CircuitOpen,
    DatabaseUnavailable,
    NoSuchActor,
    SqlError,
)
from daz_actors.retry.handlers import PermanentError
from daz_actors.storage.error_classes import DEFAULT_CLASSIFIER, ErrorRules


class Flaky(Exception):
    retryable = True
    code = "upstream_busy"


class Broken(Exception):
    retryable = False


class NotABool(Exception):
    retryable = "yes"  # not a bool: ignored


def verdict(exc: BaseException) -> tuple[bool, str | None]:
    v = DEFAULT_CLASSIFIER.classify(exc)
    return v.retryable, v.code


def test_the_runtimes_transient_errors_are_retryable() -> None:
    """An actor that is gone, restarting or slow answers later: every caller retries."""
    assert verdict(ActorStopped("x")) == (True, "ActorStopped")
    assert verdict(ActorCrashed("the gateway died")) == (True, "ActorCrashed")
    assert verdict(NoSuchActor("no room")) == (True, "NoSuchActor")
    assert verdict(AskTimeout("no answer")) == (True, "AskTimeout")
    assert verdict(trio.TooSlowError()) == (True, "TooSlowError")


def test_database_errors_by_sqlstate_and_by_their_own_verdict() -> None:
    """SQLSTATE classes decide for the driver's errors; the gateway's errors carry theirs."""
    assert verdict(asyncpg.SerializationError("conflict")) == (True, "40001")
    assert verdict(asyncpg.DeadlockDetectedError("deadlock")) == (True, "40P01")
    assert verdict(asyncpg.UniqueViolationError("dup")) == (False, "23505")
    assert verdict(DatabaseUnavailable("down")) == (True, "database_unavailable")
    assert verdict(CircuitOpen("open", retry_after=1.0)) == (True, "circuit_open")
    assert verdict(SqlError("bad", retryable=False, code="42601")) == (False, "42601")


def test_an_errors_own_flag_is_believed() -> None:
    """A command's or handler's own error says whether it is retryable (a bool only)."""
    assert verdict(Flaky()) == (True, "upstream_busy")
    assert verdict(Broken()) == (False, "Broken")
    assert verdict(PermanentError("never")) == (False, "permanent")
    assert verdict(NotABool()) == (False, "NotABool")


def test_anything_else_is_a_permanent_bug() -> None:
    assert verdict(ZeroDivisionError()) == (False, "ZeroDivisionError")
    assert verdict(KeyError("x")) == (False, "KeyError")


def test_configured_rules_come_before_and_after_the_errors_own_flag() -> None:
    """Permanent rules from the config win over everything; retryable rules only decide
    what nothing else did."""
    rules = ErrorRules(permanent_patterns=("quota",), retryable_patterns=("try later",))
    classifier = rules.classifier()
    assert classifier.classify(Flaky("quota exceeded")).retryable is False
    assert classifier.classify(Broken("try later")).retryable is False  # its own flag
    assert classifier.classify(RuntimeError("try later")).retryable is True
    assert classifier.classify(ActorStopped("quota")).retryable is False
