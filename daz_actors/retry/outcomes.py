"""What became of a queued item's attempt, published on the bus so that anything can react
(tell a user their reply could not be delivered, page an operator on a dead letter).

Topics: ``retry.success`` (the item completed), ``retry.failed`` (the attempt failed and
another is scheduled) and ``retry.dead_letter`` (the item gave up: permanent error, or out
of retries). Subscribe with a pattern such as ``retry.*`` or ``retry.dead_letter``.
"""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

__all__ = ["Outcome", "RetryOutcome", "topic_of"]


class Outcome(enum.Enum):
    """How an attempt ended."""

    SUCCESS = "success"
    FAILED = "failed"  # another attempt is scheduled
    DEAD_LETTER = "dead_letter"


def topic_of(outcome: Outcome) -> str:
    """The bus topic of `outcome`: ``retry.success``, ``retry.failed``, ``retry.dead_letter``."""
    return f"retry.{outcome.value}"


@attrs.frozen(kw_only=True)
class RetryOutcome:
    """One attempt's outcome, with what identifies the item and the operation."""

    outcome: Outcome
    item_id: int
    event_id: str  # the operation's idempotency key
    event_type: str  # the intent's name, e.g. "cytube.say"
    plugin: str | None  # the component whose operation it is
    channel: str | None
    correlation_id: str | None  # follows the operation from its first failure
    attempt: int  # 1 for the first attempt
    error: str | None = None  # why it failed (None on success)
    error_code: str | None = None
    next_retry_at: datetime | None = None  # when the next attempt is due (FAILED only)
