"""Say a stored line exactly once: the delivery of ``tell`` and ``remind``.

A row to be said (a tell, a reminder) lives in a plugin table with the columns ``id``,
``channel``, ``said_text``, ``said_to``, ``attempt_at``, ``claimed_until`` and
``delivered_at``. A queue item (one per row, by event id) runs `say_once` until it
succeeds; each attempt:

1. claims the row for the attempt (``claimed_until``), so two attempts never say it at
   once (a second one fails retryably and finds the work done later);
2. if an earlier attempt began (``attempt_at``), looks for the server's echo of
   ``said_text`` in the chat log (the router logs the bot's own lines, live or replayed on
   rejoin): found means it was said, and the row is only marked;
3. else fixes the text (at the first attempt), says it through the room's connection
   without the connection's own retry (``requeue=False``), and marks the row delivered
   once the server echoed it. A failed or unconfirmed send fails the attempt retryably.

On a cluster node (`PluginContext.elsewhere`) a row for a channel this node does not
hold is handed over to the node that does (the item released without counting an
attempt: schema 0016), unclaimed and with its text fixed, so the holder's attempt goes on
from step 2.

What this gives: a crash, a SIGKILL, a database outage or a chat server kill between any
two steps leaves the row undelivered (said again later) or delivered (never again), and a
line whose echo the bot saw is never said twice. The one gap: a line the server showed
whose echo the bot never received (the connection dropped in between) and that is no
longer among the 15 lines the server replays on rejoin is said again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import attrs

from daz_actors.cytube.elsewhere import HandOver
from daz_actors.cytube.sender import CannotSpeak, SendFailed
from daz_actors.plugins.api import NotConnected, PluginContext
from daz_actors.retry.handlers import AttemptContext, ItemReleased
from daz_actors.retry.policies import RetryPolicy
from daz_actors.runtime.errors import DazActorsError

__all__ = ["DELIVERY_POLICY", "Busy", "Compose", "Outcome", "Unsaid", "say_once"]

log = logging.getLogger("daz_actors.plugins")

# A line that must be said once keeps being tried while the chat server or the database is
# away (about 16 hours at one try a minute); [retry_policies.plugin_delivery] overrides it.
DELIVERY_POLICY = RetryPolicy(
    max_retries=1000,
    initial=2.0,
    max_delay=60.0,
    multiplier=2.0,
    attempt_timeout=20.0,
    priority=7,
)
DELIVERY_POLICY_NAME = "plugin_delivery"

ECHO_SLACK_SECONDS = 60  # the server's clock against the database's, for the echo search
SAY_SHARE = 0.8  # of the attempt's timeout, for saying it (the rest: the marks)


class Busy(DazActorsError, RuntimeError):
    """Another attempt holds the row now: this one fails and is retried."""

    retryable = True
    code = "busy"


class Unsaid(DazActorsError, RuntimeError):
    """The line could not be said now (not connected, cannot speak): retried."""

    retryable = True
    code = "unsaid"


@attrs.frozen(kw_only=True)
class Outcome:
    """How an attempt ended."""

    # "said", "echoed-before", "delivered-before", "gone" (an item handed over to the
    # node holding the channel, on a cluster, raises `ItemReleased` instead)
    state: str
    text: str = ""


# (row) -> (text, PM recipient or None), fixed at the first attempt
Compose = Callable[[Mapping[str, Any]], tuple[str, str | None]]

_CHAT_ECHO = """
SELECT EXISTS (
    SELECT 1 FROM daz_chat_messages
    WHERE channel = $1 AND lower(username) = lower($2) AND message = $3
      AND received_at >= $4::timestamptz - interval '2 seconds'
      AND sent_at >= $4::timestamptz - make_interval(secs => $5::double precision)
)"""

_PM_ECHO = """
SELECT EXISTS (
    SELECT 1 FROM daz_private_messages
    WHERE channel = $1 AND lower(from_user) = lower($2) AND lower(to_user) = lower($6)
      AND message = $3
      AND received_at >= $4::timestamptz - interval '2 seconds'
      AND sent_at >= $4::timestamptz - make_interval(secs => $5::double precision)
)"""


async def was_echoed(
    attempt: AttemptContext, *, channel: str, bot: str, text: str, to: str | None, since: datetime
) -> bool:
    """Whether the chat log holds the bot's line `text` (to `to`) received since `since`."""
    if not bot:
        return False
    if to is None:
        return bool(
            await attempt.db.query_value(_CHAT_ECHO, channel, bot, text, since, ECHO_SLACK_SECONDS)
        )
    return bool(
        await attempt.db.query_value(_PM_ECHO, channel, bot, text, since, ECHO_SLACK_SECONDS, to)
    )


