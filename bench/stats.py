"""The stats and quote plugins' reads on a big chat log, beside plain queries of it.

    python -m bench.stats [--database-url URL] [--rows 1000000] [--reps 15]

Against one PostgreSQL (embedded by default, in a temporary directory) it makes a
database with the core's migrations, fills ``daz_chat_messages`` with ``--rows`` lines
(5 channels, ``lobby`` the busiest; 500 users, a few of them much chattier; 90 days up to
now), then applies the stats plugin's migration (its counts are filled from the log: the
time is printed), VACUUM ANALYZE, and measures, interleaving the two sides each
repetition and keeping the medians:

* ``!stats``: `channel_stats` (the plugin's counts) beside `plain_channel_stats` (the same
  figures read from the chat log through the core's indexes), for ``lobby``; the two
  answers must be equal.
* the write cost of the counts: one-row INSERTs, and one INSERT of 500 rows (the router's
  batched writes in a busy room), with the plugin's trigger enabled beside disabled
  (medians of 7 interleaved runs).
* ``!quote <name>`` / ``!rq``: `random_line` beside ``ORDER BY random() LIMIT 1`` with the
  same filters.

The last line gives the machine's load average (other engineers share it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from daz_actors.plugins.migrations import migrate_plugins
from daz_actors.plugins.quote.runtime import random_line
from daz_actors.plugins.stats import plugin as stats_plugin
from daz_actors.plugins.stats.runtime import channel_stats, plain_channel_stats
from daz_actors.storage.embedded_pg import open_database, redact_dsn
from daz_actors.storage.migrations import migrate

FILL = """
INSERT INTO daz_chat_messages (event_id, channel, username, message, sent_at)
SELECT 'bench-' || i,
       CASE WHEN i % 10 < 7 THEN 'lobby' ELSE 'room' || (i % 10 - 6) END,
       'user' || floor(power(random(), 3) * 500)::int,
       CASE WHEN i % 50 = 0 THEN '!stats' ELSE 'a line of chat number ' || i END,
       now() - random() * interval '90 days'
FROM generate_series(1, $1) AS i"""
MEDIA = """
INSERT INTO daz_channel_events (event_id, kind, channel, title, at)
SELECT 'bench-media-' || i, 'media', 'lobby', 'video ' || i, now() - random() * interval '3 days'
FROM generate_series(1, 2000) AS i"""
ONE_LINE = (
    "INSERT INTO daz_chat_messages (event_id, channel, username, message, sent_at)"
    " VALUES ($1, 'lobby', $2, 'one more line', now())"
)
BATCH = """
INSERT INTO daz_chat_messages (event_id, channel, username, message, sent_at)
SELECT e, 'lobby', u, 'a batched line', now() FROM unnest($1::text[], $2::text[]) AS t(e, u)
ON CONFLICT (event_id) DO NOTHING"""
RANDOM_ORDER = """
SELECT username, message, sent_at FROM daz_chat_messages
WHERE channel = $1 AND ($2::text IS NULL OR lower(username) = $2)
  AND NOT starts_with(message, '!') AND btrim(message) <> '' AND lower(username) <> 'bot'
ORDER BY random() LIMIT 1"""


class _Fetch:
    """What `random_line` calls on a SqlClient, over one asyncpg connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def query(self, sql: str, *args: Any) -> list[Any]:
        rows: list[Any] = await self.conn.fetch(sql, *args)
        return rows


async def _timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = await fn()
    return time.perf_counter() - start, result


async def _compare(
    reps: int, ours: Callable[[], Awaitable[Any]], plain: Callable[[], Awaitable[Any]]
) -> tuple[float, float, Any, Any]:
    """Medians (s) of `ours` and `plain`, interleaved, after one warm-up each."""
    await ours()
    await plain()
    a: list[float] = []
    b: list[float] = []
    got_ours = got_plain = None
    for rep in range(reps):
        pair = [(a, ours), (b, plain)]
        if rep % 2:
            pair.reverse()
        for times, fn in pair:
            took, result = await _timed(fn)
            times.append(took)
            if fn is ours:
                got_ours = result
            else:
                got_plain = result
    return statistics.median(a), statistics.median(b), got_ours, got_plain


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:9.2f} ms"


