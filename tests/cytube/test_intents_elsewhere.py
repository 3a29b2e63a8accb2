"""The ``cytube.say`` and ``command.run`` handlers when the channel's room is not in this
process: as always in a single process (the line dropped, the command dead-lettered), and
on a cluster node what each hand-over verdict makes of the attempt."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest

from daz_actors.cytube.elsewhere import HandOver, HandOverResult, NotHeldHere
from daz_actors.cytube.intents import CommandRun, Say, command_run_intent, say_intent
from daz_actors.retry.handlers import AttemptContext, Checkpoint, PermanentError
from daz_actors.retry.intents import intent_data
from daz_actors.runtime.registry import Registry
from daz_actors.storage.queue_types import Lease, QueueItem, RetryStatus


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


def _attempt() -> AttemptContext:
    async def save(_checkpoint: dict[str, Any]) -> bool:
        return True

    return AttemptContext(
        event_id="e-1",
        correlation_id=None,
        attempt=1,
        lease=Lease(item_id=7, worker_id="b:1:1", lock_token=uuid.uuid4()),
        checkpoint=Checkpoint(None, save),
        registry=Registry(),  # no room here
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
async def test_an_item_handed_over_or_taken_elsewhere_ends_this_attempt_quietly(verdict):
    """Handed over (or its lease gone already), the attempt returns: the item is due again
    for the holder (or another worker has it), and nothing is said or run here."""
    for make, event_type, args in (
        (say_intent, "cytube.say", SAY_ARGS),
        (command_run_intent, "command.run", RUN_ARGS),
    ):
        elsewhere = FakeElsewhere(verdict)
        handler = make(elsewhere)
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
