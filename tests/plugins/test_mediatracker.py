"""The mediatracker plugin in the real tree: plays recorded and counted, !nowplaying, !np,
!lastplayed, !topmedia, and a restart that counts the media playing once."""

from __future__ import annotations

from typing import Any

import trio
from builtin_harness import ask, bot_joined, database, make_config, run
from cytube_peer import fixtures

from daz_actors.app.runner import RunningSystem
from daz_actors.plugins.mediatracker.runtime import clock

cytube_peer = fixtures.cytube_peer
cytube_peer_factory = fixtures.cytube_peer_factory

PLUGINS = """
[plugins.mediatracker]
enabled = true
cooldown = 0
"""
PLAYS = "SELECT media_id, queued_by FROM daz_mediatracker_plays ORDER BY started_at"


def _setup(cytube_peer: Any, tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAZ_CYTUBE_PASSWORD", "secret")
    cytube_peer.add_account("bot", "secret")


async def _play(peer: Any, title: str, media_id: str, seconds: int) -> None:
    await trio.to_thread.run_sync(
        lambda: peer.set_media("lobby", title=title, id=media_id, seconds=seconds)
    )


def _item(media_id: str, title: str, by: str) -> dict[str, Any]:
    """A playlist item as CyTube sends it in ``queue`` and ``playlist``."""
    media = {"id": media_id, "title": title, "seconds": 200, "type": "yt", "meta": {}}
    return {"media": media, "uid": 1, "temp": False, "queueby": by}


def test_clock() -> None:
    """Durations read like a player's clock; 0 is a live stream."""
    assert [clock(s) for s in (0, 5, 212, 3723.4)] == ["live", "0:05", "3:32", "1:02:03"]


def test_plays_are_recorded_and_answered(cytube_peer, pg, tmp_path, monkeypatch):
    """The media playing when the bot joins and every change after it are plays; the same
    media played again after another is a second play; the commands answer from them."""
    _setup(cytube_peer, tmp_path, monkeypatch)
    config, kinds = make_config(pg.dsn, cytube_peer.url, PLUGINS)
    seen: dict[str, Any] = {}

    async def check(system: RunningSystem) -> None:
        async with database(pg.dsn) as db:
            await bot_joined(cytube_peer)
            await db.until("SELECT count(*) FROM daz_mediatracker_plays")
            queued = {"item": _item("a1", "Song A", "ann"), "after": 0}
            await trio.to_thread.run_sync(cytube_peer.emit, "lobby", "queue", queued)
            await _play(cytube_peer, "Song A", "a1", 200)
            await db.until("SELECT count(*) = 2 FROM daz_mediatracker_plays")
            # a whole playlist replaces what was known of who queued what
            playlist = [_item("b2", "Song B", "eve")]
            await trio.to_thread.run_sync(cytube_peer.emit, "lobby", "playlist", playlist)
            await _play(cytube_peer, "Song B", "b2", 3700)
            await db.until("SELECT count(*) = 3 FROM daz_mediatracker_plays")
            await _play(cytube_peer, "Song A", "a1", 200)  # no longer in the playlist
            await db.until("SELECT count(*) = 4 FROM daz_mediatracker_plays")
            queued = {"item": _item("c3", "Song C", "fay"), "after": 0}
            await trio.to_thread.run_sync(cytube_peer.emit, "lobby", "queue", queued)
            await _play(cytube_peer, "Song C", "c3", 65)
            await db.until("SELECT count(*) = 5 FROM daz_mediatracker_plays")
            seen["plays"] = [tuple(r) for r in await db.fetch(PLAYS)]
            seen["counts"] = {
                r["media_id"]: (r["plays"], r["title"])
                for r in await db.fetch("SELECT media_id, plays, title FROM daz_mediatracker_media")
            }
            seen["np"] = await ask(cytube_peer, "ann", "!np", lambda r: r.startswith("now"))
            seen["nowplaying"] = await ask(
                cytube_peer, "ann", "!nowplaying", lambda r: r.startswith("now")
            )
            seen["last"] = await ask(
                cytube_peer, "ann", "!lastplayed 2", lambda r: r.startswith("last")
            )
            seen["bad"] = await ask(cytube_peer, "ann", "!lastplayed 99", lambda r: "usage" in r)
            seen["top"] = await ask(cytube_peer, "ann", "!topmedia", lambda r: r.startswith("most"))

    run(config, kinds, check)
    assert seen["plays"] == [
        ("dQw4w9WgXcQ", None), ("a1", "ann"), ("b2", "eve"), ("a1", None), ("c3", "fay"),
    ]  # fmt: skip
    assert seen["counts"] == {
        "dQw4w9WgXcQ": (1, "Test video"), "a1": (2, "Song A"), "b2": (1, "Song B"),
        "c3": (1, "Song C"),
    }  # fmt: skip
    assert seen["np"].startswith("now playing: Song C (yt:c3, 1:05, queued by fay), started ")
    assert seen["nowplaying"].startswith("now playing: Song C (yt:c3, 1:05, queued by fay), ")
    assert seen["last"].startswith("last played: Song A (")
    assert " | Song B (" in seen["last"]
    assert seen["last"].count(" | ") == 1
    assert seen["bad"] == "usage: !lastplayed [1-10]"
    assert seen["top"].startswith("most played: Song A (2 plays) | ")
    assert "Test video (1 play)" in seen["top"]
    assert "Song B (1 play)" in seen["top"]


def test_a_restart_counts_the_media_playing_once(cytube_peer, pg, tmp_path, monkeypatch):
    """The bot restarts while a media plays: the server announces it again on the rejoin,
    and it stays one play."""
    _setup(cytube_peer, tmp_path, monkeypatch)
    config, kinds = make_config(pg.dsn, cytube_peer.url, PLUGINS)
    seen: dict[str, Any] = {}

    async def first(system: RunningSystem) -> None:
        async with database(pg.dsn) as db:
            await bot_joined(cytube_peer)
            await _play(cytube_peer, "Song A", "a1", 600)
            await db.until("SELECT count(*) FROM daz_mediatracker_plays WHERE media_id = 'a1'")

    async def second(system: RunningSystem) -> None:
        async with database(pg.dsn) as db:
            await bot_joined(cytube_peer)
            # the tracker handles events in order: once C is recorded, the rejoin's
            # announcement of A was handled before it
            await _play(cytube_peer, "Song C", "c3", 100)
            await db.until("SELECT count(*) FROM daz_mediatracker_plays WHERE media_id = 'c3'")
            seen["plays"] = [r[0] for r in await db.fetch(PLAYS)]
            seen["a1"] = await db.value(
                "SELECT plays FROM daz_mediatracker_media WHERE media_id = 'a1'"
            )

    run(config, kinds, first)
    run(config, kinds, second)
    assert seen["plays"] == ["dQw4w9WgXcQ", "a1", "c3"]
    assert seen["a1"] == 1