async def bench(dsn: str, rows: int, reps: int) -> None:
    admin = await asyncpg.connect(dsn)
    name = f"daz_bench_stats_{uuid.uuid4().hex[:8]}"
    await admin.execute(f"CREATE DATABASE {name}")
    url = urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        took, _ = await _timed(lambda: conn.execute(FILL, rows))
        await conn.execute(MEDIA)
        print(f"filled {rows:,} chat lines in {took:.1f} s")
        took, _ = await _timed(lambda: migrate_plugins(conn, [stats_plugin]))
        print(f"stats migration (counts filled from the log): {took:.1f} s")
        await conn.execute("VACUUM ANALYZE")
        lobby = await conn.fetchval(
            "SELECT count(*) FROM daz_chat_messages WHERE channel = 'lobby'"
        )
        print(f"'lobby' holds {lobby:,} lines; medians of {reps} interleaved runs\n")

        now = datetime.now(UTC)
        args: dict[str, Any] = {"bot": "bot", "top": 3, "zone": "UTC", "now": now}
        ours, plain, got, want = await _compare(
            reps,
            lambda: channel_stats(conn.fetch, "lobby", **args),
            lambda: plain_channel_stats(conn.fetch, "lobby", **args),
        )
        print(f"{'measure':34} {'plugin':>12} {'plain':>12} {'plain/plugin':>13}")
        print(f"{'!stats (lobby)':34} {_ms(ours)} {_ms(plain)} {plain / ours:12.1f}x")
        if got != want:
            raise SystemExit(f"the answers differ!\n  counts: {got}\n  plain:  {want}")

        fetch = _Fetch(conn)
        quote = {"prefix": "!", "bot": "bot"}
        # user0 is the chattiest (about 1 line in 8), user7 an ordinary one
        for label, user in (("!quote user0", "user0"), ("!quote user7", "user7"), ("!rq", None)):
            ours, plain, _, _ = await _compare(
                reps,
                lambda u=user: random_line(fetch, "lobby", u, **quote),  # type: ignore[arg-type,misc]
                lambda u=user: conn.fetch(RANDOM_ORDER, "lobby", u),  # type: ignore[misc]
            )
            label = f"{label} (vs ORDER BY random())"
            print(f"{label:34} {_ms(ours)} {_ms(plain)} {plain / ours:12.1f}x")

        inserts = 500
        counter = iter(range(10**9))

        async def insert_many(trigger: bool) -> float:
            """Seconds for `inserts` one-row INSERTs (the toggle itself is not timed)."""
            state = "ENABLE" if trigger else "DISABLE"
            await conn.execute(
                f"ALTER TABLE daz_chat_messages {state} TRIGGER daz_stats_count_lines"
            )
            start = time.perf_counter()
            for _ in range(inserts):
                await conn.execute(ONE_LINE, f"bench-one-{next(counter)}", "user1")
            return time.perf_counter() - start

        on: list[float] = []
        off: list[float] = []
        await insert_many(True)
        await insert_many(False)
        for rep in range(7):
            for trigger in (True, False) if rep % 2 else (False, True):
                (on if trigger else off).append(await insert_many(trigger))
        await conn.execute("ALTER TABLE daz_chat_messages ENABLE TRIGGER daz_stats_count_lines")
        ours, plain = statistics.median(on), statistics.median(off)
        per_line = (ours - plain) / inserts * 1e6
        label = f"{inserts} one-row INSERTs, trigger on/off"
        print(f"{label:34} {_ms(ours)} {_ms(plain)} {plain / ours:12.2f}x")
        print(f"{'':34} the counts cost {per_line:.0f} us per logged line")

        # the router's batched writes (a busy room): one INSERT ... SELECT FROM unnest of
        # many rows, as cytube/chat_log.py's batch statement
        batch = 500

        async def insert_batch(trigger: bool) -> float:
            state = "ENABLE" if trigger else "DISABLE"
            await conn.execute(
                f"ALTER TABLE daz_chat_messages {state} TRIGGER daz_stats_count_lines"
            )
            ids = [f"bench-batch-{next(counter)}" for _ in range(batch)]
            users = [f"user{i % 40}" for i in range(batch)]
            start = time.perf_counter()
            await conn.execute(BATCH, ids, users)
            return time.perf_counter() - start

        on, off = [], []
        await insert_batch(True)
        await insert_batch(False)
        for rep in range(7):
            for trigger in (True, False) if rep % 2 else (False, True):
                (on if trigger else off).append(await insert_batch(trigger))
        await conn.execute("ALTER TABLE daz_chat_messages ENABLE TRIGGER daz_stats_count_lines")
        ours, plain = statistics.median(on), statistics.median(off)
        label = f"one INSERT of {batch} rows, trigger on/off"
        print(f"{label:34} {_ms(ours)} {_ms(plain)} {plain / ours:12.2f}x")
        print(f"{'':34} the counts cost {(ours - plain) / batch * 1e6:.0f} us per row in a batch")
    finally:
        await conn.close()
        await admin.execute(f"DROP DATABASE {name}")
        await admin.close()
    load = os.getloadavg()
    print(f"\nload average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="daz-bench-stats-") as tmp,
        open_database(args.database_url, data_dir=Path(tmp)) as db,
    ):
        print(f"database: {redact_dsn(db.url)} ({db.source.value})")
        asyncio.run(bench(db.url, args.rows, args.reps))


if __name__ == "__main__":
    main()
