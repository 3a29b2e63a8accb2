"""Classifying errors as retryable or permanent: the one classification of the project.

The SQL gateway, the event router (commands), the retry capture and the retry workers all
ask an `ErrorClassifier`; none decides on its own. In order:

1. the configured permanent rules (SQLSTATE, message pattern, exception type) win;
2. an exception that says so itself (a boolean ``retryable`` attribute, with an optional
   ``code``: `SqlError`, a handler's `PermanentError`, a command's own error) is believed;
3. the retryable rules: connection lost, timeouts, serialization failure 40001, deadlock
   40P01, classes 08 (connection), 53 (resources), 57P0x (operator intervention), a
   websocket closed, and the runtime's "the actor asked is gone or restarting" errors;
4. anything else is permanent, so that nothing loops forever on a bug.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs

__all__ = ["DEFAULT_CLASSIFIER", "Classification", "ErrorClassifier", "ErrorRules"]

DEFAULT_RETRYABLE_CODES = ("40001", "40P01", "08*", "53*", "57P0*", "55P03")
DEFAULT_RETRYABLE_TYPES = (
    "OSError",
    "ConnectionError",
    "TimeoutError",
    "TooSlowError",
    "ConnectionDoesNotExistError",
    "ConnectionFailureError",
    "InterfaceError",
    "InternalClientError",  # asyncpg's protocol state broken by a cut connection: a new one
    "CannotConnectNowError",
    "ConnectionClosed",
    "HandshakeError",
    "DatabaseUnavailable",
    "CircuitOpen",
    "SendFailed",
    "ActorCrashed",  # the actor asked (e.g. the gateway) crashed: its restart answers later
    "ActorStopped",  # ... was stopping or restarting with its group
    "NoSuchActor",  # ... is not registered right now (its subtree is restarting)
)


@attrs.frozen(kw_only=True)
class Classification:
    """The verdict on one error."""

    retryable: bool  # may succeed later as it is
    code: str | None  # SQLSTATE or the error type's name
    reason: str  # which rule decided


def _code_matches(code: str, pattern: str) -> bool:
    return code.startswith(pattern[:-1]) if pattern.endswith("*") else code == pattern


def _type_names(exc: BaseException) -> list[str]:
    return [cls.__name__ for cls in type(exc).__mro__]


@attrs.frozen(kw_only=True)
class ErrorClassifier:
    """Rules, checked in order: permanent lists first, then retryable ones."""

    retryable_codes: Sequence[str] = DEFAULT_RETRYABLE_CODES  # SQLSTATEs, "08*" = class
    permanent_codes: Sequence[str] = ()  # win over retryable_codes
    retryable_types: Sequence[str] = DEFAULT_RETRYABLE_TYPES  # exception class names (MRO)
    permanent_types: Sequence[str] = ()
    retryable_patterns: Sequence[str] = ()  # regexes searched in the message
    permanent_patterns: Sequence[str] = ()

    def __attrs_post_init__(self) -> None:
        for pattern in (*self.retryable_patterns, *self.permanent_patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid error pattern {pattern!r}: {exc}") from None

    def classify(self, exc: BaseException) -> Classification:
        """Decide whether `exc` is worth retrying (see the module's docstring for the order)."""
        sqlstate = getattr(exc, "sqlstate", None)
        code = sqlstate if isinstance(sqlstate, str) else None
        own_code = getattr(exc, "code", None)
        message = str(exc)
        names = _type_names(exc)
        label = own_code if isinstance(own_code, str) and own_code else code or names[0]
        if code is not None:
            for pattern in self.permanent_codes:
                if _code_matches(code, pattern):
                    return Classification(retryable=False, code=code, reason=f"code {pattern}")
        for pattern in self.permanent_patterns:
            if re.search(pattern, message):
                return Classification(retryable=False, code=label, reason=f"message /{pattern}/")
        for name in self.permanent_types:
            if name in names:
                return Classification(retryable=False, code=label, reason=f"type {name}")
        own = getattr(exc, "retryable", None)
        if isinstance(own, bool):
            return Classification(retryable=own, code=label, reason="the error says so")
        if code is not None:
            for pattern in self.retryable_codes:
                if _code_matches(code, pattern):
                    return Classification(retryable=True, code=code, reason=f"code {pattern}")
        for pattern in self.retryable_patterns:
            if re.search(pattern, message):
                return Classification(retryable=True, code=label, reason=f"message /{pattern}/")
        for name in self.retryable_types:
            if name in names:
                return Classification(retryable=True, code=label, reason=f"type {name}")
        return Classification(retryable=False, code=label, reason="no rule: permanent")


@attrs.frozen(kw_only=True)
class ErrorRules:
    """Configurable classification rules; actor params that classify errors derive from it."""

    retryable_codes: tuple[str, ...] = DEFAULT_RETRYABLE_CODES  # SQLSTATEs, "08*" = a class
    permanent_codes: tuple[str, ...] = ()  # permanent rules win over retryable ones
    retryable_types: tuple[str, ...] = DEFAULT_RETRYABLE_TYPES  # exception class names
    permanent_types: tuple[str, ...] = ()
    retryable_patterns: tuple[str, ...] = ()  # regexes searched in error messages
    permanent_patterns: tuple[str, ...] = ()

    def classifier(self) -> ErrorClassifier:
        """The classifier these rules describe (raises ValueError for a bad regex)."""
        return ErrorClassifier(
            retryable_codes=self.retryable_codes,
            permanent_codes=self.permanent_codes,
            retryable_types=self.retryable_types,
            permanent_types=self.permanent_types,
            retryable_patterns=self.retryable_patterns,
            permanent_patterns=self.permanent_patterns,
        )


DEFAULT_CLASSIFIER = ErrorClassifier()  # the default rules, for callers with no configured ones
