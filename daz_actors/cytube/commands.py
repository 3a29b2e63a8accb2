"""Chat commands: a registry of ``!name`` handlers, per-user cooldowns, and the built-ins.

A command is ``async def cmd(ctx: CommandContext) -> str | None``; the string it returns
is said in the channel (None: say nothing). Register one with a decorator on a
`CommandRegistry` and hand the registry to the event router (see docs/commands.md)::

    commands = CommandRegistry()

    @commands.register("roll", description="roll a die: !roll [sides]")
    async def roll(ctx: CommandContext) -> str:
        sides = int(ctx.args or 6)
        return f"{ctx.username} rolled {random.randint(1, sides)}"

Raising from a command is fine: the router publishes ``command.<name>.failed`` and goes on.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import attrs

from daz_actors._version import __version__
from daz_actors.cytube.protocol import SEPARATOR
from daz_actors.runtime.errors import DazActorsError, NameTaken
from daz_actors.runtime.supervisor import ChildInfo, ChildState
from daz_actors.storage import queue

if TYPE_CHECKING:
    from daz_actors.runtime.registry import Registry
    from daz_actors.storage.sql_messages import SqlClient

__all__ = [
    "Command",
    "CommandContext",
    "CommandFn",
    "CommandRegistry",
    "Cooldowns",
    "TreeState",
    "builtin_commands",
    "format_duration",
    "parse_command",
]

PROCESS_STARTED_AT = time.time()  # wall-clock seconds; `!uptime` counts from here

ABOUT = "a CyTube bot of supervised trio actors: it logs the channel and answers commands"

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
COOLDOWNS_KEPT = 4096  # cooldown entries kept: then expired ones go, and the oldest if need be

TreeState = Callable[[], Sequence[ChildInfo]]  # e.g. the root supervisor's which_children


@attrs.frozen(kw_only=True)
class CommandContext:
    """What a command is given: who asked, where, with which arguments, and services."""

    channel: str  # the channel the command was said in
    username: str  # who said it
    rank: float  # their CyTube rank as the router last saw it (0 if unknown)
    name: str  # the command's name, as registered
    args: str  # the rest of the line after the command name, stripped
    started_at: float  # wall-clock seconds the process started (for uptime)
    registry: Registry  # the actor registry, to reach other actors
    db: SqlClient  # the SQL gateway
    commands: CommandRegistry  # every command the router knows (for help)
    prefix: str = "!"  # the command prefix in this room
    tree_state: TreeState | None = None  # snapshot of the supervision tree, if available


CommandFn = Callable[[CommandContext], Awaitable[str | None]]


@attrs.frozen(kw_only=True)
class Command:
    """A registered command."""

    name: str  # what follows the prefix, lower case
    fn: CommandFn  # the handler; its return value is the reply
    description: str  # one line, shown by !help
    min_rank: float = 0  # users below this rank are ignored
    # seconds a user waits before running it again; None: the room's command_cooldown
    cooldown: float | None = None


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid command name {name!r}: use 1-32 lower-case letters, digits, '_' or '-', "
            "starting with a letter or digit, without the prefix"
        )
    return name


class CommandRegistry:
    """Command name -> `Command`. Pass one to the router; there is no global registry."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def register(
        self, name: str, *, description: str, min_rank: float = 0, cooldown: float | None = None
    ) -> Callable[[CommandFn], CommandFn]:
        """Decorator: ``@commands.register("roll", description="roll a die")``."""

        def decorate(fn: CommandFn) -> CommandFn:
            self.add(name, fn, description=description, min_rank=min_rank, cooldown=cooldown)
            return fn

        return decorate

    def add(
        self,
        name: str,
        fn: CommandFn,
        *,
        description: str,
        min_rank: float = 0,
        cooldown: float | None = None,
    ) -> None:
        """Register `fn` as command `name` (each name once); `cooldown` seconds per user
        (None: the room's ``command_cooldown``)."""
        _check_name(name)
        if name in self._commands:
            raise NameTaken(f"a command named {name!r} is already registered")
        if not callable(fn):
            raise TypeError(f"command {name!r}: handler must be an async function, got {fn!r}")
        if not isinstance(description, str) or not description.strip():
            raise ValueError(f"command {name!r}: description must be a non-empty string")
        if isinstance(min_rank, bool) or not isinstance(min_rank, int | float):
            raise TypeError(f"command {name!r}: min_rank must be a number, got {min_rank!r}")
        if not math.isfinite(min_rank):
            raise ValueError(f"command {name!r}: min_rank must be finite, got {min_rank!r}")
        if cooldown is not None and (
            isinstance(cooldown, bool)
            or not isinstance(cooldown, int | float)
            or not math.isfinite(cooldown)
            or cooldown < 0
        ):
            raise ValueError(
                f"command {name!r}: cooldown must be a finite number of seconds >= 0 or None, "
                f"got {cooldown!r}"
            )
        self._commands[name] = Command(
            name=name, fn=fn, description=description.strip(), min_rank=min_rank,
            cooldown=None if cooldown is None else float(cooldown),
        )  # fmt: skip

    def include(self, other: CommandRegistry) -> None:
        """Add every command of `other` (`NameTaken` on a clash)."""
        for command in other:
            self.add(
                command.name, command.fn, description=command.description,
                min_rank=command.min_rank, cooldown=command.cooldown,
            )  # fmt: skip

    def get(self, name: str) -> Command | None:
        """The command called `name` (case-insensitive), or None."""
        return self._commands.get(name.lower())

    def visible_to(self, rank: float) -> list[Command]:
        """Commands a user of `rank` may run, sorted by name."""
        return sorted(
            (c for c in self._commands.values() if rank >= c.min_rank), key=lambda c: c.name
        )

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._commands)

    def __iter__(self) -> Iterator[Command]:
        return iter(sorted(self._commands.values(), key=lambda c: c.name))

    def __len__(self) -> int:
        return len(self._commands)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._commands


