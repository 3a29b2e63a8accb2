"""The connection actor against a real Socket.IO v4 server playing a CyTube channel."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from cytube_peer import fixtures
from probes import listen

from daz_actors import (
    Actor,
    ChildSpec,
    EventBus,
    Overflow,
    Registry,
    Supervisor,
    actor_factory,
)
from daz_actors.cytube.connection import CannotSpeak, ConnectionParams, CytubeConnection
from daz_actors.cytube.events import (
    ChatMessage,
    ConnectionStatus,
    Delivered,
    Kicked,
    LoginResult,
    MediaChanged,
    MediaUpdate,
    PrivateMessage,
    SendChat,
    SendPrivate,
    UserJoined,
    UserLeft,
    UserList,
)
from daz_actors.runtime.mailbox import Mailbox
from daz_actors.runtime.ref import ActorRef
from daz_actors.testing import fast_policy, open_tree, wait_until

cytube_peer = fixtures.cytube_peer
cytube_peer_factory = fixtures.cytube_peer_factory

CHANNEL = "lobby"


class Recorder(Actor):
    """Stands in for the event router: keeps every event it gets."""

    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    async def handle(self, message: Any) -> Any:
        self.seen.append(message)


def room(
    peer: Any, seen: list[Any], **params: Any
) -> tuple[Supervisor, CytubeConnection, EventBus]:
    settings = {"name": "bot", "password": "secret", "reconnect_initial": 0.1,
                "reconnect_max": 0.5, "connect_timeout": 5, "echo_timeout": 3,
                **params}  # fmt: skip
    connection = CytubeConnection(ConnectionParams(server=peer.url, channel=CHANNEL, **settings))
    bus = EventBus()
    sup = Supervisor(
        f"room:{CHANNEL}",
        [
            ChildSpec(name="connection", start=connection),
            ChildSpec(name="event-router", start=actor_factory(lambda: Recorder(seen))),
        ],
        policy=fast_policy(),
        registry=Registry(),
        bus=bus,
        prefix=f"room:{CHANNEL}/",
    )
    return sup, connection, bus


def of(seen: list[Any], kind: type) -> list[Any]:
    return [e for e in seen if isinstance(e, kind)]


async def joined(connection: CytubeConnection) -> None:
    await wait_until(lambda: connection.status is ConnectionStatus.JOINED, timeout=20)


async def test_join_login_history_and_every_event_type(cytube_peer):
    """The bot discovers the server, joins, logs in, and gets every event typed; lines from
    before it joined are marked as history."""
    cytube_peer.add_account("bot", "secret")
    cytube_peer.say(CHANNEL, "early", "said before the bot came")
    seen: list[Any] = []
    sup, connection, _bus = room(cytube_peer, seen)
    async with open_tree(sup):
        await joined(connection)
        await trio.to_thread.run_sync(cytube_peer.say, CHANNEL, "ann", "hello bot")
        await trio.to_thread.run_sync(cytube_peer.add_user, CHANNEL, "carl", 1)
        await trio.to_thread.run_sync(cytube_peer.remove_user, CHANNEL, "carl")
        await trio.to_thread.run_sync(cytube_peer.pm, CHANNEL, "bot", "psst", "ann")
        await wait_until(lambda: of(seen, PrivateMessage) and of(seen, UserLeft), timeout=20)
        await wait_until(lambda: of(seen, MediaUpdate), timeout=20)
    chats = of(seen, ChatMessage)
    assert [(c.msg, c.history) for c in chats if c.username == "early"] == [
        ("said before the bot came", True)
    ]
    assert [(c.msg, c.history) for c in chats if c.username == "ann"] == [("hello bot", False)]
    assert of(seen, LoginResult)[0].success
    assert of(seen, UserList)
    assert of(seen, MediaChanged)
    assert [e.user.name for e in of(seen, UserJoined)].count("carl") == 1
    assert of(seen, PrivateMessage)[0].msg == "psst"


async def test_sending_chat_and_pm_is_confirmed_by_the_echo(cytube_peer):
    """A chat line and a PM count as delivered once echoed; a long line goes in parts."""
    cytube_peer.add_account("bot", "secret")
    cytube_peer.add_user(CHANNEL, "ann", 0)
    seen: list[Any] = []
    sup, connection, _bus = room(cytube_peer, seen)
    async with open_tree(sup):
        await joined(connection)
        ref = sup.ref("connection")
        assert await ref.ask(SendChat(msg="hello everyone"), timeout=10) == Delivered(parts=1)
        long = " ".join(["word"] * 120)  # about 600 characters: two parts
        assert await ref.ask(SendChat(msg=long), timeout=10) == Delivered(parts=2)
        state = await trio.to_thread.run_sync(cytube_peer.state)
    lines = [c for c in state["chat_received"] if c.get("username", c.get("name")) == "bot"]
    assert [c["outcome"] for c in lines] == ["broadcast"] * 3
    assert all(len(c["msg"]) <= 320 for c in lines)
    assert connection.sent == 3


async def test_pm_to_someone_present_is_delivered(cytube_peer):
    """A private message to a user in the channel is confirmed by its echo."""
    cytube_peer.add_account("bot", "secret")
    cytube_peer.add_account("ann", "pw")
    seen: list[Any] = []
    sup, connection, _bus = room(cytube_peer, seen)
    async with open_tree(sup):
        await joined(connection)
        await trio.to_thread.run_sync(cytube_peer.add_user, CHANNEL, "ann")
        reply = await sup.ref("connection").ask(SendPrivate(to="ann", msg="note"), timeout=10)
        state = await trio.to_thread.run_sync(cytube_peer.state)
    assert reply == Delivered(parts=1)
    assert [(p["to"], p["outcome"]) for p in state["pm_received"]] == [("ann", "delivered")]


async def test_a_login_refused_for_good_is_not_retried_and_sends_are_not_queued(cytube_peer):
    """A wrong account password is not taken for a working session: the room says why, the
    login is not tried again, and a send fails at once as CannotSpeak without publishing
    cytube.send.failed (no retries to burn, no dead letter)."""
    cytube_peer.add_account("bot", "right")
    seen: list[Any] = []
    sup, connection, bus = room(cytube_peer, seen, password="wrong")
    failures = Mailbox("failures", 10)
    bus.subscribe("cytube.send.failed", ActorRef(failures), overflow=Overflow.BLOCK)
    async with open_tree(sup):
        await wait_until(lambda: connection.status is ConnectionStatus.LOGIN_FAILED, timeout=20)
        with pytest.raises(CannotSpeak, match="Invalid username/password combination"):
            await sup.ref("connection").ask(SendChat(msg="can anyone hear me"), timeout=10)
        assert failures.depth == 0  # decided before the ask failed: nothing was published
        assert "Invalid username/password combination" in connection.status_reason
        state = await trio.to_thread.run_sync(cytube_peer.state)
    assert [login["success"] for login in state["logins"]] == [False]


async def test_kick_and_server_restart_are_survived_with_backoff_in_bounds(cytube_peer):
    """After a kick and after a server restart the bot reconnects and rejoins; every wait is
    inside the reconnect policy's bounds."""
    cytube_peer.add_account("bot", "secret")
    seen: list[Any] = []
    sup, connection, _bus = room(cytube_peer, seen)
    async with open_tree(sup):
        await joined(connection)
        await trio.to_thread.run_sync(cytube_peer.kick, CHANNEL, "bot", "go away")
        await wait_until(lambda: connection.reconnects >= 1, timeout=20)
        await joined(connection)
        await trio.to_thread.run_sync(cytube_peer.restart)
        await trio.to_thread.run_sync(cytube_peer.add_account, "bot", "secret")
        await wait_until(lambda: connection.reconnects >= 2, timeout=30)
        await joined(connection)
        assert await sup.ref("connection").ask(SendChat(msg="back"), timeout=10)
        assert sup.which_children()[0].restarts == 0  # reconnects, not crashes
    assert [e.reason for e in of(seen, Kicked)] == ["go away"]
    policy = connection.params.backoff()
    low, high = policy.bounds(0)
    assert low <= connection.delays[0] <= high  # after a joined session: the first step
    assert all(low <= d <= policy.max_delay for d in connection.delays), connection.delays


