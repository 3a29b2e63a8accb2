"""The demo's invariants and screen: each invariant breaks when its promise does."""

from __future__ import annotations

from datetime import UTC, datetime

import attrs
import pytest

from daz_actors import BreakerState, ChildInfo, ChildState, GatewayStatus, Restart
from daz_actors.app.demo_report import (
    ChaosStep,
    ChatLedger,
    Findings,
    SaidOnce,
    check_invariants,
    render_screen,
    render_status_line,
    render_summary,
    render_tree,
)
from daz_actors.cytube.events import ConnectionStatus
from daz_actors.ops.metrics import ConnectionSnapshot, Snapshot
from daz_actors.storage.queue_types import QueueStats, RetryStatus

DEAD, PENDING, DONE = RetryStatus.DEAD_LETTER, RetryStatus.PENDING, RetryStatus.COMPLETED


GOOD_TELL = SaidOnce(asked="a note", stored=True, delivered=True, echoes=1)
GOOD_REMINDER = SaidOnce(asked="a reminder", stored=True, delivered=True, echoes=1)


def ledger() -> ChatLedger:
    return ChatLedger(confirmed=["a1", "a2", "!poison"], uncertain=["maybe"], refused=2)


def healthy(**changes: object) -> Findings:
    found = Findings(
        stored={"a1": 1, "a2": 1, "!poison": 1},
        queue={(DEAD, "command.run"): 1, (DONE, "sql.exec"): 12},
        poisons_sent=1,
        websocket_drops=2,
        reconnects=2,
        connection=ConnectionStatus.JOINED,
        breaker=BreakerState.CLOSED,
        database_connected=True,
        killed=("sql-gateway",),
        restarted_by_kill=("sql-gateway",),
        not_running=(),
        faults_planned=7,
        faults_done=7,
        tells=(GOOD_TELL,),
        reminders=(GOOD_REMINDER,),
    )
    return attrs.evolve(found, **changes)


def broken(found: Findings) -> list[str]:
    return [inv.name for inv in check_invariants(ledger(), found) if not inv.held]


def test_a_healthy_run_holds_every_invariant():
    invariants = check_invariants(ledger(), healthy())
    assert len(invariants) == 13
    assert all(inv.held for inv in invariants), invariants
    summary = render_summary(invariants, ledger())
    assert "every invariant held" in summary
    assert "2 line(s) refused" in summary
    assert "1 line(s) whose confirmation was lost" in summary


def test_an_uncertain_line_may_be_stored_or_not():
    assert broken(healthy(stored={"a1": 1, "a2": 1, "!poison": 1, "maybe": 1})) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"faults_done": 6}, "every fault was injected"),
        (
            {"faults_done": 6, "faults_failed": ("poison: the server was down",)},
            "every fault was injected",
        ),
        ({"stored": {"a1": 1, "!poison": 1}}, "every chat line sent is stored"),
        ({"stored": {"a1": 2, "a2": 1, "!poison": 1}}, "no chat line is stored twice"),
        (
            {"stored": {"a1": 1, "a2": 1, "!poison": 1, "ghost": 1}},
            "nothing stored that was not sent",
        ),
        ({"queue": {(DONE, "command.run"): 1}}, "the poison event was dead-lettered"),
        (
            {"queue": {(DEAD, "command.run"): 1, (DEAD, "sql.exec"): 1}},
            "nothing else was dead-lettered",
        ),
        (
            {"queue": {(DEAD, "command.run"): 1, (PENDING, "sql.exec"): 3}},
            "the retry queue drained",
        ),
        (
            {"connection": ConnectionStatus.DISCONNECTED},
            "the bot rejoined after every websocket drop",
        ),
        ({"reconnects": 1}, "the bot rejoined after every websocket drop"),
        ({"restarted_by_kill": ()}, "killed actors were restarted by their supervisors"),
        ({"killed": ()}, "killed actors were restarted by their supervisors"),
        ({"not_running": ("retry",)}, "every actor is running"),
        ({"breaker": BreakerState.OPEN}, "the database is back and the breaker closed"),
        ({"database_connected": False}, "the database is back and the breaker closed"),
        (
            {"tells": (attrs.evolve(GOOD_TELL, echoes=2),)},
            "every !tell was delivered exactly once",
        ),
        (
            {"tells": (attrs.evolve(GOOD_TELL, delivered=False, echoes=0),)},
            "every !tell was delivered exactly once",
        ),
        (
            {"tells": (attrs.evolve(GOOD_TELL, stored=False),)},
            "every !tell was delivered exactly once",
        ),
        (
            {"reminders": (attrs.evolve(GOOD_REMINDER, echoes=0),)},
            "every !remind fired exactly once",
        ),
        (
            {"reminders": (attrs.evolve(GOOD_REMINDER, echoes=2),)},
            "every !remind fired exactly once",
        ),
    ],
)
def test_each_invariant_breaks_alone(changes, expected):
    found = healthy(**changes)
    assert broken(found) == [expected]
    summary = render_summary(check_invariants(ledger(), found), ledger())
    assert f"[FAIL] {expected}" in summary
    assert "INVARIANTS BROKEN" in summary


