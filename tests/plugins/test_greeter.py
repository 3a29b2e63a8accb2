"""The greeter plugin in the real tree: greetings on join from the config, a cooldown that
survives a restart, never the bot or guests, !greet off|on; its params checked."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from builtin_harness import ask, bot_joined, bot_lines, database, make_config, run, said
from cytube_peer import fixtures

from daz_actors.app.runner import RunningSystem
from daz_actors.runtime.errors import ConfigError

cytube_peer = fixtures.cytube_peer
cytube_peer_factory = fixtures.cytube_peer_factory

GREETER = """
[plugins.greeter]
enabled = true
greetings = ["welcome, {name}!"]
command_cooldown = 0
"""


def _setup(cytube_peer: Any, tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAZ_CYTUBE_PASSWORD", "secret")
    cytube_peer.add_account("bot", "secret")


async def _join(peer: Any, name: str, rank: int = 1) -> None:
    await trio.to_thread.run_sync(peer.add_user, "lobby", name, rank)


async def _leave(peer: Any, name: str) -> None:
    await trio.to_thread.run_sync(peer.remove_user, "lobby", name)


async def _greetings(peer: Any) -> list[str]:
    return [x for x in await trio.to_thread.run_sync(bot_lines, peer) if x.startswith("welcome")]


def test_greets_once_per_cooldown_across_a_restart_never_guests(
    cytube_peer, pg, tmp_path, monkeypatch
):
    """A registered user is greeted on join, not again on a rejoin within the cooldown,
    nor after the bot restarts; a guest and the bot itself are never greeted."""
    _setup(cytube_peer, tmp_path, monkeypatch)
    config, kinds = make_config(pg.dsn, cytube_peer.url, GREETER)
    seen: dict[str, Any] = {}

    async def first(system: RunningSystem) -> None:
        async with database(pg.dsn) as db:
            await bot_joined(cytube_peer)
            await _join(cytube_peer, "ann")
            await said(cytube_peer, lambda r: r == "welcome, ann!")
            await db.until("SELECT count(*) FROM daz_greeter_users WHERE lname = 'ann'")
            seen["cooldown"] = await db.value(
                "SELECT extract(epoch FROM next_greet_at - last_greeted_at)"
                " FROM daz_greeter_users WHERE lname = 'ann'"
            )
            await _leave(cytube_peer, "ann")
            await _join(cytube_peer, "ann")
            await _join(cytube_peer, "gus", rank=0)  # a guest
            # the greeter handles joins in order: once bob is greeted, ann's rejoin and
            # gus's join were handled
            await _join(cytube_peer, "bob")
            await said(cytube_peer, lambda r: r == "welcome, bob!")
            seen["first"] = await _greetings(cytube_peer)

    async def second(system: RunningSystem) -> None:
        await bot_joined(cytube_peer)
        await _leave(cytube_peer, "ann")
        await _join(cytube_peer, "ann")
        await _join(cytube_peer, "cat")
        await said(cytube_peer, lambda r: r == "welcome, cat!")
        seen["second"] = await _greetings(cytube_peer)

    run(config, kinds, first)
    run(config, kinds, second)
    assert 45 * 60 <= seen["cooldown"] <= 3 * 3600
    assert seen["first"] == ["welcome, ann!", "welcome, bob!"]
    assert seen["second"] == ["welcome, ann!", "welcome, bob!", "welcome, cat!"]


def test_greet_off_and_on(cytube_peer, pg, tmp_path, monkeypatch):
    """!greet off stops the greetings of the user who says it, !greet on brings them back
    (with no cooldown configured, every join would be greeted); guests are greeted when
    greet_guests is on."""
    _setup(cytube_peer, tmp_path, monkeypatch)
    plugins = GREETER + "cooldown_min = 0\ncooldown_max = 0\ngreet_guests = true\n"
    config, kinds = make_config(pg.dsn, cytube_peer.url, plugins)
    seen: dict[str, Any] = {}

    async def check(system: RunningSystem) -> None:
        await bot_joined(cytube_peer)
        await _join(cytube_peer, "dan")
        await said(cytube_peer, lambda r: r == "welcome, dan!")
        seen["off"] = await ask(cytube_peer, "dan", "!greet off", lambda r: "dan" in r)
        seen["state"] = await ask(cytube_peer, "dan", "!greet", lambda r: "dan" in r)
        await _leave(cytube_peer, "dan")
        await _join(cytube_peer, "dan")
        await _join(cytube_peer, "gil", rank=0)
        await said(cytube_peer, lambda r: r == "welcome, gil!")
        seen["while_off"] = await _greetings(cytube_peer)
        seen["on"] = await ask(cytube_peer, "dan", "!greet on", lambda r: "dan" in r)
        seen["bad"] = await ask(cytube_peer, "dan", "!greet maybe", lambda r: "usage" in r)
        await _leave(cytube_peer, "dan")
        await _join(cytube_peer, "dan")
        await _join(cytube_peer, "hal")
        await said(cytube_peer, lambda r: r == "welcome, hal!")
        seen["after"] = await _greetings(cytube_peer)

    run(config, kinds, check)
    assert seen["off"] == "ok dan, I will not greet you any more"
    assert seen["state"] == "dan, I do not greet you when you join (!greet on to change it)"
    assert seen["while_off"] == ["welcome, dan!", "welcome, gil!"]
    assert seen["on"] == "ok dan, I will greet you again"
    assert seen["bad"] == "usage: !greet off|on"
    assert seen["after"] == ["welcome, dan!", "welcome, gil!", "welcome, dan!", "welcome, hal!"]


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        ('greetings = ["hi {nick}"]', "only {name} is known"),
        ("greetings = []", "at least one greeting"),
        ("cooldown_min = 100\ncooldown_max = 10", "must not be below cooldown_min"),
        ("greeting = 'hi'", "greeting"),
    ],
)
def test_bad_params_are_config_errors(table: str, reason: str) -> None:
    """A greeting with an unknown placeholder, no greetings, a cooldown range upside down
    or an unknown key is refused before anything starts, naming plugins.greeter."""
    with pytest.raises(ConfigError) as info:
        make_config("postgresql://x@/y", "http://127.0.0.1:1", f"[plugins.greeter]\n{table}\n")
    assert "plugins.greeter" in str(info.value)
    assert reason in str(info.value)
