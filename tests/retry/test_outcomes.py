"""Captured failures keep their plugin, priority and tags; every attempt's outcome is an
event on the bus."""

from __future__ import annotations

import json
from typing import Any

import attrs
import trio
from click.testing import CliRunner
from probes import listen
from retry_trees import FAST, item_in, retry_tree

from daz_actors import FailureEvent
from daz_actors.app.builtin_kinds import default_kinds
from daz_actors.app.cli_queue import queue_group
from daz_actors.app.config import load_config
from daz_actors.retry.handlers import AttemptContext, HandlerRegistry, PermanentError
from daz_actors.retry.outcomes import Outcome, RetryOutcome
from daz_actors.runtime.events import Intent
from daz_actors.storage.queue_types import QueueItem, RetryStatus
from daz_actors.testing import open_tree


def failure(event_id: str, operation: str, plugin: str | None = "chat-log") -> FailureEvent:
    return FailureEvent(
        topic="test.op.failed",
        source="room:lobby/event-router",
        operation=operation,
        event_type="test.op",
        error="boom",
        retryable=True,
        intent=Intent(name="test.op", version=1, args={}),
        plugin=plugin,
        event_id=event_id,
    )


async def test_a_captured_failure_keeps_its_plugin_priority_and_tags(pg):
    """Items made from failure events carry the failing component as plugin and their
    policy's priority and tags: a reply outranks a log write, and `queue stats` shows the
    plugin."""
    policies = dict(load_config(None, default_kinds()).retry_policies)
    tree = retry_tree(pg.dsn, HandlerRegistry(), policies=policies)
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        await tree.bus.publish("cytube.send.failed", failure("reply", "cytube_command", "cytube"))
        await tree.bus.publish("chat.log.failed", failure("log", "sql_operation"))
        await tree.bus.publish("x.failed", failure("anon", "default", plugin=None))
        reply = await item_in(db, "reply", RetryStatus.DEAD_LETTER)  # no handler here
        logged = await item_in(db, "log", RetryStatus.DEAD_LETTER)
        anon = await item_in(db, "anon", RetryStatus.DEAD_LETTER)
    assert (reply.plugin, reply.priority, reply.tags) == ("cytube", 8, ("chat",))
    assert (logged.plugin, logged.priority, logged.tags) == ("chat-log", 5, ("database",))
    assert anon.plugin == "room:lobby/event-router"  # no plugin given: the source
    args = ["stats", "--json", "--database-url", pg.dsn]
    result = await trio.to_thread.run_sync(lambda: CliRunner().invoke(queue_group, args))
    assert result.exit_code == 0, result.output
    plugins = {row["plugin"] for row in json.loads(result.stdout)["groups"]}
    assert {"cytube", "chat-log"} <= plugins


async def test_every_attempt_ends_in_an_outcome_event(pg):
    """A flaky item gives retry.failed then retry.success; a permanent error gives
    retry.dead_letter; each carries the item's identity, attempt and error."""
    handlers = HandlerRegistry()
    attempts: dict[str, int] = {}

    @handlers.register("test.op")
    async def op(item: QueueItem, ctx: AttemptContext) -> None:
        attempts[item.event_id] = ctx.attempt
        if item.event_id == "never":
            raise PermanentError("cannot ever work")
        if ctx.attempt == 1:
            raise ConnectionError("not yet")

    fast = attrs.evolve(FAST, max_retries=3)
    tree = retry_tree(pg.dsn, handlers, policies={"default": fast})
    seen: list[RetryOutcome] = []
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await tree.gateway.connected.wait()
        outcomes = listen(tree.bus, "retry.*")
        await tree.bus.publish("x.failed", failure("flaky", "default"))
        await tree.bus.publish("x.failed", failure("never", "default"))
        with trio.fail_after(30):
            while len(seen) < 3:
                event: Any = (await outcomes.get()).event
                seen.append(event)
        await item_in(db, "flaky", RetryStatus.COMPLETED)
    by_item = {(o.event_id, o.outcome): o for o in seen}
    assert set(by_item) == {
        ("flaky", Outcome.FAILED), ("flaky", Outcome.SUCCESS), ("never", Outcome.DEAD_LETTER)
    }  # fmt: skip
    failed = by_item[("flaky", Outcome.FAILED)]
    assert (failed.attempt, failed.error_code, failed.plugin) == (1, "ConnectionError", "chat-log")
    assert failed.next_retry_at is not None
    assert by_item[("flaky", Outcome.SUCCESS)].attempt == 2
    dead = by_item[("never", Outcome.DEAD_LETTER)]
    assert (dead.attempt, dead.error_code, dead.error) == (1, "permanent", "cannot ever work")
    assert dead.correlation_id is not None