def test_missing_lines_are_named():
    (inv,) = [i for i in check_invariants(ledger(), healthy(stored={})) if not i.held][:1]
    assert "3 sent, 0 stored" in inv.detail
    assert "'a1'" in inv.detail


def child(name: str, **kw: object) -> ChildInfo:
    base = {
        "name": name,
        "registered_as": name,
        "state": ChildState.RUNNING,
        "restart": Restart.PERMANENT,
        "restarts": 0,
        "incarnation": 1,
        "last_error": None,
        "backoff_until": None,
        "mailbox_depth": 0,
        "children": None,
    }
    return ChildInfo(**{**base, **kw})  # type: ignore[arg-type]


def snap(**kw: object) -> Snapshot:
    gateway = GatewayStatus(
        connected=True,
        database="postgresql://x",
        breaker=BreakerState.OPEN,
        failure_ratio=1.0,
        breaker_transitions=1,
        calls=10,
        failures=4,
        in_flight=0,
    )
    now = datetime.now(UTC)
    row = QueueStats(
        status=DEAD,
        event_type="command.run",
        plugin=None,
        item_count=1,
        oldest_created_at=now,
        earliest_next_retry_at=now,
        max_retry_count=3,
        avg_retry_count=3.0,
    )
    conn = ConnectionSnapshot(
        channel="demo",
        status=ConnectionStatus.JOINED,
        reason="logged in as bot",
        reconnects=2,
        received=5,
        sent=1,
        last_media_update=None,
    )
    base = {
        "tree_configured": True,
        "root_running": True,
        "tree_stopping": False,
        "actors": (),
        "gateway_configured": True,
        "gateway": gateway,
        "gateway_error": None,
        "queue": (row,),
        "queue_error": None,
        "connections": (conn,),
    }
    return Snapshot(**{**base, **kw})  # type: ignore[arg-type]


def test_the_tree_shows_states_restarts_and_their_reasons():
    gateway = child(
        "sql-gateway",
        restarts=1,
        restarts_by_reason=(("Killed", 1),),
        mailbox_depth=4,
        redelivered=1,
    )
    storage = child("storage", children=(gateway, child("retry", restarts=1)))
    lines = list(render_tree([storage]))
    assert lines[0].split() == ["storage", "running", "restarts", "0"]
    assert "restarts 1 (Killed 1)" in lines[1]
    assert "mailbox 4" in lines[1]
    assert "redelivered 1" in lines[1]
    assert lines[1].startswith("    sql-gateway")  # nested one level deeper


def test_the_screen_and_the_status_line_show_what_matters():
    book = ChatLedger(confirmed=["x", "y"])
    line = render_status_line(3.0, 20, book, 1, snap())
    assert "2 sent, 1 stored" in line
    assert "breaker open" in line
    assert "1 dead letters" in line
    assert "joined (reconnects 2)" in line
    screen = render_screen(
        elapsed=3.0,
        duration=20,
        ledger=book,
        stored=None,
        snap=snap(queue=None, gateway=None),
        tree=[child("rooms")],
        chaos=[ChaosStep(at=2.5, what="stopped PostgreSQL")],
        header="demo",
    )
    assert "2 sent, ? stored" in screen
    assert "database: no answer" in screen
    assert "queue: unavailable" in screen
    assert "[  2.5s] stopped PostgreSQL" in screen