def parse_command(text: str, prefix: str) -> tuple[str, str] | None:
    """``(name, args)`` if `text` is a command line (``"!roll 20"`` -> ``("roll", "20")``)."""
    if not prefix or not text.startswith(prefix):
        return None
    parts = text[len(prefix) :].split(maxsplit=1)
    if not parts or text[len(prefix) : len(prefix) + 1].isspace():
        return None  # "!" alone, or "! help"
    return parts[0].lower(), parts[1].strip() if len(parts) > 1 else ""


class Cooldowns:
    """Per-user, per-command cooldowns: pure bookkeeping, the caller passes the time."""

    def __init__(self, seconds: float) -> None:
        if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"cooldown must be a finite number of seconds >= 0, got {seconds!r}")
        self.seconds = float(seconds)
        self._until: dict[tuple[str, str], float] = {}  # in the order the cooldowns started

    def allow(
        self, username: str, command: str, now: float, *, seconds: float | None = None
    ) -> bool:
        """True (and the cooldown of `seconds`, default this one's, starts) if `username`
        may run `command` at `now`."""
        key = (username.lower(), command)
        until = self._until.get(key)
        if until is not None and now < until:
            return False
        self._until.pop(key, None)  # re-inserted last: the dict stays in start order
        if len(self._until) >= COOLDOWNS_KEPT:
            self._until = {k: t for k, t in self._until.items() if now < t}
            while len(self._until) >= COOLDOWNS_KEPT:  # all still cooling down: the oldest go
                del self._until[next(iter(self._until))]
        self._until[key] = now + (self.seconds if seconds is None else seconds)
        return True

    def __len__(self) -> int:
        return len(self._until)


def format_duration(seconds: float) -> str:
    """``"2h 3m 4s"``: whole seconds, from the largest non-zero unit (days at most)."""
    total = max(0, int(seconds))
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    parts: list[str] = []
    for suffix, size in units:
        value, total = divmod(total, size)
        if value or parts or suffix == "s":
            parts.append(f"{value}{suffix}")
    return " ".join(parts)


def summarize_tree(children: Sequence[ChildInfo]) -> str:
    """``"tree: 9 actors, 8 running, 1 backing_off (room:x/connection), 3 restarts"``."""
    states: Counter[ChildState] = Counter()
    restarts = 0
    troubled: list[str] = []

    def walk(infos: Sequence[ChildInfo]) -> None:
        nonlocal restarts
        for info in infos:
            states[info.state] += 1
            restarts += info.restarts
            if info.state is not ChildState.RUNNING:
                troubled.append(info.registered_as)
            if info.children:
                walk(info.children)

    walk(children)
    parts = [f"tree: {sum(states.values())} actors"]
    parts += [f"{n} {state.value}" for state, n in sorted(states.items(), key=lambda s: s[0].value)]
    if troubled:
        shown = ", ".join(troubled[:3]) + (", ..." if len(troubled) > 3 else "")
        parts.append(f"not running: {shown}")
    parts.append(f"{restarts} restarts")
    return ", ".join(parts)


HELP_SEPARATOR = SEPARATOR  # between commands: a long answer is split there


async def _help(ctx: CommandContext) -> str:
    """Every command the asker may run here (the room's registry holds the plugins' too),
    in one reply: the connection splits it at CyTube's limit, between two commands."""
    visible = ctx.commands.visible_to(ctx.rank)
    return "Commands: " + HELP_SEPARATOR.join(
        f"{ctx.prefix}{c.name}: {c.description}" for c in visible
    )


async def _about(_ctx: CommandContext) -> str:
    return f"daz-actors {__version__}: {ABOUT}"


async def _uptime(ctx: CommandContext) -> str:
    return f"up {format_duration(time.time() - ctx.started_at)}"


async def _debug(ctx: CommandContext) -> str:
    # partial answers beat none: each part reports its own trouble
    parts: list[str] = []
    try:
        status = await ctx.db.status()
    except DazActorsError as exc:
        parts.append(f"db: no status ({type(exc).__name__})")
    else:
        parts.append(
            f"db: {'connected' if status.connected else 'not connected'}, breaker "
            f"{status.breaker.value}, {status.failures}/{status.calls} calls failed"
        )
    try:
        rows = await ctx.db.run(queue.stats, name="command.debug", timeout=5.0)
    except DazActorsError as exc:
        code = getattr(exc, "code", None) or type(exc).__name__
        parts.append(f"queue: unavailable ({code})")
    else:
        by_status: Counter[str] = Counter()
        for row in rows:
            by_status[row.status.value] += row.item_count
        counts = ", ".join(f"{s} {n}" for s, n in sorted(by_status.items()))
        parts.append(f"queue: {counts or 'empty'}")
    if ctx.tree_state is not None:
        parts.append(summarize_tree(ctx.tree_state()))
    return " · ".join(parts)


def builtin_commands(*, debug_min_rank: float = 2) -> CommandRegistry:
    """A fresh registry with ``help``, ``about``, ``uptime`` and ``debug``."""
    commands = CommandRegistry()
    commands.add("help", _help, description="list the commands you can use")
    commands.add("about", _about, description="what this bot is")
    commands.add("uptime", _uptime, description="how long the bot has been running")
    commands.add(
        "debug", _debug, description="breaker, retry queue and tree state",
        min_rank=debug_min_rank,
    )  # fmt: skip
    return commands
