"""The ``remind`` plugin at work (its declaration and params are in ``__init__``):
``!remind <duration> [text]`` (``90s``, ``10m``, ``1h30m``).

A reminder is a row of ``daz_reminders`` and, in the same transaction, a queue item
``remind.fire`` (with the plugin's name) not handed out before the reminder is due: the
retry queue is the timer, so reminders survive restarts and nothing sleeps per reminder.
When it is due a retry worker says it once in the channel (say_once.py); one that fell
due while the bot was down fires when it is back and says how late it is.

Config (``[plugins.remind]``): ``max_duration`` (``"24h"`` by default), ``late_after``
(seconds past due before a reminder says it is late), ``min_rank``, ``cooldown``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from daz_actors.cytube.commands import CommandContext, format_duration
from daz_actors.plugins.api import PluginContext
from daz_actors.plugins.declaration import PluginCommand, PluginParts
from daz_actors.plugins.durations import DurationError, parse_duration
from daz_actors.plugins.remind import RemindParams
from daz_actors.plugins.say_once import DELIVERY_POLICY, DELIVERY_POLICY_NAME, say_once
from daz_actors.retry.handlers import AttemptContext
from daz_actors.retry.intents import IntentType
from daz_actors.storage import queue

__all__ = ["REMIND_FIRE", "compose_reminder", "setup"]

log = logging.getLogger("daz_actors.plugins.remind")

MAX_TEXT = 200  # characters of a reminder's text: the line fits CyTube's 320


@attrs.frozen(kw_only=True)
class RemindFire:
    """Intent ``remind.fire`` v1: say reminder `reminder_id` once."""

    reminder_id: int


_INSERT = """
INSERT INTO daz_reminders (channel, username, text, due_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
RETURNING id, due_at"""


async def _unused(_args: RemindFire, _ctx: AttemptContext) -> None:  # replaced in setup
    raise RuntimeError("the remind plugin is not set up")


REMIND_FIRE = IntentType(
    name="remind.fire",
    version=1,
    args=RemindFire,
    run=_unused,
    description="say a reminder that is due, once",
)


def compose_reminder(row: Mapping[str, Any], *, late_after: float, now: datetime) -> str:
    """What the bot says for reminder `row` at `now`."""
    asked = format_duration((row["due_at"] - row["created_at"]).total_seconds())
    text = (
        f"{row['username']}: reminder: {row['text']}"
        if row["text"]
        else f"{row['username']}: this is the reminder you asked for {asked} ago"
    )
    late = (now - row["due_at"]).total_seconds()
    if late > late_after:
        text += f" (late by {format_duration(late)}: I was away)"
    return text


def setup(ctx: PluginContext[RemindParams]) -> PluginParts:
    """The remind command and its fire intent."""
    said: set[int] = set()

    def compose(row: Mapping[str, Any]) -> tuple[str, str | None]:
        now = datetime.now(UTC)
        return compose_reminder(row, late_after=ctx.params.late_after, now=now), None

    async def fire(args: RemindFire, attempt: AttemptContext) -> None:
        outcome = await say_once(
            ctx, attempt, table="daz_reminders", row_id=args.reminder_id, compose=compose,
            said=said,
        )  # fmt: skip
        log.info("reminder %d: %s", args.reminder_id, outcome.state)

    async def remind(command: CommandContext) -> str:
        usage = f"usage: {command.prefix}remind <duration> [text], e.g. 10m or 1h30m"
        parts = command.args.split(maxsplit=1)
        if not parts:
            return usage
        try:
            seconds = parse_duration(parts[0])
        except DurationError as exc:
            return f"{command.username}, {exc}"
        text = parts[1].strip() if len(parts) > 1 else ""
        limit = ctx.params.max_seconds
        if seconds < 1:
            return f"{command.username}, give a duration of at least 1s"
        if seconds > limit:
            return f"{command.username}, at most {format_duration(limit)} ahead"
        if len(text) > MAX_TEXT:
            return f"{command.username}, that text is too long (at most {MAX_TEXT} characters)"
        policy = ctx.policy(DELIVERY_POLICY_NAME, DELIVERY_POLICY)

        async def store(conn: Any) -> int:
            row = await conn.fetchrow(_INSERT, command.channel, command.username, text, seconds)
            item = ctx.new_item(
                REMIND_FIRE.intent(RemindFire(reminder_id=row["id"])),
                policy=policy,
                event_id=f"remind:{row['id']}",
                channel=command.channel,
                # the queue hands it out from then on: the durable timer
                not_before=row["due_at"],
            )
            await queue.enqueue(conn, item)
            reminder_id: int = row["id"]
            return reminder_id

        await command.db.transaction(store, name="remind.store")
        return f"ok {command.username}, I will remind you in {format_duration(seconds)}"

    return PluginParts(
        commands=[
            PluginCommand(
                name="remind",
                fn=remind,
                help="a reminder: !remind <duration> [text] (90s, 10m, 1h30m)",
                min_rank=ctx.params.min_rank,
                cooldown=ctx.params.cooldown,
            )
        ],
        intents=[attrs.evolve(REMIND_FIRE, run=fire)],
    )
