"""The event bus: pattern matching, delivery, overflow policies, and the FailureEvent type."""

from __future__ import annotations

import logging
import re
import time

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from strategies import topic_segments, topics

from daz_actors import EventBus, FailureEvent, Overflow, Published
from daz_actors.runtime.bus import Subscription, validate_topic
from daz_actors.runtime.events import Intent
from daz_actors.runtime.mailbox import Mailbox
from daz_actors.runtime.ref import ActorRef


def make_ref(name: str = "sub", capacity: int = 10) -> tuple[ActorRef, Mailbox]:
    """A real ref over a real mailbox of `capacity` messages."""
    mailbox = Mailbox(name, capacity)
    return ActorRef(mailbox), mailbox


def drain(mailbox: Mailbox) -> list[Published]:
    """Everything queued in `mailbox` now, oldest first."""
    out = []
    while mailbox.depth:
        out.append(mailbox._receive.receive_nowait())
    return out


def failure(topic: str = "sql.exec.failed", **changes: object) -> FailureEvent:
    """A FailureEvent with plausible fields."""
    fields: dict[str, object] = {
        "topic": topic,
        "source": "sql-gateway",
        "operation": "sql_operation",
        "event_type": "sql.execute",
        "error": "connection lost",
        "retryable": True,
    }
    fields.update(changes)
    return FailureEvent(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        ("*.failed", "sql.exec.failed", True),
        ("*.failed", "cytube.send.failed", True),
        ("*.failed", "command.uptime.failed", True),
        ("*.failed", "failed", False),
        ("*.failed", "sql.exec.failed.later", False),
        ("*.failed", "sql.exec.unfailed", False),
        ("sql.*", "sql.query.failed", True),
        ("sql.*", "sql.exec", True),
        ("sql.*", "sql", False),
        ("sql.*", "nosql.query.failed", False),
        ("sql.*", "cytube.sql.failed", False),
        ("*.error", "sql.exec.error", True),
        ("*.timeout", "sql.exec.timeout", True),
        ("*.timeout", "sql.exec.timeouts", False),
        ("sql.exec.failed", "sql.exec.failed", True),
        ("sql.exec.failed", "SQL.exec.failed", False),
        ("*", "anything.at.all", True),
    ],
)
def test_pattern_matching(pattern: str, topic: str, matches: bool) -> None:
    """Glob patterns match whole dotted topics, and ``*`` may span dots."""
    ref, _ = make_ref()
    sub = Subscription(pattern=pattern, ref=ref, overflow=Overflow.DROP)
    assert sub.matches(topic) is matches


@given(segments=st.lists(topic_segments, min_size=1, max_size=4), last=topic_segments)
def test_suffix_pattern_matches_exactly_topics_ending_in_that_segment(
    segments: list[str], last: str
) -> None:
    """``*.X`` matches a topic if and only if its last dotted segment is X."""
    ref, _ = make_ref()
    sub = Subscription(pattern="*.failed", ref=ref, overflow=Overflow.DROP)
    topic = ".".join([*segments, last])
    assert sub.matches(topic) is (last == "failed")


@given(topic=topics(min_segments=2), prefix=topic_segments)
def test_prefix_pattern_matches_exactly_topics_under_that_prefix(topic: str, prefix: str) -> None:
    """``P.*`` matches a topic if and only if the topic starts with ``P.``."""
    ref, _ = make_ref()
    sub = Subscription(pattern=f"{prefix}.*", ref=ref, overflow=Overflow.DROP)
    assert sub.matches(topic) is topic.startswith(prefix + ".")
    assert sub.matches(f"{prefix}.{topic}")


@given(topic=topics())
def test_generated_topics_are_valid(topic: str) -> None:
    """Every dotted name of allowed segments passes validation."""
    validate_topic(topic)


async def test_publish_delivers_published_into_the_subscriber_mailbox() -> None:
    """A matching subscriber receives `Published(topic, event)` holding the very event."""
    bus = EventBus()
    ref, mailbox = make_ref()
    sub = bus.subscribe("*.failed", ref)
    event = failure()
    assert await bus.publish("sql.exec.failed", event) == 1
    message = await mailbox.get()
    assert message == Published(topic="sql.exec.failed", event=event)
    assert message.event is event
    assert (sub.delivered, sub.dropped, bus.published, bus.dropped) == (1, 0, 1, 0)


async def test_publish_reaches_only_matching_subscribers() -> None:
    """Each matching subscription gets one copy; non-matching ones get nothing."""
    bus = EventBus()
    failed_ref, failed_box = make_ref("failed")
    sql_ref, sql_box = make_ref("sql")
    other_ref, other_box = make_ref("other")
    bus.subscribe("*.failed", failed_ref)
    bus.subscribe("sql.*", sql_ref)
    bus.subscribe("cytube.*", other_ref)
    assert await bus.publish("sql.query.failed", "e1") == 2
    assert await bus.publish("sql.query.ok", "e2") == 1
    assert await bus.publish("health.tick", "e3") == 0
    assert [m.event for m in drain(failed_box)] == ["e1"]
    assert [m.event for m in drain(sql_box)] == ["e1", "e2"]
    assert drain(other_box) == []
    assert bus.published == 3


