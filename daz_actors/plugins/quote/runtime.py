"""The runtime of the ``quote`` plugin (imported by its `setup`); see the package's
docstring for what it does."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from daz_actors.cytube.commands import CommandContext
from daz_actors.plugins.api import PluginContext
from daz_actors.plugins.declaration import PluginCommand, PluginParts
from daz_actors.plugins.quote import QuoteParams
from daz_actors.plugins.text import ago, clip, parse_user
from daz_actors.storage.sql_messages import SqlClient

__all__ = ["random_line"]


# $1 channel, $2 user (lower case), $3 a number in [0, 1), $4 the command prefix, $5 the
# bot's name (lower case, "" if unknown); for anyone, the same without $2
def _quotable(prefix: str, bot: str) -> str:
    return (
        f"AND NOT starts_with(message, {prefix}) AND btrim(message) <> ''"
        f" AND lower(username) <> {bot}"
    )


def _pick(where: str, draw: str, prefix: str, bot: str) -> str:
    """First quotable line at or after a random instant of `where`'s lines, else the last
    one before it."""
    quotable = _quotable(prefix, bot)
    return f"""
WITH bounds AS (
    SELECT min(sent_at) AS lo, max(sent_at) AS hi FROM daz_chat_messages WHERE {where}
), pivot AS (SELECT lo + (hi - lo) * {draw}::float8 AS at FROM bounds)
(SELECT username, message, sent_at FROM daz_chat_messages
 WHERE {where} AND sent_at >= (SELECT at FROM pivot) {quotable}
 ORDER BY sent_at LIMIT 1)
UNION ALL
(SELECT username, message, sent_at FROM daz_chat_messages
 WHERE {where} AND sent_at < (SELECT at FROM pivot) {quotable}
 ORDER BY sent_at DESC LIMIT 1)
LIMIT 1"""


_BY_USER = _pick("channel = $1 AND lower(username) = $2", "$3", "$4", "$5")
_ANYONE = _pick("channel = $1", "$2", "$3", "$4")


async def random_line(
    db: SqlClient,
    channel: str,
    user: str | None,
    *,
    prefix: str,
    bot: str,
    rng: random.Random | None = None,
) -> Any:
    """A random quotable line (username, message, sent_at) of `user` (None: anyone) in
    `channel`, or None when there is none."""
    draw = (rng or random).random()
    if user is None:
        rows = await db.query(_ANYONE, channel, draw, prefix, bot.lower())
    else:
        rows = await db.query(_BY_USER, channel, user.lower(), draw, prefix, bot.lower())
    return rows[0] if rows else None


def quote_reply(row: Any, now: datetime, length: int) -> str:
    return f'{row["username"]}: "{clip(row["message"], length)}" ({ago(row["sent_at"], now)})'


def setup(ctx: PluginContext[QuoteParams]) -> PluginParts:
    """!quote and !rq."""
    params = ctx.params
    rng = random.Random()

    async def quote(command: CommandContext) -> str:
        words = command.args.split()
        name = parse_user(words[0]) if words else None
        if name is None:
            return f"usage: {command.prefix}quote <name> (or {command.prefix}rq for anyone)"
        bot = ctx.bot_name(command.channel)
        if bot and name.lower() == bot.lower():
            return "I do not quote myself"
        row = await random_line(
            ctx.db(), command.channel, name, prefix=command.prefix, bot=bot, rng=rng
        )
        if row is None:
            return f"I have nothing {name} said here to quote"
        return quote_reply(row, datetime.now(UTC), params.quote_length)

    async def rq(command: CommandContext) -> str:
        bot = ctx.bot_name(command.channel)
        row = await random_line(
            ctx.db(), command.channel, None, prefix=command.prefix, bot=bot, rng=rng
        )
        if row is None:
            return "I have nothing said here to quote yet"
        return quote_reply(row, datetime.now(UTC), params.quote_length)

    return PluginParts(
        commands=[
            PluginCommand(
                name="quote",
                fn=quote,
                help="a random line of a user: !quote <name>",
                cooldown=params.cooldown,
            ),
            PluginCommand(
                name="rq", fn=rq, help="a random line said here", cooldown=params.cooldown
            ),
        ],
    )
