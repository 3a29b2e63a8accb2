"""The failure capture keeps an event when the SQL gateway is down mid-restart."""

from __future__ import annotations

import trio

from daz_actors import ActorCrashed, ChildSpec, EventBus, FailureEvent, Registry, Supervisor
from daz_actors.retry.capture import capture_with_spool
from daz_actors.retry.policies import RetryPolicy
from daz_actors.runtime.events import Intent
from daz_actors.runtime.mailbox import Mailbox
from daz_actors.runtime.ref import ActorRef
from daz_actors.storage.spool import Spool
from daz_actors.testing import fast_policy, open_tree, wait_until


async def test_an_event_is_spooled_when_the_gateway_crashed_not_lost(tmp_path):
    """A gateway whose supervisor restarts its group answers asks with ActorCrashed at
    once; the capture spools the event (as for an unreachable database), and does not
    crash and lose it."""
    registry, bus = Registry(), EventBus()
    gateway_box = Mailbox("sql-gateway", 10)
    registry.register("sql-gateway", ActorRef(gateway_box))
    gateway_box.mark_down(lambda: ActorCrashed("actor 'sql-gateway' crashed: Killed"))
    spool_path = tmp_path / "spool"
    capture = capture_with_spool(
        spool_path=spool_path,
        spool_max_bytes=1 << 20,
        gateway="sql-gateway",
        patterns=("*.failed",),
        ignore_event_types=(),
        policies={"default": RetryPolicy()},
    )
    root = Supervisor(
        "root",
        [ChildSpec(name="retry-capture", start=capture, redeliver=3)],
        policy=fast_policy(),
        registry=registry,
        bus=bus,
    )
    event = FailureEvent(
        topic="chat.log.failed",
        source="test",
        operation="sql_operation",
        event_type="chat.log",
        error="gateway crashed",
        retryable=True,
        intent=Intent(name="chat.log", version=1, args={"event_id": "x"}),
    )
    async with open_tree(root):
        await bus.publish("chat.log.failed", event)
        await wait_until(lambda: root.which_children()[0].mailbox_depth == 0)
        info = root.which_children()[0]
        await wait_until(lambda: spool_path.exists() and spool_path.stat().st_size > 0)
    assert info.restarts == 0
    spool = Spool(spool_path, 1 << 20)
    try:
        assert [item.event_id for item in spool.pending()] == [event.event_id]
    finally:
        spool.close()


async def test_an_outages_warning_count_is_logged_by_the_next_spool_drain(
    tmp_path, monkeypatch, caplog
):
    """The capture's summarised outage warnings are flushed from the spool drains the
    dispatcher asks for: their count comes as a line of its own once the interval has
    passed, not only with the next warning of the same kind."""
    import logging

    from daz_actors.retry import capture as capture_module
    from daz_actors.retry.capture import DrainSpool
    from daz_actors.runtime.log_summary import RepeatedWarnings

    monkeypatch.setattr(
        capture_module, "outage", RepeatedWarnings(capture_module.log, interval=0.5)
    )
    registry, bus = Registry(), EventBus()
    gateway_box = Mailbox("sql-gateway", 10)
    registry.register("sql-gateway", ActorRef(gateway_box))
    gateway_box.mark_down(lambda: ActorCrashed("actor 'sql-gateway' crashed: Killed"))
    capture = capture_with_spool(
        spool_path=tmp_path / "spool",
        spool_max_bytes=1 << 20,
        gateway="sql-gateway",
        patterns=("*.failed",),
        ignore_event_types=(),
        policies={"default": RetryPolicy()},
    )
    root = Supervisor(
        "root",
        [ChildSpec(name="retry-capture", start=capture)],
        policy=fast_policy(),
        registry=registry,
        bus=bus,
    )

    def flushed() -> bool:
        return any(
            r.getMessage().startswith("spool.wait: ") and "more like this" in r.getMessage()
            for r in caplog.records
        )

    with caplog.at_level(logging.WARNING, logger="daz_actors.retry"):
        async with open_tree(root):
            ref = registry.lookup("retry-capture")
            for n in range(4):  # the first is spooled, the others wait behind it
                await bus.publish("chat.log.failed", FailureEvent(
                    topic="chat.log.failed", source="test", operation="sql_operation",
                    event_type="chat.log", error="down", retryable=True,
                    intent=Intent(name="chat.log", version=1, args={"event_id": f"e{n}"}),
                ))  # fmt: skip
            with trio.fail_after(20):
                while not flushed():
                    await ref.ask(DrainSpool(), timeout=10)  # the dispatcher's poll
                    await trio.sleep(0.1)
