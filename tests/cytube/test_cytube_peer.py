"""The CyTube test peer itself, driven by a raw Engine.IO v4 client over trio-websocket.

These pin the behaviour the connection tests rely on (DESIGN section 8): the handshake, the
join sequence with buffered history, login, chat echo and limits, PMs, user events, kicks,
the per-IP connection budget, discovery, and the fixture's restart and freeze.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from cytube_peer import fixtures
from cytube_peer.fixtures import PeerProcess
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

import daz_actors
from daz_actors.cytube.codec import (
    Connect,
    ConnectError,
    Disconnect,
    Event,
    OpenPacket,
    Packet,
    Ping,
    Pong,
    decode,
    encode,
    encode_event,
)
from daz_actors.testing import wait_until

# the peer's fixtures, found by pytest under these names
cytube_peer = fixtures.cytube_peer
cytube_peer_factory = fixtures.cytube_peer_factory

DEADLINE = 5.0  # seconds to wait for any one expected frame
CHANNEL = "testchan"
JOIN_SEQUENCE = [
    "setPermissions",
    "setPlaylistLocked",
    "emoteList",
    "setMotd",
    "channelOpts",
    "playlist",
    "userlist",
    "usercount",
    "changeMedia",
]


class RawClient:
    """A minimal CyTube client: raw frames in and out, pings answered while reading."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.frames: list[str] = []  # every text frame received, pings included
        self.rank: Any = None  # the last `rank` seen by `login`

    async def frame(self) -> str:
        """The next text frame, raw."""
        with trio.fail_after(DEADLINE):
            message = await self.ws.get_message()
        assert isinstance(message, str)
        self.frames.append(message)
        return message

    async def packet(self) -> Packet:
        """The next packet other than a ping (which is answered)."""
        while True:
            packet = decode(await self.frame())
            if isinstance(packet, Ping):
                await self.ws.send_message(encode(Pong(data=packet.data)))
                continue
            return packet

    async def event(self, *names: str) -> Event:
        """The next event named one of ``names`` (any event if none), skipping others."""
        while True:
            packet = await self.packet()
            if isinstance(packet, Event) and (not names or packet.name in names):
                return packet

    async def drain(self) -> None:
        """Read packets until the connection closes (`ConnectionClosed`)."""
        while True:
            await self.packet()

    async def emit(self, name: str, *args: Any) -> None:
        await self.ws.send_message(encode_event(name, *args))

    async def join(self, channel: str = CHANNEL) -> list[Event]:
        """``joinChannel``; the events of the join sequence up to ``changeMedia``."""
        await self.emit("joinChannel", {"name": channel})
        events = []
        while not events or events[-1].name != "changeMedia":
            events.append(await self.event(*JOIN_SEQUENCE, "chatMsg"))
        return events

    async def login(self, name: str, pw: str | None = None) -> dict[str, Any]:
        """``login``; the server's ``login`` answer (a ``rank`` before it, as CyTube sends
        one first on success, is kept in ``self.rank``)."""
        await self.emit("login", {"name": name} if pw is None else {"name": name, "pw": pw})
        while (event := await self.event("login", "rank")).name == "rank":
            self.rank = event.args[0]
        return event.args[0]  # type: ignore[no-any-return]


@asynccontextmanager
async def raw_client(peer: PeerProcess) -> AsyncIterator[RawClient]:
    """A websocket with the Engine.IO open packet read and nothing sent yet.

    The TCP stream is ours and closed here: when the server closes the websocket first
    (a kick), trio-websocket 0.12's ``aclose`` returns early and never closes it.
    """
    async with trio.open_nursery() as nursery:
        stream = await trio.open_tcp_stream("127.0.0.1", peer.port)
        try:
            ws = await wrap_client_stream(
                nursery, stream, "127.0.0.1", "/socket.io/?EIO=4&transport=websocket"
            )
            try:
                client = RawClient(ws)
                assert isinstance(await client.packet(), OpenPacket)
                yield client
            finally:
                await ws.aclose()
        finally:
            await stream.aclose()