async def say_once(
    plugin: PluginContext[Any],
    attempt: AttemptContext,
    *,
    table: str,
    row_id: int,
    compose: Compose,
    said: set[int],
) -> Outcome:
    """One attempt at saying row `row_id` of `table` (a trusted name) exactly once.

    `said`: the rows this process saw echoed but could not mark yet (the database went
    away between the echo and the mark): they are only marked.
    """
    db = attempt.db
    claim_seconds = attempt.attempt_timeout + 5
    rows = await db.query(
        f"UPDATE {table} SET claimed_until = now() + make_interval(secs => $2)"
        " WHERE id = $1 AND delivered_at IS NULL"
        "   AND (claimed_until IS NULL OR claimed_until < now())"
        " RETURNING *",
        row_id,
        claim_seconds,
    )
    if not rows:
        state = await db.query_value(
            f"SELECT CASE WHEN delivered_at IS NULL THEN 'busy' ELSE 'delivered' END"
            f" FROM {table} WHERE id = $1",
            row_id,
        )
        if state is None:
            return Outcome(state="gone")
        if state == "delivered":
            return Outcome(state="delivered-before")
        raise Busy(f"{table} {row_id} is being said by another attempt")
    row = rows[0]
    channel = row["channel"]
    if row_id in said:
        await _mark(attempt, table, row_id)
        said.discard(row_id)
        return Outcome(state="said", text=row["said_text"])
    if row["attempt_at"] is not None:
        text, to = row["said_text"], row["said_to"]
        if await was_echoed(
            attempt, channel=channel, bot=plugin.bot_name(channel), text=text, to=to,
            since=row["attempt_at"],
        ):  # fmt: skip
            await _mark(attempt, table, row_id)
            log.info("%s %d: its echo is in the chat log: delivered before", table, row_id)
            return Outcome(state="echoed-before", text=text)
    else:
        text, to = compose(row)
        await db.execute(
            f"UPDATE {table} SET attempt_at = now(), said_text = $2, said_to = $3 WHERE id = $1",
            row_id,
            text,
            to,
        )
    try:
        # hold=0: while the bot cannot speak the attempt fails at once, and the next one
        # looks for the echo again first (after a rejoin the server's replay of its last
        # lines may show that this line was said after all)
        await plugin.say(
            channel, text, to=to, requeue=False, hold=0.0,
            timeout=attempt.attempt_timeout * SAY_SHARE,
        )  # fmt: skip
    except (NotConnected, CannotSpeak) as exc:
        await _release(attempt, table, row_id)
        if plugin.elsewhere is not None:  # a cluster node: the channel's holder says it
            result = await plugin.elsewhere.hand_over(
                channel, attempt, only_elsewhere=isinstance(exc, CannotSpeak)
            )
            if result.verdict in (HandOver.HANDED_OVER, HandOver.LOST):
                # the item is the holder's now (or another worker's): the worker writes
                # nothing for this attempt
                raise ItemReleased(
                    f"{table} {row_id}: handed over to the node holding {channel}"
                    f" ({result.holder or 'none yet'})"
                    if result.verdict is HandOver.HANDED_OVER
                    else f"{table} {row_id}: this worker's lease on the item is gone"
                ) from exc
        raise Unsaid(f"{table} {row_id} not said now: {exc}") from exc
    except SendFailed:
        await _release(attempt, table, row_id)
        raise
    said.add(row_id)  # echoed: from here on it is only marked
    await _mark(attempt, table, row_id)
    said.discard(row_id)
    return Outcome(state="said", text=text)


async def _mark(attempt: AttemptContext, table: str, row_id: int) -> None:
    await attempt.db.execute(
        f"UPDATE {table} SET delivered_at = now(), claimed_until = NULL WHERE id = $1", row_id
    )


async def _release(attempt: AttemptContext, table: str, row_id: int) -> None:
    """Let the next attempt claim the row at once (best effort: the claim expires anyway)."""
    try:
        await attempt.db.execute(f"UPDATE {table} SET claimed_until = NULL WHERE id = $1", row_id)
    except DazActorsError as exc:
        log.debug("%s %d: claim not released (%s); it expires", table, row_id, exc)
