"""The runtime of the ``usertracker`` plugin (imported by its `setup`); see the package's
docstring for what it does."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import attrs

from daz_actors.cytube.channel_events import ChannelEventKind
from daz_actors.cytube.commands import CommandContext
from daz_actors.cytube.events import ChatMessage, UserJoined, UserLeft, UserList
from daz_actors.plugins.api import PluginContext
from daz_actors.plugins.declaration import PluginActor, PluginCommand, PluginParts
from daz_actors.plugins.text import ago, clip, parse_user
from daz_actors.plugins.usertracker import NAME, UserTrackerParams
from daz_actors.plugins.writes import PluginWrite, write_or_queue
from daz_actors.runtime.actor import Actor, actor_factory
from daz_actors.runtime.bus import Published
from daz_actors.storage.sql_messages import SqlClient

__all__ = [
    "JOINED",
    "LEFT",
    "PRESENT",
    "SAID",
    "GetTrackerStats",
    "Joined",
    "Left",
    "Present",
    "Said",
    "TrackerStats",
]

log = logging.getLogger("daz_actors.plugins.usertracker")


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# ---------------------------------------------------------------- writes (idempotent)


@attrs.frozen(kw_only=True)
class Joined:
    """Intent ``usertracker.join`` v1."""

    channel: str
    username: str
    at: float  # seconds since the epoch


@attrs.frozen(kw_only=True)
class Left:
    """Intent ``usertracker.leave`` v1."""

    channel: str
    username: str
    at: float


@attrs.frozen(kw_only=True)
class Said:
    """Intent ``usertracker.line`` v1."""

    channel: str
    username: str
    text: str
    at: float


@attrs.frozen(kw_only=True)
class Present:
    """Intent ``usertracker.users`` v1: everyone in the channel when the bot (re)joined."""

    channel: str
    usernames: tuple[str, ...]
    at: float


# a join counts unless a later leave is already recorded (a join redone late by the queue)
_JOIN_USER = """
INSERT INTO daz_usertracker_users AS u (channel, lname, username, present, last_join_at)
VALUES ($1, lower($2), $2, true, $3)
ON CONFLICT (channel, lname) DO UPDATE SET
    username = EXCLUDED.username,
    present = CASE WHEN u.last_leave_at > EXCLUDED.last_join_at THEN u.present ELSE true END,
    last_join_at = GREATEST(u.last_join_at, EXCLUDED.last_join_at)
RETURNING present, last_leave_at"""
# no conflict target: an open session already there, or this very join recorded already
_OPEN_SESSION = """
INSERT INTO daz_usertracker_sessions (channel, lname, username, joined_at)
VALUES ($1, lower($2), $2, $3) ON CONFLICT DO NOTHING"""
_CLOSED_SESSION = """
INSERT INTO daz_usertracker_sessions (channel, lname, username, joined_at, left_at, leave_seen)
VALUES ($1, lower($2), $2, $3, $4, true) ON CONFLICT DO NOTHING"""
_LEAVE_USER = """
INSERT INTO daz_usertracker_users AS u (channel, lname, username, present, last_leave_at)
VALUES ($1, lower($2), $2, false, $3)
ON CONFLICT (channel, lname) DO UPDATE SET
    username = EXCLUDED.username,
    present = CASE WHEN u.last_join_at > EXCLUDED.last_leave_at THEN u.present ELSE false END,
    last_leave_at = GREATEST(u.last_leave_at, EXCLUDED.last_leave_at)"""
_CLOSE_SESSION = """
UPDATE daz_usertracker_sessions SET left_at = $3, leave_seen = true
WHERE channel = $1 AND lname = lower($2) AND left_at IS NULL AND joined_at <= $3"""
_LINE = """
INSERT INTO daz_usertracker_users AS u (channel, lname, username, present, last_line, last_line_at)
VALUES ($1, lower($2), $2, true, $3, $4)
ON CONFLICT (channel, lname) DO UPDATE SET
    username = EXCLUDED.username, last_line = EXCLUDED.last_line,
    last_line_at = EXCLUDED.last_line_at
WHERE u.last_line_at IS NULL OR u.last_line_at <= EXCLUDED.last_line_at"""
# the snapshot: sessions of users not listed end (they left while the bot was away) ...
_GONE_SESSIONS = """
UPDATE daz_usertracker_sessions SET left_at = $3, leave_seen = false
WHERE channel = $1 AND left_at IS NULL AND lname <> ALL($2::text[]) AND joined_at <= $3"""
_GONE_USERS = """
UPDATE daz_usertracker_users SET present = false,
    last_leave_at = GREATEST(last_leave_at, $3)
