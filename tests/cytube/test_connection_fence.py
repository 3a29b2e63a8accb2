"""The connection's fence (daz_actors/cytube/fence.py): checked at each write and each
event, so a process that wakes up late says and passes on nothing once it may no longer
act in the channel, whatever its other tasks have not noticed yet."""

from __future__ import annotations

import pytest
import trio

from daz_actors.cytube.codec import Event
from daz_actors.cytube.connection import ConnectionParams, CytubeConnection, LeaseLost


class SwitchFence:
    """A fence the test closes by hand."""

    def __init__(self) -> None:
        self.open = True
        self.vacated_calls = 0

    def is_open(self) -> bool:
        return self.open

    async def wait_closed(self) -> None:
        await trio.sleep_forever()  # the checks at the write and at the event are the subject

    @property
    def token(self) -> int | None:
        return 1

    def vacated(self) -> None:
        self.vacated_calls += 1


def connection(fence: SwitchFence) -> CytubeConnection:
    return CytubeConnection(ConnectionParams(server="http://127.0.0.1:9", channel="c"), fence=fence)


async def test_a_chat_line_is_refused_at_the_write_once_the_fence_is_closed():
    """The send function the sender gets writes while the fence is open, and raises
    `LeaseLost` without writing once it is closed."""
    fence = SwitchFence()
    written: list[str] = []

    async def send(frame: str) -> None:
        written.append(frame)

    fenced = connection(fence)._fenced(send)
    await fenced("first")
    fence.open = False
    with pytest.raises(LeaseLost):
        await fenced("second")
    assert written == ["first"]


async def test_an_event_received_after_the_fence_closed_is_not_passed_on():
    """An event read once the fence is closed ends the session (`LeaseLost`) before it
    reaches the router (which would log it or answer it), and is counted."""
    fence = SwitchFence()
    conn = connection(fence)
    fence.open = False
    chat = Event(name="chatMsg", args=({"username": "u", "msg": "!about", "time": 1},))
    with pytest.raises(LeaseLost):
        await conn._on_event(None, None, chat)  # type: ignore[arg-type]  # not reached
    assert conn.dropped_fenced == 1
