"""The bot under the real CyTube server's rules, as the local server plays them: channel
passwords, the rate limiter and anti-flood, login refusals, duplicate logins."""

from __future__ import annotations

import logging
from typing import Any

import trio
from cytube_peer import fixtures

from daz_actors import Actor, ChildSpec, EventBus, Registry, Supervisor, actor_factory
from daz_actors.cytube.connection import ConnectionParams, CytubeConnection
from daz_actors.cytube.events import ConnectionStatus, Delivered, SendChat
from daz_actors.cytube.pacing import MIN_ANTIFLOOD, LimiterParams
from daz_actors.ops.http import readiness
from daz_actors.ops.metrics import Sources, snapshot
from daz_actors.testing import fast_policy, open_tree, wait_until

cytube_peer = fixtures.cytube_peer
cytube_peer_factory = fixtures.cytube_peer_factory

CHANNEL = "lobby"


class Recorder(Actor):
    """Stands in for the event router."""

    async def handle(self, message: Any) -> Any:
        return None


def room(peer: Any, **params: Any) -> tuple[Supervisor, CytubeConnection]:
    settings = {"name": "bot", "password": "secret", "reconnect_initial": 0.1,
                "reconnect_max": 0.5, "connect_timeout": 5, "echo_timeout": 5,
                **params}  # fmt: skip
    connection = CytubeConnection(ConnectionParams(server=peer.url, channel=CHANNEL, **settings))
    sup = Supervisor(
        f"room:{CHANNEL}",
        [
            ChildSpec(name="connection", start=connection),
            ChildSpec(name="event-router", start=actor_factory(Recorder)),
        ],
        policy=fast_policy(),
        registry=Registry(),
        bus=EventBus(),
        prefix=f"room:{CHANNEL}/",
    )
    return sup, connection


async def joined(connection: CytubeConnection) -> None:
    await wait_until(lambda: connection.status is ConnectionStatus.JOINED, timeout=20)


async def room_health(connection: CytubeConnection) -> tuple[str, str]:
    """The room's component in /readyz."""
    component = readiness(await snapshot(Sources(connections=lambda: [connection])))[
        f"room:{CHANNEL}"
    ]
    return component.status, component.reason


def lines_by(state: dict[str, Any], name: str = "bot") -> list[dict[str, Any]]:
    return [c for c in state["chat_received"] if c.get("username") == name]


async def say_all(ref: Any, texts: list[str]) -> list[object]:
    """Ask the connection to say every text at once (in this order); every outcome."""
    results: dict[str, object] = {}

    async def say(text: str) -> None:
        try:
            results[text] = await ref.ask(SendChat(msg=text), timeout=60)
        except Exception as exc:
            results[text] = exc

    async with trio.open_nursery() as nursery:
        for text in texts:
            nursery.start_soon(say, text)
            await trio.testing.wait_all_tasks_blocked()  # each is queued before the next
    return [results[t] for t in texts]


# ---------------------------------------------------------------------------- passwords


async def test_the_channel_password_from_the_environment_lets_the_bot_in(
    cytube_peer_factory, monkeypatch, caplog
):
    """needPassword is answered with channelPassword from the configured environment
    variable; the room is joined only once the server let the bot in, and the password is
    in no log line."""
    peer = cytube_peer_factory(channel_passwords={CHANNEL: "open-sesame"})
    peer.add_account("bot", "secret")
    monkeypatch.setenv("LOBBY_PASSWORD", "open-sesame")
    caplog.set_level(logging.DEBUG)
    sup, connection = room(peer, channel_password_env="LOBBY_PASSWORD")
    async with open_tree(sup):
        await joined(connection)
        state = await trio.to_thread.run_sync(peer.state)
        assert await room_health(connection) == ("UP", "joined: logged in as bot")
    assert [(s["channel"], s["joining"]) for s in state["sessions"]] == [(CHANNEL, None)]
    assert "open-sesame" not in caplog.text


