"""What ``daz-actors demo`` shows and checks: its counts, the invariants, the screen.

Everything here is pure (data in, text or verdicts out), so the invariants are tested
directly with counts that break them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import attrs

from daz_actors.cytube.events import ConnectionStatus
from daz_actors.ops.metrics import Snapshot
from daz_actors.runtime.breaker import BreakerState
from daz_actors.runtime.supervisor import ChildInfo
from daz_actors.storage.queue_types import RetryStatus

__all__ = [
    "ChaosStep",
    "ChatLedger",
    "Findings",
    "Invariant",
    "SaidOnce",
    "check_invariants",
    "render_screen",
    "render_status_line",
    "render_summary",
    "render_tree",
]

POISON_EVENT_TYPE = "command.run"  # the poison is a command that always fails


@attrs.define
class ChatLedger:
    """Every line the simulated chatters said, as the chat server confirmed it."""

    confirmed: list[str] = attrs.field(factory=list)  # the server broadcast these
    uncertain: list[str] = attrs.field(factory=list)  # no answer: maybe broadcast, maybe not
    refused: int = 0  # the server was down: not said (said again later, as a new line)


@attrs.frozen(kw_only=True)
class ChaosStep:
    """One fault the demo injected, and when (seconds since the start)."""

    at: float
    what: str
    done: bool = True  # False: it could not be injected (the error is in `what`)


@attrs.frozen(kw_only=True)
class Findings:
    """What the demo found at the end, read from the database and the running tree."""

    stored: Mapping[str, int]  # chatters' lines in daz_chat_messages: text -> rows
    queue: Mapping[tuple[RetryStatus, str], int]  # (status, event type) -> items
    poisons_sent: int  # poison commands said
    websocket_drops: int  # drops the demo caused (kicks and chat server restarts)
    reconnects: int  # the bot's reconnects, as its connection counted them
    connection: ConnectionStatus | None
    breaker: BreakerState | None  # None: the gateway did not answer
    database_connected: bool
    killed: Sequence[str]  # actors the demo killed
    restarted_by_kill: Sequence[str]  # actors whose restarts include reason "Killed"
    not_running: Sequence[str]  # actors not running at the end
    faults_planned: int = 0  # steps of the chaos schedule
    faults_failed: Sequence[str] = ()  # steps that could not be injected, with the reason
    faults_done: int = 0  # steps injected
    # the plugins' durable lines (`!tell`, `!remind`) the chatters asked for this cycle
    tells: Sequence[SaidOnce] = ()
    reminders: Sequence[SaidOnce] = ()


@attrs.frozen(kw_only=True)
class SaidOnce:
    """One message (a tell) or reminder the chatters asked the bot for, as found at the end."""

    asked: str  # the chatter's command line
    stored: bool  # the plugin's row exists
    delivered: bool  # marked delivered (the server echoed it)
    echoes: int  # the bot's line in the chat log: exactly 1 when said once


@attrs.frozen(kw_only=True)
class Invariant:
    """One promise the demo checks, and whether it held."""

    name: str
    held: bool
    detail: str


def check_invariants(ledger: ChatLedger, found: Findings) -> list[Invariant]:
    """Every invariant of the run, held or not, in the order the summary shows them."""
    confirmed = set(ledger.confirmed)
    uncertain = set(ledger.uncertain) - confirmed
    missing = sorted(confirmed - set(found.stored))
    twice = sorted(text for text, rows in found.stored.items() if rows > 1)
    unknown = sorted(set(found.stored) - confirmed - uncertain)
    dead = {
        etype: n for (status, etype), n in found.queue.items() if status is RetryStatus.DEAD_LETTER
    }
    poison_dead = dead.get(POISON_EVENT_TYPE, 0)
    other_dead = {etype: n for etype, n in dead.items() if etype != POISON_EVENT_TYPE}
    open_items = sum(
        n
        for (status, _), n in found.queue.items()
        if status in (RetryStatus.PENDING, RetryStatus.PROCESSING)
    )
    not_restarted = sorted(set(found.killed) - set(found.restarted_by_kill))
    return [
        *_base_invariants(
            found,
            missing,
            twice,
            unknown,
            poison_dead,
            other_dead,
            open_items,
            not_restarted,
            confirmed,
        ),
        _said_once("every !tell was delivered exactly once", found.tells),
        _said_once("every !remind fired exactly once", found.reminders),
    ]


def _said_once(name: str, asked: Sequence[SaidOnce]) -> Invariant:
    """Each asked line stored, marked delivered, and in the chat log once."""
    bad = [a for a in asked if not (a.stored and a.delivered and a.echoes == 1)]
    detail = f"{len(asked)} asked, {len(asked) - len(bad)} said once" if asked else "none asked"
    if bad:
        detail += "; not: " + ", ".join(
            f"{a.asked!r} (stored={a.stored}, delivered={a.delivered}, said {a.echoes}x)"
            for a in bad[:3]
        )
    return Invariant(name=name, held=not bad, detail=detail)


def _base_invariants(
    found: Findings,
    missing: list[str],
    twice: list[str],
    unknown: list[str],
    poison_dead: int,
    other_dead: dict[str, int],
    open_items: int,
    not_restarted: list[str],
    confirmed: set[str],
) -> list[Invariant]:
    return [
        Invariant(
            name="every fault was injected",
            held=found.faults_done == found.faults_planned and not found.faults_failed,
            detail=f"{found.faults_done} of {found.faults_planned}"
            + (f"; failed: {list(found.faults_failed)}" if found.faults_failed else ""),
        ),
        Invariant(
            name="every chat line sent is stored",
            held=not missing,
            detail=f"{len(confirmed)} sent, {len(confirmed) - len(missing)} stored"
            + (f"; missing: {_some(missing)}" if missing else ""),
        ),
        Invariant(
            name="no chat line is stored twice",
            held=not twice,
            detail="every line once" if not twice else f"twice or more: {_some(twice)}",
        ),
        Invariant(
            name="nothing stored that was not sent",
            held=not unknown,
            detail="none" if not unknown else f"unexpected rows: {_some(unknown)}",
        ),
        Invariant(
            name="the poison event was dead-lettered",
            held=poison_dead == found.poisons_sent,
            detail=f"{found.poisons_sent} poison command(s) sent, {poison_dead} "
            f"{POISON_EVENT_TYPE} dead letter(s)",
        ),
        Invariant(
            name="nothing else was dead-lettered",
            held=not other_dead,
            detail="none" if not other_dead else f"dead letters: {other_dead}",
        ),
        Invariant(
            name="the retry queue drained",
            held=open_items == 0,
            detail=f"{open_items} item(s) pending or processing",
        ),
        Invariant(
            name="the bot rejoined after every websocket drop",
            held=found.connection is ConnectionStatus.JOINED
            and found.reconnects >= found.websocket_drops,
            detail=f"{found.websocket_drops} drop(s), {found.reconnects} reconnect(s), "
            f"now {found.connection.value if found.connection else 'no connection'}",
        ),
        Invariant(
            name="killed actors were restarted by their supervisors",
            held=not not_restarted and bool(found.killed),
            detail=f"killed {list(found.killed)}"
            + (f"; not restarted: {not_restarted}" if not_restarted else ""),
        ),
        Invariant(
            name="every actor is running",
            held=not found.not_running,
            detail="all running" if not found.not_running else f"not: {list(found.not_running)}",
        ),
        Invariant(
            name="the database is back and the breaker closed",
            held=found.database_connected and found.breaker is BreakerState.CLOSED,
            detail=f"connected={found.database_connected}, breaker="
            f"{found.breaker.value if found.breaker else 'unknown'}",
        ),
    ]


def _some(items: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# ------------------------------------------------------------------------ the screen


def render_tree(children: Iterable[ChildInfo], indent: int = 1) -> Iterator[str]:
    """One line per actor: state, incarnation, restarts by reason, mailbox depth."""
    for child in children:
        reasons = ", ".join(f"{reason} {n}" for reason, n in child.restarts_by_reason)
        line = f"{'  ' * indent}{child.name:<{max(1, 30 - 2 * indent)}} {child.state.value:<11}"
        line += f" restarts {child.restarts}" + (f" ({reasons})" if reasons else "")
        if child.mailbox_depth:
            line += f"  mailbox {child.mailbox_depth}"
        if child.redelivered:
            line += f"  redelivered {child.redelivered}"
        yield line
        if child.children is not None:
            yield from render_tree(child.children, indent + 1)


def _queue_counts(snap: Snapshot) -> dict[RetryStatus, int]:
    counts: dict[RetryStatus, int] = {}
    for row in snap.queue or ():
        counts[row.status] = counts.get(row.status, 0) + row.item_count
    return counts


def _status_parts(
    elapsed: float, duration: float, ledger: ChatLedger, stored: int | None, snap: Snapshot
) -> list[str]:
    gateway = snap.gateway
    if gateway is None:
        database = "database: no answer"
    else:
        pool = "connected" if gateway.connected else "not connected"
        database = f"database: {pool}, breaker {gateway.breaker.value}"
    counts = _queue_counts(snap)
    queue = (
        "queue: unavailable"
        if snap.queue is None
        else f"queue: {counts.get(RetryStatus.PENDING, 0)} pending, "
        f"{counts.get(RetryStatus.PROCESSING, 0)} processing, "
        f"{counts.get(RetryStatus.DEAD_LETTER, 0)} dead letters"
    )
    conn = snap.connections[0] if snap.connections else None
    bot = (
        "bot: no connection"
        if conn is None
        else f"bot: {conn.status.value} (reconnects {conn.reconnects})"
    )
    shown = "?" if stored is None else str(stored)
    return [
        f"t={elapsed:5.1f}/{duration:g}s",
        f"chat: {len(ledger.confirmed)} sent, {shown} stored",
        bot,
        database,
        queue,
    ]


def render_status_line(
    elapsed: float, duration: float, ledger: ChatLedger, stored: int | None, snap: Snapshot
) -> str:
    """One line of progress, for output that is not a terminal."""
    return " | ".join(_status_parts(elapsed, duration, ledger, stored, snap))


def render_screen(
    *,
    elapsed: float,
    duration: float,
    ledger: ChatLedger,
    stored: int | None,
    snap: Snapshot,
    tree: Sequence[ChildInfo],
    chaos: Sequence[ChaosStep],
    header: str,
) -> str:
    """The live view: status, the supervision tree, the chaos so far."""
    parts = _status_parts(elapsed, duration, ledger, stored, snap)
    lines = [header, "", parts[0] + "   " + parts[1], parts[2], parts[3], parts[4], ""]
    lines.append("supervision tree:")
    lines.extend(render_tree(tree))
    lines.append("")
    lines.append("chaos:")
    lines.extend(f"  [{step.at:5.1f}s] {step.what}" for step in chaos)
    return "\n".join(lines)


def render_summary(invariants: Sequence[Invariant], ledger: ChatLedger) -> str:
    """The closing report: each invariant with its evidence, then the verdict."""
    lines = ["", "summary:"]
    for inv in invariants:
        mark = "ok  " if inv.held else "FAIL"
        lines.append(f"  [{mark}] {inv.name}: {inv.detail}")
    if ledger.refused:
        lines.append(f"  ({ledger.refused} line(s) refused while the chat server was down)")
    unsure = set(ledger.uncertain) - set(ledger.confirmed)
    if unsure:
        lines.append(
            f"  ({len(unsure)} line(s) whose confirmation was lost: stored or not, either is right)"
        )
    held = all(inv.held for inv in invariants)
    lines.append(
        "every invariant held: nothing was lost" if held else "INVARIANTS BROKEN (see FAIL above)"
    )
    return "\n".join(lines)
