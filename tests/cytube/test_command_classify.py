"""How a command's exception is classified for the retry queue (`cytube.router.classify`)."""

from __future__ import annotations

import trio

from daz_actors import ActorCrashed, ActorStopped, DatabaseUnavailable
from daz_actors.cytube.router import classify


class Flaky(Exception):
    retryable = True
    code = "upstream_busy"


class Broken(Exception):
    retryable = False


class NotABool(Exception):
    retryable = "yes"  # not a bool: ignored


def test_known_transient_errors_are_retryable():
    assert classify(DatabaseUnavailable("down")) == (True, "database_unavailable")
    assert classify(trio.TooSlowError()) == (True, "timeout")
    assert classify(ActorStopped("x")) == (True, "ActorStopped")
    assert classify(ActorCrashed("the gateway died")) == (True, "ActorCrashed")


def test_a_commands_own_error_says_whether_it_is_retryable():
    assert classify(Flaky()) == (True, "upstream_busy")
    assert classify(Broken()) == (False, "Broken")


def test_anything_else_is_a_permanent_bug():
    assert classify(ZeroDivisionError()) == (False, "ZeroDivisionError")
    assert classify(NotABool()) == (False, "NotABool")