async def test_a_wrong_channel_password_is_one_error_and_a_long_wait(
    cytube_peer_factory, monkeypatch, caplog
):
    """A refused channel password: one error naming the channel, the room DOWN with its own
    reason (never joined), and the next try minutes away, not a reconnect storm."""
    peer = cytube_peer_factory(channel_passwords={CHANNEL: "open-sesame"})
    peer.add_account("bot", "secret")
    monkeypatch.setenv("LOBBY_PASSWORD", "guess")
    sup, connection = room(peer, channel_password_env="LOBBY_PASSWORD", lockout_initial=120)
    statuses: list[ConnectionStatus] = []
    async with open_tree(sup):
        await wait_until(
            lambda: (
                statuses.append(connection.status)
                or connection.status is ConnectionStatus.PASSWORD_REFUSED
            ),
            timeout=20,
        )
        health = await room_health(connection)
    assert ConnectionStatus.JOINED not in statuses
    assert health[0] == "DOWN"
    assert health[1].startswith("password_refused: channel 'lobby' refused its password")
    assert 90 <= connection.delays[-1] <= 150  # lockout_initial ±25%
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [f"room lobby: {connection.status_reason}"]
    assert "guess" not in caplog.text


async def test_a_missing_channel_password_says_so(cytube_peer_factory):
    """No password configured for a channel that needs one: DOWN, saying what to set."""
    peer = cytube_peer_factory(channel_passwords={CHANNEL: "open-sesame"})
    peer.add_account("bot", "secret")
    sup, connection = room(peer, channel_password_env="LOBBY_PASSWORD", connect_timeout=1)
    async with open_tree(sup):
        await wait_until(lambda: connection.status is ConnectionStatus.PASSWORD_REFUSED, timeout=20)
    assert "needs a password and none is configured (set it in $LOBBY_PASSWORD)" in (
        connection.status_reason
    )


# ---------------------------------------------------------------------------- pacing


async def test_a_burst_past_the_servers_limit_is_paced_never_refused_and_in_order(
    cytube_peer_factory,
):
    """30 lines asked at once (the server allows 20, then 10 a second): each is released in
    turn when the server's limiter allows it; none refused, none twice, in order."""
    peer = cytube_peer_factory()
    peer.add_account("bot", "secret")
    sup, connection = room(peer)
    texts = [f"line {n}" for n in range(30)]
    async with open_tree(sup):
        await joined(connection)
        results = await say_all(sup.ref("connection"), texts)
        state = await trio.to_thread.run_sync(peer.state)
    assert results == [Delivered(parts=1)] * 30
    assert [(c["msg"], c["outcome"]) for c in lines_by(state)] == [(t, "broadcast") for t in texts]


async def test_anti_flood_parameters_from_channel_opts_pace_the_bot_below_rank_2(
    cytube_peer_factory,
):
    """With chat_antiflood on and the bot at rank 1, the channel's anti-flood parameters
    pace its chat (none refused); a change of channelOpts applies at once; at rank 2 the
    minimum applies again."""
    params = {"burst": 2, "sustained": 5, "cooldown": 1}
    peer = cytube_peer_factory(antiflood=True, antiflood_params=params)
    peer.add_account("bot", "secret")
    sup, connection = room(peer)
    async with open_tree(sup):
        await joined(connection)
        assert connection.sender.chat_params == LimiterParams(burst=2, sustained=5, cooldown=1)
        results = await say_all(sup.ref("connection"), [f"a{n}" for n in range(6)])
        tighter = {"burst": 1, "sustained": 4, "cooldown": 1}
        await trio.to_thread.run_sync(lambda: peer.set_opts(CHANNEL, chat_antiflood_params=tighter))
        await wait_until(lambda: connection.sender.chat_params.sustained == 4, timeout=10)
        results += await say_all(sup.ref("connection"), [f"b{n}" for n in range(4)])
        await trio.to_thread.run_sync(peer.set_rank, CHANNEL, "bot", 2)
        await wait_until(lambda: connection.sender.chat_params == MIN_ANTIFLOOD, timeout=10)
        state = await trio.to_thread.run_sync(peer.state)
    assert results == [Delivered(parts=1)] * 10
    assert [c["outcome"] for c in lines_by(state)] == ["broadcast"] * 10
    assert connection.rank == 2