async def test_a_frozen_server_is_detected_by_ping_timeout(cytube_peer):
    """A server that stops sending pings is declared dead after interval + timeout."""
    cytube_peer.add_account("bot", "secret")
    seen: list[Any] = []
    sup, connection, bus = room(cytube_peer, seen)
    async with open_tree(sup):
        await joined(connection)
        states = listen(bus, f"cytube.{CHANNEL}.state")
        await trio.to_thread.run_sync(cytube_peer.freeze)
        try:
            with trio.fail_after(30):
                state = (await states.get()).event
        finally:
            await trio.to_thread.run_sync(cytube_peer.thaw)
        # the peer pings every 1 s with a 2 s timeout: silence past 3 s ends the session
        assert state.status is ConnectionStatus.DISCONNECTED
        assert "no ping from the server for 3 s" in state.reason
        assert connection.reconnects == 0  # detected, not yet reconnected
        await joined(connection)
        assert connection.reconnects == 1


async def test_resend_handler_delivers_a_queued_line_and_drops_it_when_the_bot_cannot_speak(
    cytube_peer, pg
):
    """A line queued by an earlier version (``cytube.send_chat``) is read as a ``cytube.say``
    intent; its handler says it again through the room's connection; while the bot cannot
    speak there (login refused, or no such room) the item completes without a word: it
    burns no retries and never becomes a dead letter."""
    from daz_actors.cytube.intents import SAY
    from daz_actors.retry.handlers import AttemptContext, Checkpoint
    from daz_actors.storage import queue
    from daz_actors.storage.queue_types import NewItem

    async def queued_item(conn: Any) -> Any:
        data = {"channel": CHANNEL, "msg": "queued line"}  # the legacy form
        await queue.enqueue(conn, NewItem(event_id="e-1", event_type="cytube.send_chat",
                                          event_data=data, correlation_id="c-1"))  # fmt: skip
        return (await queue.acquire(conn, "w", batch_size=1))[0]

    async with pg.trio_connection() as db:
        item = await db.call(queued_item)
    assert item.event_type == "cytube.say"
    assert item.event_data["args"]["msg"] == "queued line"

    async def save(_checkpoint: Any) -> bool:
        return True

    def context(registry: Registry) -> AttemptContext:
        return AttemptContext(
            event_id=item.event_id,
            correlation_id=item.correlation_id,
            attempt=1,
            lease=item.lease,
            checkpoint=Checkpoint(None, save),
            registry=registry,
            db=None,  # type: ignore[arg-type]  # this handler does not use the database
        )

    cytube_peer.add_account("bot", "secret")
    refused, refused_connection, _ = room(cytube_peer, [], password="wrong")
    async with open_tree(refused):
        await wait_until(
            lambda: refused_connection.status is ConnectionStatus.LOGIN_FAILED, timeout=20
        )
        await SAY(item, context(refused.registry))  # completes: dropped
    await SAY(item, context(Registry()))  # no room in this process: dropped too

    sup, connection, _ = room(cytube_peer, [])
    async with open_tree(sup):
        await joined(connection)
        await SAY(item, context(sup.registry))
        state = await trio.to_thread.run_sync(cytube_peer.state)
    said = [c["msg"] for c in state["chat_received"] if c.get("username") == "bot"]
    assert said == ["queued line"]


async def test_a_retry_of_a_long_line_sends_only_the_parts_not_delivered(cytube_peer):
    """A `cytube.say` that records one part of two as delivered says the second part only
    (through the real connection and server)."""
    from daz_actors.cytube.intents import Say

    cytube_peer.add_account("bot", "secret")
    first, second = "a" * 300, "b" * 100  # split at 320 characters: two parts
    say = Say(channel=CHANNEL, msg=f"{first} {second}", delivered_parts=1)
    sup, connection, _ = room(cytube_peer, [])
    async with open_tree(sup):
        await joined(connection)
        request = say.request(event_id="e-2", correlation_id=None)
        await sup.ref("connection").ask(request, timeout=10)
        state = await trio.to_thread.run_sync(cytube_peer.state)
    said = [
        c["msg"]
        for c in state["chat_received"]
        if c.get("username") == "bot" and c["outcome"] == "broadcast"
    ]
    assert said == [second]