@asynccontextmanager
async def connected(peer: PeerProcess) -> AsyncIterator[RawClient]:
    """A client past ``40`` and the ``rank`` event."""
    async with raw_client(peer) as client:
        await client.ws.send_message("40")
        assert isinstance(await client.packet(), Connect)
        assert (await client.event()).name == "rank"
        yield client


@asynccontextmanager
async def member(peer: PeerProcess, name: str, pw: str | None = None) -> AsyncIterator[RawClient]:
    """A client logged in as ``name`` and joined to `CHANNEL`."""
    async with connected(peer) as client:
        assert (await client.login(name, pw))["success"]
        await client.join()
        yield client


def http_get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=DEADLINE) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


async def test_socketconfig(cytube_peer: PeerProcess) -> None:
    """Discovery names the server's own loopback URL, insecure, for any channel."""
    status, body = await trio.to_thread.run_sync(http_get, cytube_peer.socketconfig_url("any"))
    assert status == 200
    assert body == {"servers": [{"url": cytube_peer.url, "secure": False}]}


async def test_handshake_frames(cytube_peer: PeerProcess) -> None:
    """The open packet announces the configured ping timings, then 40 gets 40{sid} and rank -1."""
    async with raw_client(cytube_peer) as client:
        open_frame = json.loads(client.frames[0][1:])
        assert client.frames[0][0] == "0"
        assert open_frame["pingInterval"] == 1000
        assert open_frame["pingTimeout"] == 2000
        assert open_frame["upgrades"] == []
        assert open_frame["maxPayload"] == 1_048_576
        await client.ws.send_message("40")
        answer = await client.frame()
        assert answer.startswith("40{")
        assert isinstance(json.loads(answer[2:])["sid"], str)
        assert await client.frame() == '42["rank",-1]'


async def test_server_pings_and_client_pong(cytube_peer: PeerProcess) -> None:
    """The server sends "2" pings every ping interval and keeps a client that answers them."""
    async with connected(cytube_peer) as client:
        for _ in range(3):  # three cycles: past interval + timeout, so pongs were accepted
            with trio.fail_after(10):
                while await client.frame() != "2":
                    pass
            await client.ws.send_message("3")
        state = cytube_peer.state()
        assert len(state["sessions"]) == 1


async def test_join_sequence_with_buffered_history(cytube_peer: PeerProcess) -> None:
    """joinChannel gets the CyTube sequence in order, with the last 15 chat lines as history."""
    for i in range(17):
        cytube_peer.say(CHANNEL, "alice", f"line {i}")
    cytube_peer.add_user(CHANNEL, "carol", rank=2)
    async with connected(cytube_peer) as client:
        events = await client.join()
    names = [e.name for e in events]
    assert names == [*JOIN_SEQUENCE[:3], *["chatMsg"] * 15, *JOIN_SEQUENCE[3:]]
    history = [e.args[0] for e in events if e.name == "chatMsg"]
    assert [line["msg"] for line in history] == [f"line {i}" for i in range(2, 17)]
    assert all(line["username"] == "alice" and line["meta"] == {} for line in history)
    assert all(isinstance(line["time"], int) for line in history)
    by_name = {e.name: e.args[0] for e in events}
    assert by_name["emoteList"] == []
    assert by_name["playlist"] == []
    assert [(u["name"], u["rank"]) for u in by_name["userlist"]] == [("carol", 2)]
    assert {"profile", "meta"} <= set(by_name["userlist"][0])
    assert by_name["usercount"] == 2  # carol and this anonymous socket
    media = by_name["changeMedia"]
    assert {"title", "id", "type", "seconds"} <= set(media)
    assert media["paused"] is False
    assert media["currentTime"] >= 0


async def test_no_change_media_when_nothing_plays(
    cytube_peer_factory: Callable[..., PeerProcess],
) -> None:
    """With no media configured the join sequence ends at usercount and no mediaUpdate comes."""
    peer = cytube_peer_factory(media=None)
    async with connected(peer) as client:
        await client.emit("joinChannel", {"name": CHANNEL})
        names = [(await client.event()).name for _ in range(len(JOIN_SEQUENCE) - 1)]
        assert names == JOIN_SEQUENCE[:-1]
        peer.set_media(CHANNEL, title="Now playing", seconds=60)
        change = await client.event()
        assert change.name == "changeMedia"
        assert change.args[0]["title"] == "Now playing"
        update = await client.event()
        assert update.name == "mediaUpdate"
        assert set(update.args[0]) == {"currentTime", "paused"}


