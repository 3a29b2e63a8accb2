"""The quote plugin: !quote and !rq in the real tree, the pick (never the bot, never a
command, wrapping round) against a real chat log, and its plans (index probes, no scan)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import trio
from builtin_harness import ask, bot_joined, database, make_config, run
from cytube_peer import fixtures

from daz_actors.app.runner import RunningSystem
from daz_actors.plugins.quote.runtime import _ANYONE, _BY_USER, random_line

cytube_peer = fixtures.cytube_peer
cytube_peer_factory = fixtures.cytube_peer_factory

PLUGINS = """
[plugins.quote]
enabled = true
cooldown = 0
"""


def test_quote_and_rq_in_the_real_tree(cytube_peer, pg, tmp_path, monkeypatch):
    """!quote <name> answers with one of that user's lines, !rq with anyone's, never a
    command or the bot's own line; the bot is not quoted, an unknown user is said so."""
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAZ_CYTUBE_PASSWORD", "secret")
    cytube_peer.add_account("bot", "secret")
    config, kinds = make_config(pg.dsn, cytube_peer.url, PLUGINS)
    seen: dict[str, Any] = {"quotes": [], "rqs": []}

    async def check(system: RunningSystem) -> None:
        async with database(pg.dsn) as db:
            await bot_joined(cytube_peer)
            for line in ("tea is ready", "!nothing here", "biscuits too"):
                await trio.to_thread.run_sync(cytube_peer.say, "lobby", "ann", line)
            await db.until("SELECT count(*) = 3 FROM daz_chat_messages WHERE username = 'ann'")
            for _ in range(6):
                seen["quotes"].append(
                    await ask(cytube_peer, "cat", "!quote ann", lambda r: r.startswith("ann"))
                )
            for _ in range(6):
                seen["rqs"].append(await ask(cytube_peer, "cat", "!rq", lambda r: ": " in r))
            seen["bot"] = await ask(cytube_peer, "cat", "!quote bot", lambda r: "myself" in r)
            seen["zed"] = await ask(cytube_peer, "cat", "!quote zed", lambda r: "zed" in r)
            seen["usage"] = await ask(cytube_peer, "cat", "!quote", lambda r: "usage" in r)

    run(config, kinds, check)
    texts = {'ann: "tea is ready"', 'ann: "biscuits too"'}
    assert all(q.rsplit(" (", 1)[0] in texts for q in seen["quotes"]), seen["quotes"]
    assert all(q.rsplit(" (", 1)[0] in texts for q in seen["rqs"]), seen["rqs"]
    assert seen["bot"] == "I do not quote myself"
    assert seen["zed"] == "I have nothing zed said here to quote"
    assert seen["usage"] == "usage: !quote <name> (or !rq for anyone)"


class _Db:
    """The SqlClient calls random_line makes, over one asyncpg connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def query(self, sql: str, *args: Any) -> list[Any]:
        rows: list[Any] = await self.conn.fetch(sql, *args)
        return rows


START = datetime(2026, 1, 1, tzinfo=UTC)


async def _fill(conn: Any, lines: list[tuple[str, str, int]], channel: str = "c") -> None:
    await conn.executemany(
        "INSERT INTO daz_chat_messages (event_id, channel, username, message, sent_at)"
        " VALUES ($1, $2, $3, $4, $5)",
        [
            (f"e{i}", channel, user, text, START + timedelta(minutes=minute))
            for i, (user, text, minute) in enumerate(lines)
        ],
    )


class _Draw(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_the_pick_skips_commands_and_the_bot_and_wraps_round(pg):
    """The first quotable line at or after the drawn instant, skipping commands, blank
    lines and the bot; past the last quotable one, the last before the instant."""
    lines = [
        ("ann", "one", 0),
        ("Bot", "I am the bot", 10),
        ("ann", "!command", 20),
        ("ann", "   ", 30),
        ("ann", "two", 40),
        ("bob", "bob speaks", 50),
        ("ann", "!last is a command", 100),
    ]

    async def pick(conn: Any) -> dict[str, Any]:
        await _fill(conn, lines)
        db = _Db(conn)
        out: dict[str, Any] = {}
        for draw in (0.0, 0.05, 0.35, 0.41, 0.99):
            row = await random_line(db, "c", "ANN", prefix="!", bot="bot", rng=_Draw(draw))  # type: ignore[arg-type]
            out[f"ann {draw}"] = row["message"]
            row = await random_line(db, "c", None, prefix="!", bot="bot", rng=_Draw(draw))  # type: ignore[arg-type]
            out[f"any {draw}"] = row["message"]
        out["none"] = await random_line(db, "c", "zed", prefix="!", bot="bot")  # type: ignore[arg-type]
        out["elsewhere"] = await random_line(db, "d", None, prefix="!", bot="bot")  # type: ignore[arg-type]
        return out

    out = pg.run(pick)
    # ann's lines span minutes 0-100; anyone's too
    assert out["ann 0.0"] == "one"
    assert out["ann 0.05"] == "two"  # minute 5: the bot's line, the command, the blank skipped
    assert out["ann 0.35"] == "two"
    assert out["ann 0.41"] == "two"  # nothing quotable after minute 41: wraps to the last before
    assert out["ann 0.99"] == "two"
    assert out["any 0.0"] == "one"
    assert out["any 0.05"] == "two"
    assert out["any 0.41"] == "bob speaks"
    assert out["any 0.99"] == "bob speaks"
    assert out["none"] is None
    assert out["elsewhere"] is None


def _nodes(plan: Any) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(_nodes(child))
    return found


def test_the_pick_reads_through_indexes_not_the_table(pg):
    """On a chat log of 50 000 lines in 5 channels, both picks are index probes: no
    sequential scan of the chat log, no sort of its rows (no ORDER BY random())."""

    async def plans(conn: Any) -> list[list[dict[str, Any]]]:
        await conn.execute(
            "INSERT INTO daz_chat_messages (event_id, channel, username, message, sent_at)"
            " SELECT 'e' || i, 'ch' || (i % 5), 'user' || (i % 50), 'line ' || i,"
            " timestamptz '2026-01-01' + i * interval '1 second'"
            " FROM generate_series(1, 50000) AS i"
        )
        await conn.execute("ANALYZE daz_chat_messages")
        out = []
        for sql, args in (
            (_BY_USER, ("ch1", "user11", 0.5, "!", "bot")),
            (_ANYONE, ("ch1", 0.5, "!", "bot")),
        ):
            text = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
            out.append(_nodes(json.loads(text)[0]["Plan"]))
        return out

    for nodes in pg.run(plans):
        types = {n["Node Type"] for n in nodes}
        assert "Seq Scan" not in types, types
        assert "Sort" not in types, types
        rows_read = sum(n.get("Actual Rows", 0) for n in nodes if "Index" in n["Node Type"])
        assert rows_read < 100, rows_read
