"""The rooms subtree: one room per channel, and channels added while the bot runs."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from cytube_peer import fixtures

from daz_actors import ChildSpec, EventBus, Registry, Strategy, Supervisor, default_kinds
from daz_actors.app.config import load_config
from daz_actors.cytube.rooms import RoomsParams, build_rooms, room_spec
from daz_actors.runtime.kinds import BuildContext
from daz_actors.storage.sql_gateway import SqlGateway, SqlGatewayParams
from daz_actors.testing import fast_policy, open_tree, poll

cytube_peer = fixtures.cytube_peer
cytube_peer_factory = fixtures.cytube_peer_factory


@pytest.fixture(autouse=True)
def password(monkeypatch):
    """The bot's password comes from the environment, as in production."""
    monkeypatch.setenv("DAZ_CYTUBE_PASSWORD", "secret")


async def in_channels(peer: Any, channels: list[str]) -> None:
    async def joined() -> bool:
        chans = (await trio.to_thread.run_sync(peer.state))["channels"]
        return all("bot" in chans.get(c, {}).get("users", []) for c in channels)

    await poll(joined, timeout=30, interval=0.1)


async def test_rooms_join_each_channel_and_take_new_ones_at_run_time(pg, cytube_peer):
    """Each configured channel gets a room; a room added later joins too, and stopping the
    tree leaves every channel."""
    cytube_peer.add_account("bot", "secret")
    registry, bus = Registry(), EventBus()
    config = load_config(None, default_kinds())
    params = RoomsParams(server=cytube_peer.url, channels=("one", "two"), name="bot",
                         reconnect_initial=0.1, reconnect_max=0.5)  # fmt: skip
    context = BuildContext(name="rooms", config=config, registry=registry, bus=bus, resources={})
    rooms = build_rooms(params, context)
    root = Supervisor(
        "daz",
        [
            ChildSpec(name="sql-gateway", start=SqlGateway(SqlGatewayParams(), pg.dsn)),
            ChildSpec(name="rooms", start=rooms, shutdown_timeout=None),
        ],
        policy=fast_policy(Strategy.REST_FOR_ONE),
        registry=registry,
        bus=bus,
    )
    async with open_tree(root):
        await in_channels(cytube_peer, ["one", "two"])
        assert [c.name for c in rooms.which_children()] == ["room:one", "room:two"]
        assert "room:one/connection" in registry
        assert "room:two/event-router" in registry
        await rooms.start_child(room_spec("three", params, context))
        await in_channels(cytube_peer, ["one", "two", "three"])
        connection = registry.lookup("room:three/connection")
        assert connection.name == "room:three/connection"
        await rooms.terminate_child("room:three")
        assert "room:three/connection" not in registry
    state = await trio.to_thread.run_sync(cytube_peer.state)
    assert all("bot" not in chan["users"] for chan in state["channels"].values())


def test_channel_passwords_are_per_channel_and_never_in_a_repr():
    """Each channel's connection gets its own password source; a password given in the
    file never shows in a repr."""
    from daz_actors.cytube.rooms import RoomsParams

    params = RoomsParams(
        channels=("a", "b"),
        channel_password_env={"a": "A_PASSWORD"},
        channel_passwords={"b": "letmein"},
    )
    assert params.connection("a").channel_password_env == "A_PASSWORD"
    assert params.connection("b").resolved_channel_password() == "letmein"
    assert params.connection("a").resolved_channel_password() == ""
    assert "letmein" not in repr(params)
    assert "letmein" not in repr(params.connection("b"))
