"""A lease keeper that crashes takes its rooms out of their channels and back in, in one
process run by `run_config` (the keeper is killed through its supervisor)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from cluster_nodes import BOT, BOT_PASSWORD, bot_sessions, node_config
from cytube_peer import fixtures

from daz_actors.app.builtin_kinds import default_kinds
from daz_actors.app.config import parse_config
from daz_actors.app.runner import RunningSystem, run_config
from daz_actors.cluster.keeper import KEEPER_NAME
from daz_actors.testing import poll

cytube_peer_factory = fixtures.cytube_peer_factory

CHANNELS = ["lobby", "den"]


def test_a_crashed_lease_keeper_takes_its_rooms_out_and_back_in_under_new_tokens(
    pg, tmp_path: Path, cytube_peer_factory, monkeypatch
):
    """The keeper crashes: every fence closes, so its rooms leave at once; the restarted
    keeper stops the rooms left behind, then claims the channels again (new tokens) and
    joins them; the server never sees two bot sessions in one channel."""
    peer = cytube_peer_factory(conn_burst=1000, ping_interval=1, ping_timeout=1.0)
    peer.add_account(BOT, BOT_PASSWORD)
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAZ_DATABASE_URL", pg.dsn)
    monkeypatch.setenv("DAZ_CYTUBE_PASSWORD", BOT_PASSWORD)
    path = node_config(
        tmp_path / "node.toml",
        server=peer.url,
        channels=CHANNELS,
        ttl=3.0,
        renew=0.5,
        margin=1.0,
        settle=1.0,
    )
    kinds = default_kinds()
    config = parse_config(path.read_text(), kinds)
    seen: dict[str, Any] = {}

    async def state() -> dict[str, Any]:
        result: dict[str, Any] = await trio.to_thread.run_sync(peer.state)
        return result

    async def alongside(system: RunningSystem) -> None:
        async def joined() -> dict[str, Any] | None:
            s = await state()
            return s if all(len(bot_sessions(s, c)) == 1 for c in CHANNELS) else None

        before = await poll(joined, timeout=60, interval=0.05)
        old = {c: bot_sessions(before, c)[0] for c in CHANNELS}
        owner = system.tree.root.owner_of(KEEPER_NAME)
        assert owner is not None
        owner.kill_child(KEEPER_NAME, "a test crashed it")

        async def back() -> dict[str, Any] | None:
            s = await joined()
            if s and all(bot_sessions(s, c)[0] != old[c] for c in CHANNELS):
                return s
            return None

        seen["after"] = await poll(back, timeout=60, interval=0.05)
        seen["old"] = old

    assert run_config(config, kinds, handle_signals=False, alongside=alongside) == 0
    after, old = seen["after"], seen["old"]
    for channel in CHANNELS:
        events = [p for p in after["presence"] if p["channel"] == channel]
        left = next(p for p in events if p["sid"] == old[channel] and p["event"] == "leave")
        new_join = next(
            p
            for p in events
            if p["event"] == "join" and p["sid"] == bot_sessions(after, channel)[0]
        )
        assert left["time"] <= new_join["time"]
    assert after["overlaps"] == []
    tokens = pg.run(
        lambda conn: conn.fetch("SELECT name, token FROM daz_leases WHERE kind = 'channel'")
    )
    assert len(tokens) == len(CHANNELS)
    assert all(r["token"] > len(CHANNELS) for r in tokens)  # claimed again: new tokens
