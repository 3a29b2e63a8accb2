"""A built-in plugin's database writes: done now through the gateway, or queued.

Each write is a function ``(SqlClient, args) -> None`` over an attrs class of JSON values,
idempotent (a retried write changes nothing twice), and an `IntentType` named
``<plugin>.<what>`` that runs the same function from the retry queue. `write_or_queue`
runs it now; when the gateway fails (PostgreSQL away, breaker open, timeout, gateway
restarting) it queues the intent with the plugin's name through `PluginContext.schedule`
(the queue, or the local spool while PostgreSQL is away), so nothing the plugin heard is
lost: the retry workers write it later, and send it to dead letter if it can never be
written.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import attrs

from daz_actors.plugins.api import PluginContext
from daz_actors.retry.handlers import AttemptContext
from daz_actors.retry.intents import IntentType
from daz_actors.retry.policies import RetryPolicy
from daz_actors.runtime.errors import DazActorsError, NoSuchActor
from daz_actors.storage.sql_messages import CALL_FAILED, SqlClient

__all__ = ["GATEWAY_FAILED", "WRITE_POLICY", "PluginWrite", "WriteOutcome", "write_or_queue"]

log = logging.getLogger("daz_actors.plugins.writes")

A = TypeVar("A")

# a tracking write retried through the queue: soon and often, the database is usually back
# within minutes; then dead letter, where an operator sees it (``queue list --plugin``)
WRITE_POLICY = RetryPolicy(max_retries=20, initial=2.0, max_delay=300.0, attempt_timeout=15.0)

# the gateway failed, or is not registered right now (restarting)
GATEWAY_FAILED: tuple[type[Exception], ...] = (*CALL_FAILED, NoSuchActor)

WriteFn = Callable[[SqlClient, A], Awaitable[None]]


@attrs.frozen(kw_only=True)
class PluginWrite(Generic[A]):
    """One kind of write of a plugin: its function and the intent that redoes it."""

    fn: Callable[[SqlClient, Any], Awaitable[None]]
    intent: IntentType[A]

    @classmethod
    def of(
        cls, name: str, args: type[A], fn: WriteFn[A], *, version: int = 1, description: str = ""
    ) -> PluginWrite[A]:
        """The write `fn` of `args`, redone from the queue by the intent `name`."""

        async def run(value: A, attempt: AttemptContext) -> None:
            await fn(attempt.db, value)

        return cls(
            fn=fn,
            intent=IntentType(
                name=name, version=version, args=args, run=run, description=description
            ),
        )


@attrs.frozen
class WriteOutcome:
    """What `write_or_queue` did: written now, queued for later, or neither (logged)."""

    written: bool
    queued: bool
    error: str | None = None


async def write_or_queue(
    ctx: PluginContext[Any],
    write: PluginWrite[A],
    args: A,
    *,
    event_id: str,
    channel: str | None = None,
    policy: RetryPolicy | None = None,
    timeout: float = 10.0,
) -> WriteOutcome:
    """Run `write` now; if the gateway fails, queue it (event id `event_id`, the plugin's
    name) for the retry workers. The queue item is durable when this returns."""
    try:
        await write.fn(ctx.db(default_timeout=timeout), args)
        return WriteOutcome(written=True, queued=False)
    except GATEWAY_FAILED as exc:
        error = f"{type(exc).__name__}: {exc}"
    chosen = ctx.policy(f"{ctx.name}_write", policy or WRITE_POLICY)
    item = ctx.new_item(
        write.intent.intent(args),
        policy=chosen,
        event_id=event_id,
        channel=channel,
        operation="sql_operation",
    )
    try:
        await ctx.schedule(item)
    except DazActorsError as exc:  # the capture itself is away: say so loudly
        log.error(
            "plugin %s: %s (%s) failed (%s) and could not be queued: %s",
            ctx.name, write.intent.name, event_id, error, exc,
        )  # fmt: skip
        return WriteOutcome(written=False, queued=False, error=error)
    log.warning(
        "plugin %s: %s (%s) failed (%s); queued for retry",
        ctx.name, write.intent.name, event_id, error,
    )  # fmt: skip
    return WriteOutcome(written=False, queued=True, error=error)