async def test_a_cooldown_is_pinned_on_the_refused_line_which_is_said_once(cytube_peer):
    """When the server refuses lines the bot thought allowed (its limiter was spent
    elsewhere), each cooldown is pinned on the line it refused: every line is said exactly
    once, none fails, and from the first refusal on one line at a time is in flight."""
    cytube_peer.add_account("bot", "secret")
    sup, connection = room(cytube_peer)
    texts = [f"line {n}" for n in range(5)]
    async with open_tree(sup):
        await joined(connection)
        await trio.to_thread.run_sync(cytube_peer.burn_limiter, "bot")
        results = await say_all(sup.ref("connection"), texts)
        state = await trio.to_thread.run_sync(cytube_peer.state)
    said = lines_by(state)
    assert results == [Delivered(parts=1)] * 5
    throttled = [c["msg"] for c in said if c["outcome"] == "throttled"]
    broadcast = [c["msg"] for c in said if c["outcome"] == "broadcast"]
    assert throttled  # the server did refuse
    assert sorted(broadcast) == texts  # each said once
    assert connection.sender.refused == len(throttled)
    assert connection.sender.unknown_peak == 1


# ---------------------------------------------------------------------------- logins


async def test_a_temporary_login_refusal_is_retried_after_the_time_the_server_gives(
    cytube_peer_factory,
):
    """A guest back within the server's one-guest-login-per-IP delay is refused for now:
    the room waits the time the server named and logs in again on the same connection."""
    peer = cytube_peer_factory(guest_login_delay=3)
    sup, connection = room(peer, name="guestbot", password="")
    statuses: set[ConnectionStatus] = set()
    async with open_tree(sup):
        await joined(connection)
        await trio.to_thread.run_sync(peer.kick, CHANNEL, "guestbot", "go away")
        await wait_until(
            lambda: statuses.add(connection.status) or connection.reconnects == 1, timeout=20
        )
        await wait_until(
            lambda: statuses.add(connection.status) or connection.status is ConnectionStatus.JOINED,
            timeout=20,
        )
        state = await trio.to_thread.run_sync(peer.state)
    assert ConnectionStatus.LOGIN_RETRY in statuses
    assert [(x["success"], x["error"]) for x in state["logins"]] == [
        (True, None),
        (False, "Guest logins are restricted to one per IP address per 3 seconds."),
        (True, None),
    ]
    assert connection.reconnects == 1  # logged in again without reconnecting


async def test_a_duplicate_login_kick_backs_off_for_minutes(cytube_peer, caplog):
    """When the bot's account joins the channel from elsewhere the server kicks the older
    session with "Duplicate login": that room waits minutes, says why, DOWN, one log line."""
    cytube_peer.add_account("bot", "secret")
    first, first_connection = room(cytube_peer, lockout_initial=120)
    second, second_connection = room(cytube_peer)
    async with open_tree(first):
        await joined(first_connection)
        async with open_tree(second):
            await joined(second_connection)
            await wait_until(
                lambda: first_connection.status is ConnectionStatus.DUPLICATE_LOGIN, timeout=20
            )
            health = await room_health(first_connection)
            assert second_connection.status is ConnectionStatus.JOINED
    assert health[0] == "DOWN"
    assert "Duplicate login" in health[1]
    assert 90 <= first_connection.delays[-1] <= 150
    lines = [r.getMessage() for r in caplog.records if "Duplicate login" in r.getMessage()]
    assert len([m for m in lines if "trying again in" in m]) == 1
