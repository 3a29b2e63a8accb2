"""The local chat server lets a joining socket into the channel's room before it sends the
history replay, as CyTube does (``channel.js`` ``acceptUser``: ``socket.join`` first, then
the modules' ``onUserPostJoin`` sends the chat buffer): a line said while the join frames
go out reaches the joiner, live or in the replay, never neither.

The soak lost a line to that window (docs: bench/README.md, soak run 2): the server sent
the replay with an ``await`` per frame and only then entered the room.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from daz_actors.cytube.local_server import CytubePeer, Options, Session


class RecordingSio:
    """The two calls `CytubePeer.accept` makes, with rooms and what each socket got."""

    def __init__(self) -> None:
        self.rooms: defaultdict[str, set[str]] = defaultdict(set)
        self.got: defaultdict[str, list[tuple[str, Any]]] = defaultdict(list)
        self.on_emit: Any = None

    async def emit(
        self, event: str, data: Any = None, *, to: str | None = None, room: str | None = None,
        skip_sid: str | None = None, **_: Any,
    ) -> None:  # fmt: skip
        targets = {to} if to is not None else self.rooms[room or ""] - {skip_sid}
        for sid in targets:
            self.got[sid].append((event, data))
        if self.on_emit is not None:
            await self.on_emit(event, to)

    async def enter_room(self, sid: str, room: str) -> None:
        self.rooms[room].add(sid)


def test_a_line_said_while_a_socket_joins_reaches_it():
    """bob speaks while the bot's join frames are being sent (after its first history
    line): the bot gets bob's line."""

    async def scenario() -> list[str]:
        peer = CytubePeer(Options())
        sio = RecordingSio()
        peer.sio = sio
        bob = Session(sid="bob", ip="127.0.0.1", name="bob", logged_in=True, global_rank=1)
        bot = Session(sid="bot", ip="127.0.0.1")
        peer.sessions = {"bob": bob, "bot": bot}
        await peer.accept(bob, "demo")
        await peer.broadcast_chat("demo", "bob", "before the join", {})
        said = False

        async def speak_mid_join(event: str, to: str | None) -> None:
            nonlocal said
            if to == "bot" and event == "chatMsg" and not said:  # the replay has begun
                said = True
                await peer.broadcast_chat("demo", "bob", "during the join", {})

        sio.on_emit = speak_mid_join
        await peer.accept(bot, "demo")
        assert said
        return [data["msg"] for event, data in sio.got["bot"] if event == "chatMsg"]

    lines = asyncio.run(scenario())
    assert "before the join" in lines  # the replay
    assert "during the join" in lines  # live: the bot was in the room by then