WHERE channel = $1 AND present AND lname <> ALL($2::text[])
    AND (last_join_at IS NULL OR last_join_at <= $3)"""
# ... and users listed are here (unless a leave newer than the snapshot is recorded)
_HERE_USERS = """
INSERT INTO daz_usertracker_users AS u (channel, lname, username, present)
SELECT $1, lower(n), n, true FROM unnest($2::text[]) AS n
ON CONFLICT (channel, lname) DO UPDATE SET
    username = EXCLUDED.username,
    present = CASE WHEN u.last_leave_at > $3 THEN u.present ELSE true END"""
_HERE_SESSIONS = """
INSERT INTO daz_usertracker_sessions (channel, lname, username, joined_at, join_seen)
SELECT channel, lname, username, $3, false FROM daz_usertracker_users
WHERE channel = $1 AND lname = ANY($2::text[]) AND present
ON CONFLICT DO NOTHING"""


async def _join(db: SqlClient, j: Joined) -> None:
    async def run(conn: Any) -> None:
        row = await conn.fetchrow(_JOIN_USER, j.channel, j.username, _ts(j.at))
        if row["present"]:
            await conn.execute(_OPEN_SESSION, j.channel, j.username, _ts(j.at))
        elif row["last_leave_at"] is not None and row["last_leave_at"] >= _ts(j.at):
            # redone late, after the leave that ended it was recorded: a closed session
            await conn.execute(
                _CLOSED_SESSION, j.channel, j.username, _ts(j.at), row["last_leave_at"]
            )

    await db.transaction(run, name="usertracker.join")


async def _leave(db: SqlClient, left: Left) -> None:
    async def run(conn: Any) -> None:
        await conn.execute(_LEAVE_USER, left.channel, left.username, _ts(left.at))
        await conn.execute(_CLOSE_SESSION, left.channel, left.username, _ts(left.at))

    await db.transaction(run, name="usertracker.leave")


async def _line(db: SqlClient, said: Said) -> None:
    await db.execute(_LINE, said.channel, said.username, said.text, _ts(said.at))


async def _present(db: SqlClient, p: Present) -> None:
    names = sorted({n.lower(): n for n in p.usernames if n}.values(), key=str.lower)
    lnames = [n.lower() for n in names]
    at = _ts(p.at)

    async def run(conn: Any) -> None:
        await conn.execute(_GONE_SESSIONS, p.channel, lnames, at)
        await conn.execute(_GONE_USERS, p.channel, lnames, at)
        await conn.execute(_HERE_USERS, p.channel, names, at)
        await conn.execute(_HERE_SESSIONS, p.channel, lnames, at)

    await db.transaction(run, name="usertracker.users")


JOINED = PluginWrite.of("usertracker.join", Joined, _join, description="record a join")
LEFT = PluginWrite.of("usertracker.leave", Left, _leave, description="record a leave")
SAID = PluginWrite.of("usertracker.line", Said, _line, description="record a user's last line")
PRESENT = PluginWrite.of(
    "usertracker.users", Present, _present, description="record who is here (a userlist)"
)


# ---------------------------------------------------------------- the actor


LINES_PENDING_MAX = 500  # users whose newest line waits, at most, before they are written


@attrs.frozen
class GetTrackerStats:
    """Ask the tracker what it heard and wrote (tests, debugging)."""


@attrs.frozen
class TrackerStats:
    lines_heard: int
    line_writes: int


class Tracker(Actor):
    """Turns the channel's events into writes, in the order heard.

    Only a user's newest line matters, so lines are coalesced: while more messages wait
    in the mailbox (a busy room), a line only replaces the user's pending one; they are
    written when the mailbox is empty, before any other message is handled (a join, a
    leave, a userlist), or once `LINES_PENDING_MAX` users have one pending. A busy room
    then costs a write per user, not per line, and the tracker keeps up instead of losing
    events to the bus.
    """

    def __init__(self, plugin: PluginContext[UserTrackerParams]) -> None:
        self.plugin = plugin
        self.pending: dict[tuple[str, str], tuple[Said, str]] = {}  # (channel, name) -> line
        self.lines_heard = 0
        self.line_writes = 0

    async def on_start(self) -> None:
        kinds = [
            ChannelEventKind.JOIN,
            ChannelEventKind.LEAVE,
            ChannelEventKind.LINE,
            ChannelEventKind.USERS,
        ]
        self.plugin.subscribe(self.ctx.ref, kinds)

    async def handle(self, message: Any) -> Any:
        event = message.event if isinstance(message, Published) else None
        if not isinstance(event, ChatMessage):
            await self._flush_lines()  # whatever comes after lines: the lines first
        if isinstance(message, GetTrackerStats):
            return TrackerStats(lines_heard=self.lines_heard, line_writes=self.line_writes)
        if not isinstance(message, Published):
            log.warning("usertracker ignores %s", type(message).__name__)
            return None
        if isinstance(event, ChatMessage):
            if event.username:
                self.lines_heard += 1
                said = Said(
                    channel=event.channel, username=event.username, text=event.text,
                    at=event.time / 1000,
                )  # fmt: skip
                key = f"line:{said.channel}:{said.username.lower()}:{event.time}:{event.seq}"
                self.pending[(said.channel, said.username.lower())] = (said, key)
            if self.ctx.mailbox.depth == 0 or len(self.pending) >= LINES_PENDING_MAX:
                await self._flush_lines()
            return None
        if isinstance(event, UserJoined):
            j = Joined(channel=event.channel, username=event.user.name, at=event.received_at)
            await self._write(JOINED, j, f"join:{j.channel}:{j.username.lower()}:{j.at}")
        elif isinstance(event, UserLeft):
            left = Left(channel=event.channel, username=event.name, at=event.received_at)
            key = f"leave:{left.channel}:{left.username.lower()}:{left.at}"
            await self._write(LEFT, left, key)
        elif isinstance(event, UserList):
            p = Present(
                channel=event.channel,
                usernames=tuple(u.name for u in event.users if u.name),
                at=time.time(),
            )
            await self._write(PRESENT, p, f"users:{p.channel}:{p.at}")
        return None

    async def _flush_lines(self) -> None:
        pending, self.pending = self.pending, {}
        for said, key in pending.values():
            self.line_writes += 1
            await self._write(SAID, said, key)

    async def on_stop(self) -> None:
        await self._flush_lines()  # an orderly stop writes what is pending

    async def _write(self, write: PluginWrite[Any], args: Any, key: str) -> None:
        await write_or_queue(
            self.plugin, write, args, event_id=f"{NAME}:{key}", channel=args.channel,
            timeout=self.plugin.params.write_timeout,
        )  # fmt: skip


# ---------------------------------------------------------------- !seen

_SEEN = """
SELECT username, present, last_join_at, last_leave_at, last_line, last_line_at
FROM daz_usertracker_users WHERE channel = $1 AND lname = lower($2)"""


def seen_reply(row: Any, name: str, now: datetime, *, bot: str, quote_length: int) -> str:
    """The answer of ``!seen <name>`` for the user's row (None: never seen)."""
    if row is None:
        return f"I have not seen {name} here"
    username = row["username"]
    if bot and username.lower() == bot.lower():
        return "I am right here"
    said = ""
    if row["last_line"] is not None:
        text = clip(row["last_line"], quote_length)
        said = f', last said "{text}" {ago(row["last_line_at"], now)}'
    if row["present"]:
        return f"{username} is here now{said}"
    left = row["last_leave_at"] or row["last_join_at"] or row["last_line_at"]
    when = ago(left, now) if left is not None else "some time ago"
    return f"{username} was last here {when}{said}"


def setup(ctx: PluginContext[UserTrackerParams]) -> PluginParts:
    """The tracker actor, the !seen command and the intents of the writes."""

    async def seen(command: CommandContext) -> str:
        name = parse_user(command.args.split()[0]) if command.args.split() else None
        if name is None:
            return f"usage: {command.prefix}seen <name>"
        row = await ctx.db().query(_SEEN, command.channel, name)
        return seen_reply(
            row[0] if row else None, name, datetime.now(UTC),
            bot=ctx.bot_name(command.channel), quote_length=ctx.params.quote_length,
        )  # fmt: skip

    return PluginParts(
        commands=[
            PluginCommand(
                name="seen",
                fn=seen,
                help="when a user was last here: !seen <name>",
                cooldown=ctx.params.cooldown,
            )
        ],
        actors=[PluginActor(name="tracker", start=actor_factory(lambda: Tracker(ctx)))],
        intents=[JOINED.intent, LEFT.intent, SAID.intent, PRESENT.intent],
    )