async def test_login_success_rank_and_chat_echo(cytube_peer: PeerProcess) -> None:
    """An account login succeeds with rank 1, and the sender gets the echo of its own chat."""
    cytube_peer.add_account("bot", "secret")
    async with connected(cytube_peer) as client:
        await client.join()
        assert await client.login("bot", "secret") == {"success": True, "name": "bot"}
        assert client.rank == 1
        assert (await client.event("addUser")).args[0]["name"] == "bot"
        await client.emit("chatMsg", {"msg": "hello", "meta": {}})
        echo = (await client.event("chatMsg")).args[0]
        assert (echo["username"], echo["msg"], echo["meta"]) == ("bot", "hello", {})
        assert isinstance(echo["time"], int)


async def test_guest_login(cytube_peer: PeerProcess) -> None:
    """A login without a password is a guest (rank 0) unless the name is registered."""
    cytube_peer.add_account("owner", "pw")
    async with connected(cytube_peer) as client:
        refused = await client.login("owner")
        assert refused == {"success": False, "error": "That username is registered."}
        assert await client.login("visitor") == {"success": True, "name": "visitor", "guest": True}
        assert client.rank == 0


async def test_wrong_password_then_chat_is_dropped(cytube_peer: PeerProcess) -> None:
    """A failed login gets CyTube's error, and that socket's chat is dropped without a word."""
    cytube_peer.add_account("bot", "secret")
    async with connected(cytube_peer) as client:
        await client.join()
        failed = await client.login("bot", "wrong")
        assert failed == {"success": False, "error": "Invalid username/password combination"}
        await client.emit("chatMsg", {"msg": "anyone there?", "meta": {}})
        await cytube_peer.wait_state(lambda s: s["chat_received"])
        cytube_peer.say(CHANNEL, "alice", "marker")
        assert (await client.event("chatMsg")).args[0]["msg"] == "marker"
    state = cytube_peer.state()
    assert [(c["msg"], c["outcome"]) for c in state["chat_received"]] == [
        ("anyone there?", "not_logged_in")
    ]
    assert [msg["msg"] for msg in state["channels"][CHANNEL]["history"]] == ["marker"]
    assert state["logins"][0]["success"] is False


async def test_chat_reaches_everyone_cut_at_320(cytube_peer: PeerProcess) -> None:
    """A long chat message is cut to 320 characters and echoed to every socket in the channel."""
    async with member(cytube_peer, "alice") as alice, member(cytube_peer, "bob") as bob:
        await alice.emit("chatMsg", {"msg": "x" * 400, "meta": {"modflair": 0}})
        for client in (alice, bob):
            line = (await client.event("chatMsg")).args[0]
            assert line["username"] == "alice"
            assert line["msg"] == "x" * 320
            assert line["meta"] == {"modflair": 0}


async def test_burst_then_cooldown(cytube_peer: PeerProcess) -> None:
    """Past a burst of 20 chat messages the rest are dropped and the sender gets cooldown."""
    async with member(cytube_peer, "spammer") as client:
        for i in range(30):
            await client.emit("chatMsg", {"msg": f"m{i}", "meta": {}})
        cooldown = await client.event("cooldown")
        assert isinstance(cooldown.args[0], int | float)
        assert cooldown.args[0] > 0
        state = await cytube_peer.wait_state(lambda s: len(s["chat_received"]) == 30)
    outcomes = [c["outcome"] for c in state["chat_received"]]
    assert outcomes[:20] == ["broadcast"] * 20
    assert outcomes.count("throttled") >= 8  # 10/s refill adds at most a couple while sending
    history = state["channels"][CHANNEL]["history"]
    assert len(history) == 15
    assert history[-1]["msg"] == f"m{outcomes.count('broadcast') - 1}"