async def test_subscribing_after_a_publish_sees_later_events() -> None:
    """A topic published before anyone subscribed still reaches a later subscriber."""
    bus = EventBus()
    assert await bus.publish("sql.exec.failed", "before") == 0
    ref, mailbox = make_ref()
    bus.subscribe("sql.*", ref)
    assert await bus.publish("sql.exec.failed", "after") == 1
    assert [m.event for m in drain(mailbox)] == ["after"]


async def test_unsubscribe_stops_delivery_and_is_idempotent() -> None:
    """After `unsubscribe` nothing more is delivered, and a second call is harmless."""
    bus = EventBus()
    ref, mailbox = make_ref()
    sub = bus.subscribe("sql.*", ref)
    await bus.publish("sql.a", 1)
    bus.unsubscribe(sub)
    bus.unsubscribe(sub)
    assert await bus.publish("sql.b", 2) == 0
    assert [m.event for m in drain(mailbox)] == [1]
    assert bus.subscriptions() == []


async def test_drop_policy_counts_drops_when_the_mailbox_is_full(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """DROP: events that find the mailbox full are counted on the subscription and the bus,
    and logged once per interval, never lost silently."""
    bus = EventBus()
    ref, mailbox = make_ref("slow", capacity=1)
    sub = bus.subscribe("*.failed", ref, overflow=Overflow.DROP)
    with caplog.at_level(logging.WARNING, logger="daz_actors.bus"):
        assert await bus.publish("a.failed", "first") == 1
        assert await bus.publish("b.failed", "second") == 0
        assert await bus.publish("c.failed", "third") == 0
    assert (sub.delivered, sub.dropped) == (1, 2)
    assert bus.dropped == 2
    assert bus.published == 3
    assert ref.full_count == 2
    assert [m.event for m in drain(mailbox)] == ["first"]
    drops = [r for r in caplog.records if r.name == "daz_actors.bus"]
    assert len(drops) == 1  # rate limited
    assert "slow" in drops[0].getMessage()
    assert "b.failed" in drops[0].getMessage()


async def test_drop_to_one_subscriber_does_not_affect_another() -> None:
    """A full DROP subscriber loses the event; a roomy one still gets it."""
    bus = EventBus()
    slow_ref, _ = make_ref("slow", capacity=1)
    fast_ref, fast_box = make_ref("fast", capacity=10)
    slow = bus.subscribe("x.*", slow_ref)
    fast = bus.subscribe("x.*", fast_ref)
    for i in range(3):
        await bus.publish("x.y", i)
    assert (slow.delivered, slow.dropped) == (1, 2)
    assert (fast.delivered, fast.dropped) == (3, 0)
    assert [m.event for m in drain(fast_box)] == [0, 1, 2]


async def test_block_policy_waits_for_room() -> None:
    """BLOCK: publishing to a full mailbox waits until the subscriber reads, then delivers."""
    bus = EventBus()
    ref, mailbox = make_ref("retry", capacity=1)
    sub = bus.subscribe("*.failed", ref, overflow=Overflow.BLOCK)
    await bus.publish("a.failed", "first")
    returned: list[int] = []

    async def publisher() -> None:
        returned.append(await bus.publish("b.failed", "second"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher)
        await trio.testing.wait_all_tasks_blocked()
        assert returned == []  # still waiting for room
        assert mailbox.depth == 1
        first = await mailbox.get()
        assert first.event == "first"
        await trio.testing.wait_all_tasks_blocked()
        assert returned == [1]
    assert [m.event for m in drain(mailbox)] == ["second"]
    assert (sub.delivered, sub.dropped, bus.dropped) == (2, 0, 0)
    assert ref.full_count == 0


@pytest.mark.parametrize("overflow", list(Overflow))
async def test_stopped_subscriber_is_unsubscribed(overflow: Overflow) -> None:
    """A subscriber whose mailbox was closed for good is dropped from the bus on publish."""
    bus = EventBus()
    gone_ref, gone_box = make_ref("gone")
    live_ref, live_box = make_ref("live")
    gone = bus.subscribe("sql.*", gone_ref, overflow=overflow)
    live = bus.subscribe("sql.*", live_ref, overflow=overflow)
    gone_box.close()
    assert await bus.publish("sql.exec.failed", "e") == 1
    assert bus.subscriptions() == [live]
    assert gone.delivered == 0
    assert gone.dropped == 0  # a stopped subscriber is not a slow one
    assert [m.event for m in drain(live_box)] == ["e"]


async def test_block_publisher_is_released_when_the_subscriber_stops() -> None:
    """A publisher waiting on a full BLOCK subscriber returns once that subscriber stops."""
    bus = EventBus()
    ref, mailbox = make_ref("retry", capacity=1)
    bus.subscribe("x.*", ref, overflow=Overflow.BLOCK)
    await bus.publish("x.a", 1)
    returned: list[int] = []

    async def publisher() -> None:
        returned.append(await bus.publish("x.b", 2))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher)
            await trio.testing.wait_all_tasks_blocked()
            assert returned == []
            mailbox.close()
    assert returned == [0]
    assert bus.subscriptions() == []


@pytest.mark.parametrize(
    "topic",
    ["", "sql..failed", ".sql", "sql.", "sql.*", "sql exec", "sql/exec", "sql.exec\n", 42, None],
)
async def test_invalid_topics_raise(topic: object) -> None:
    """Publishing on a topic that is not a dotted name raises ValueError and counts nothing."""
    bus = EventBus()
    ref, mailbox = make_ref()
    bus.subscribe("*", ref)
    with pytest.raises(ValueError, match="invalid topic"):
        await bus.publish(topic, "e")  # type: ignore[arg-type]
    assert bus.published == 0
    assert mailbox.depth == 0


@pytest.mark.parametrize("pattern", ["", None, 7])
def test_invalid_patterns_raise(pattern: object) -> None:
    """Subscribing with an empty or non-string pattern raises ValueError."""
    bus = EventBus()
    ref, _ = make_ref()
    with pytest.raises(ValueError, match="invalid topic pattern"):
        bus.subscribe(pattern, ref)  # type: ignore[arg-type]
    assert bus.subscriptions() == []


def test_default_overflow_is_drop() -> None:
    """A subscription made without a policy drops (and counts) rather than blocking."""
    bus = EventBus()
    ref, _ = make_ref()
    assert bus.subscribe("*.failed", ref).overflow is Overflow.DROP


def test_failure_event_defaults() -> None:
    """Optional FailureEvent fields default to empty, and ids and time are filled in."""
    before = time.time()
    event = failure()
    after = time.time()
    assert event.error_code is None
    assert event.channel is None
    assert event.intent is None
    assert re.fullmatch(r"[0-9a-f]{32}", event.event_id)
    assert re.fullmatch(r"[0-9a-f]{32}", event.correlation_id)
    assert event.event_id != event.correlation_id
    assert before <= event.occurred_at <= after


def test_failure_event_ids_are_unique() -> None:
    """Every new FailureEvent gets its own event id and correlation id."""
    events = [failure() for _ in range(500)]
    assert len({e.event_id for e in events}) == 500
    assert len({e.correlation_id for e in events}) == 500
    assert not {e.event_id for e in events} & {e.correlation_id for e in events}


def test_failure_event_keeps_given_fields() -> None:
    """Fields given explicitly, such as a correlation id carried over, are kept as given."""
    event = failure(
        "cytube.send.failed",
        source="connection",
        operation="cytube_command",
        event_type="cytube.send_chat",
        error="websocket closed",
        error_code="1006",
        retryable=False,
        intent=Intent(name="cytube.say", version=1, args={"msg": "hi"}),
        channel="lobby",
        event_id="e-1",
        correlation_id="c-1",
        occurred_at=12.5,
    )
    assert attrs.asdict(event) == {
        "topic": "cytube.send.failed",
        "source": "connection",
        "operation": "cytube_command",
        "event_type": "cytube.send_chat",
        "error": "websocket closed",
        "error_code": "1006",
        "retryable": False,
        "intent": {"name": "cytube.say", "version": 1, "args": {"msg": "hi"}},
        "plugin": None,
        "channel": "lobby",
        "event_id": "e-1",
        "correlation_id": "c-1",
        "occurred_at": 12.5,
    }


def test_failure_event_is_frozen_and_keyword_only() -> None:
    """FailureEvent cannot be changed after creation and takes keyword arguments only."""
    event = failure()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.error = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        FailureEvent("sql.exec.failed", "a", "b", "c", "d", True)  # type: ignore[call-arg, arg-type]
    with pytest.raises(TypeError, match="retryable"):
        FailureEvent(  # type: ignore[call-arg]
            topic="t.failed", source="s", operation="o", event_type="e", error="x"
        )


def test_failure_event_copies_keep_the_correlation_id() -> None:
    """A retry attempt made with attrs.evolve keeps the correlation id it follows."""
    first = failure()
    again = attrs.evolve(first, error="still failing")
    assert again.correlation_id == first.correlation_id
    assert again.event_id == first.event_id
    assert again.error == "still failing"
