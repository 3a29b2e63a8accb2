"""The ``cytube.say`` and ``command.run`` handlers when the channel's room is not in this
process: as always in a single process (the line dropped, the command dead-lettered), and
on a cluster node what each hand-over verdict makes of the attempt."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest
import trio

from daz_actors.cytube.elsewhere import HandOver, HandOverResult, NotHeldHere
from daz_actors.cytube.intents import CommandRun, Say, command_run_intent, say_intent
from daz_actors.cytube.sender import CannotSpeak
from daz_actors.retry.handlers import AttemptContext, Checkpoint, ItemReleased, PermanentError
from daz_actors.retry.intents import intent_data
from daz_actors.runtime.actor import ActorContext
from daz_actors.runtime.bus import EventBus
from daz_actors.runtime.mailbox import Ask
from daz_actors.runtime.registry import Registry
from daz_actors.runtime.supervisor import ChildSpec, Supervisor
from daz_actors.storage.queue_types import Lease, QueueItem, RetryStatus
from daz_actors.testing import fast_policy, open_tree


class FakeElsewhere:
    """An `Elsewhere` that answers `verdict` and records what it was offered."""

    def __init__(self, verdict: HandOver) -> None:
        self.verdict = verdict
        self.offers: list[tuple[str, int, bool]] = []

    async def hand_over(
        self, channel: str, ctx: AttemptContext, *, only_elsewhere: bool = False
    ) -> HandOverResult:
        self.offers.append((channel, ctx.lease.item_id, only_elsewhere))
        return HandOverResult(verdict=self.verdict, holder="node-a", hand_overs=3)


def _item(event_type: str, args: Any, intent: Any) -> QueueItem:
    return cast(
        QueueItem,
        _FakeItem(
            id=7,
            event_id=f"{event_type}-1",
            event_type=event_type,
            event_data=intent_data(intent.intent(args)),
            status=RetryStatus.PROCESSING,
        ),
    )


class _FakeItem:
    """The fields of a queue item an intent handler reads."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


def _attempt(registry: Registry | None = None) -> AttemptContext:
    async def save(_checkpoint: dict[str, Any]) -> bool:
        return True

    return AttemptContext(
        event_id="e-1",
        correlation_id=None,
        attempt=1,
        lease=Lease(item_id=7, worker_id="b:1:1", lock_token=uuid.uuid4()),
        checkpoint=Checkpoint(None, save),
        registry=registry or Registry(),  # none: no room here
        db=cast(Any, None),  # not reached: the fake hands over
    )


SAY_ARGS = Say(channel="room1", msg="hello")
RUN_ARGS = CommandRun(
    channel="room1", command="about", username="dave", rank=0.0, args="", issued_at=0.0
)


async def test_in_a_single_process_a_line_with_no_room_is_dropped_and_a_command_dead_letters():
    """No `Elsewhere` (one process): the line's attempt succeeds (dropped, logged) and the
    command's is a permanent error naming the channel, as before clusters."""
    say = say_intent()
    await say(_item("cytube.say", SAY_ARGS, say), _attempt())
    run = command_run_intent()
    with pytest.raises(PermanentError, match="no room for channel 'room1' in this process"):
        await run(_item("command.run", RUN_ARGS, run), _attempt())


@pytest.mark.parametrize("verdict", [HandOver.HANDED_OVER, HandOver.LOST])
async def test_an_item_handed_over_or_taken_elsewhere_ends_this_attempt_released(verdict):
    """Handed over (or its lease gone already), the attempt raises `ItemReleased`: the
    worker writes nothing for it (the item is due again for the holder, or another worker
    has it), and nothing is said or run here."""
    for make, event_type, args in (
        (say_intent, "cytube.say", SAY_ARGS),
        (command_run_intent, "command.run", RUN_ARGS),
    ):
        elsewhere = FakeElsewhere(verdict)
        handler = make(elsewhere)
        with pytest.raises(ItemReleased, match="room1"):
            await handler(_item(event_type, args, handler), _attempt())
        assert elsewhere.offers == [("room1", 7, False)]


async def test_an_unserved_channel_dead_letters_and_an_exhausted_item_fails_retryably():
    """No node holds or lists the channel: a permanent error saying so. Handed over too
    often: `NotHeldHere` (retryable: the attempt counts, so it ends as a dead letter)."""
    for make, event_type, args in (
        (say_intent, "cytube.say", SAY_ARGS),
        (command_run_intent, "command.run", RUN_ARGS),
    ):
        unserved = make(FakeElsewhere(HandOver.UNSERVED))
        with pytest.raises(PermanentError, match="no node serves channel 'room1'"):
            await unserved(_item(event_type, args, unserved), _attempt())
        exhausted = make(FakeElsewhere(HandOver.EXHAUSTED))
        with pytest.raises(NotHeldHere, match=r"held by node-a.* 3 hand-overs") as caught:
            await exhausted(_item(event_type, args, exhausted), _attempt())
        assert caught.value.retryable is True


async def _mute_connection(
    ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """A room's connection that cannot speak (its fence closed): every ask fails so."""
    task_status.started()
    while True:
        message = await ctx.mailbox.get()
        if isinstance(message, Ask):
            message.fail(CannotSpeak("the bot cannot speak in room1: the lease was lost"))


@pytest.mark.parametrize(
    ("verdict", "offered"),
    [(None, False), (HandOver.STAY, True), (HandOver.HANDED_OVER, True)],
)
async def test_a_line_the_room_here_cannot_say_goes_to_another_holder_or_is_dropped(
    verdict, offered
):
    """The room is here but cannot speak: in one process the line is dropped; on a cluster
    node it is offered only to another holder (`only_elsewhere`): handed over (the attempt
    raises `ItemReleased`) when one holds the channel, else (stay) dropped as in one
    process, the attempt ending without an error."""
    registry = Registry()
    room = Supervisor(
        "room:room1",
        [ChildSpec(name="connection", start=_mute_connection)],
        policy=fast_policy(),
        registry=registry,
        bus=EventBus(),
        prefix="room:room1/",
    )
    elsewhere = FakeElsewhere(verdict) if verdict is not None else None
    say = say_intent(elsewhere)
    with trio.fail_after(10):
        async with open_tree(room):
            if verdict is HandOver.HANDED_OVER:
                with pytest.raises(ItemReleased, match="handed over"):
                    await say(_item("cytube.say", SAY_ARGS, say), _attempt(registry))
            else:
                await say(_item("cytube.say", SAY_ARGS, say), _attempt(registry))
    if elsewhere is not None:
        assert elsewhere.offers == ([("room1", 7, True)] if offered else [])