async def test_pm_delivered_and_echoed(cytube_peer: PeerProcess) -> None:
    """A PM goes to the recipient and back to the sender; an absent recipient gets errorMsg."""
    async with member(cytube_peer, "alice") as alice, member(cytube_peer, "bob") as bob:
        await alice.emit("pm", {"to": "bob", "msg": "psst", "meta": {}})
        for client in (bob, alice):
            pm = (await client.event("pm")).args[0]
            assert (pm["username"], pm["to"], pm["msg"], pm["meta"]) == ("alice", "bob", "psst", {})
            assert isinstance(pm["time"], int)
        await alice.emit("pm", {"to": "nobody", "msg": "hello?", "meta": {}})
        error = (await alice.event("errorMsg")).args[0]
        assert "nobody" in error["msg"]
        assert cytube_peer.pm(CHANNEL, "bob", "from control", sender="carol") == 1
        pm = (await bob.event("pm")).args[0]
        assert (pm["username"], pm["msg"]) == ("carol", "from control")


async def test_pm_refusals_follow_chat_js(cytube_peer: PeerProcess) -> None:
    """handlePm's refusals, worded as the real server words them: to oneself (any case), an
    invalid name, an absent user, and a socket not signed in; a blank PM is delivered."""
    async with member(cytube_peer, "alice") as alice, member(cytube_peer, "bob") as bob:
        for to, expected in [
            ("ALICE", "You can't PM yourself!"),
            ("no way", "PM failed: no way isn't a valid username."),
            ("Nobody", "PM failed: nobody isn't connected to this channel."),
        ]:
            await alice.emit("pm", {"to": to, "msg": "hello?", "meta": {}})
            assert (await alice.event("errorMsg", "pm")).args[0] == {"msg": expected}
        await alice.emit("pm", {"to": "bob", "msg": "   ", "meta": {}})
        assert (await bob.event("pm")).args[0]["msg"] == "   "
    async with connected(cytube_peer) as guest:
        await guest.join()
        await guest.emit("pm", {"to": "alice", "msg": "hi", "meta": {}})
        assert (await guest.event("errorMsg")).args[0] == {
            "msg": "You must be signed in to send PMs"
        }
    outcomes = [(p["to"], p["outcome"]) for p in cytube_peer.state()["pm_received"]]
    assert outcomes == [
        ("ALICE", "self"),
        ("no way", "invalid_name"),
        ("Nobody", "no_such_user"),
        ("bob", "delivered"),
        ("alice", "not_logged_in"),
    ]


async def test_add_user_and_user_leave(cytube_peer: PeerProcess) -> None:
    """Others get addUser when a user joins and userLeave when it disconnects, fake ones too."""
    async with member(cytube_peer, "alice") as alice:
        async with member(cytube_peer, "bob"):
            added = (await alice.event("addUser")).args[0]
            assert (added["name"], added["rank"]) == ("bob", 0)
        assert (await alice.event("userLeave")).args[0] == {"name": "bob"}
        assert cytube_peer.add_user(CHANNEL, "dave", rank=3) == 2
        assert (await alice.event("addUser")).args[0]["name"] == "dave"
        assert (await alice.event("usercount")).args == (2,)
        assert cytube_peer.remove_user(CHANNEL, "dave")
        assert (await alice.event("userLeave")).args[0] == {"name": "dave"}


async def test_kick_then_disconnect(cytube_peer: PeerProcess) -> None:
    """A kick from the control API sends kick {reason}, then 41, then closes the websocket."""
    async with member(cytube_peer, "bot") as client:
        assert cytube_peer.kick(CHANNEL, "bot", reason="Go away") == 1
        assert (await client.event("kick")).args[0] == {"reason": "Go away"}
        assert isinstance(await client.packet(), Disconnect)
        with pytest.raises(ConnectionClosed):
            await client.drain()
    await cytube_peer.wait_state(lambda s: not s["sessions"])


async def test_duplicate_login_kicks_older_socket(cytube_peer: PeerProcess) -> None:
    """A second socket of the same account joining the channel kicks the first one."""
    cytube_peer.add_account("bot", "pw")
    async with member(cytube_peer, "bot", "pw") as first, member(cytube_peer, "bot", "pw"):
        assert (await first.event("kick")).args[0] == {"reason": "Duplicate login"}


async def test_connection_budget_refuses_sixth_connect(cytube_peer: PeerProcess) -> None:
    """Five rapid connects pass; the sixth gets 44 "Rate limit exceeded"."""
    for _ in range(5):
        async with connected(cytube_peer):
            pass
    async with raw_client(cytube_peer) as client:
        await client.ws.send_message("40")
        refused = await client.packet()
        assert isinstance(refused, ConnectError)
        assert refused.message == "Rate limit exceeded"
    state = cytube_peer.state()
    assert state["connect_attempts"] == {"127.0.0.1": 6}
    assert state["refused"] == {"127.0.0.1": 1}
    cytube_peer.reset_budget()
    async with connected(cytube_peer):
        pass


async def test_spam_filter_and_channel_allowlist(
    cytube_peer_factory: Callable[..., PeerProcess],
) -> None:
    """Configured new accounts get spamFiltered, and unlisted channels are not discovered."""
    peer = cytube_peer_factory(
        channels=["lobby"], accounts={"newbie": "pw"}, new_accounts=["newbie"]
    )
    status, body = await trio.to_thread.run_sync(http_get, peer.socketconfig_url("elsewhere"))
    assert status == 404
    assert "error" in body
    async with connected(peer) as client:
        assert (await client.login("newbie", "pw"))["success"]
        await client.join("lobby")
        await client.emit("chatMsg", {"msg": "buy now", "meta": {}})
        assert (await client.event("spamFiltered", "chatMsg")).name == "spamFiltered"


async def test_freeze_stops_pings_and_thaw_resumes(cytube_peer: PeerProcess) -> None:
    """A frozen peer sends nothing past its ping interval; once thawed the pings come again."""
    async with connected(cytube_peer) as client:
        cytube_peer.freeze()
        with trio.move_on_after(1.5):  # longer than the 1 s ping interval
            frame = await client.frame()
            pytest.fail(f"a frozen peer sent {frame!r}")
        cytube_peer.thaw()
        with trio.fail_after(10):
            while await client.frame() != "2":
                pass


async def test_restart_keeps_port_and_accounts(cytube_peer: PeerProcess) -> None:
    """restart() closes live connections and serves again on the same port with the accounts."""
    cytube_peer.add_account("bot", "pw")
    port, pid = cytube_peer.port, cytube_peer.pid
    async with member(cytube_peer, "bot", "pw") as client:
        await trio.to_thread.run_sync(cytube_peer.restart)
        with pytest.raises(ConnectionClosed):
            await client.drain()
    assert (cytube_peer.port, cytube_peer.running) == (port, True)
    assert cytube_peer.pid != pid
    async with member(cytube_peer, "bot", "pw"):
        pass
    assert cytube_peer.state()["accounts"] == ["bot"]


async def test_too_many_open_connections_get_a_kick(
    cytube_peer_factory: Callable[..., PeerProcess],
) -> None:
    """Past the open-connection limit per IP, the newest socket is kicked after its rank."""
    peer = cytube_peer_factory(max_open_per_ip=1)
    async with connected(peer), connected(peer) as second:
        kick = await second.event("kick")
        assert "Too many connections" in kick.args[0]["reason"]


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting for init counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" not in state.split()[1]


async def test_the_server_exits_once_its_parent_is_gone(tmp_path):
    """Orphaned (its parent killed), the server stops by itself: a killed demo or test
    run leaves no chat server behind."""
    script = Path(daz_actors.__file__).parent / "cytube" / "local_server.py"
    launcher = await trio.run_process(
        [
            "sh",
            "-c",
            f'"{sys.executable}" "{script}" --port 0 --port-file "{tmp_path / "port"}"'
            " --parent-pid $$"
            f' > "{tmp_path / "log"}" 2>&1 & echo $!',
        ],
        capture_stdout=True,
    )
    pid = int(launcher.stdout.decode().strip())  # its parent, the launcher, is gone already
    await wait_until(lambda: (tmp_path / "port").exists(), timeout=20, interval=0.05)
    assert _running(pid)
    await wait_until(lambda: not _running(pid), timeout=20, interval=0.1)
