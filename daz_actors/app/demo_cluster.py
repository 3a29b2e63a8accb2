"""``daz-actors demo --nodes N``: several nodes on one PostgreSQL, with nodes killed.

Starts an embedded PostgreSQL, the local CyTube-compatible server and N `daz-actors run`
processes as cluster nodes sharing six channels (short timings: ttl 4 s). Chatters talk
in every channel throughout; the chaos schedule kills one node (SIGKILL) and starts it
again, then stops another in order (SIGTERM) and starts it again. At the end it checks,
at the chat server and in the database: every line said was stored exactly once; every
channel is joined exactly once; never were two bot sessions in one channel; the killed
node's channels were rejoined within the TTL plus a few seconds; the stopped node's
within 2 s. Exit 0 when every invariant held, 3 when one broke.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import asyncpg

from daz_actors.cytube.local_server_process import CytubeServerProcess
from daz_actors.storage.embedded_pg import start_embedded

__all__ = ["run_cluster_demo"]

CHANNELS = tuple(f"room{n}" for n in range(1, 7))
CHATTERS = ("alice", "bob", "carol")
BOT, PASSWORD = "bot", "demo-secret"
TTL = 4.0
FAILOVER_SLACK = 5.0  # seconds past the TTL a killed node's channels may take
HANDOVER = 2.0  # seconds a stopped node's channels may take
EXIT_INVARIANT_BROKEN = 3
EXIT_DEMO_FAILED = 1

CONFIG = """
[http]
port = 0
[tree]
root = "daz"
[supervisors.daz]
children = ["storage", "rooms", "failure-log"]
[supervisors.storage]
strategy = "rest_for_one"
children = ["sql-gateway", "retry"]
[actors.sql-gateway]
kind = "sql-gateway"
[actors.sql-gateway.params]
pool_max_size = 4
call_timeout = 3.0
breaker_open_seconds = 0.5
[actors.retry]
kind = "retry"
[actors.retry.params]
worker_count = 1
poll_interval = 0.5
lock_timeout = 10.0
[actors.rooms]
kind = "rooms"
shutdown_timeout = 20
[actors.rooms.params]
server = "{server}"
channels = {channels}
name = "{bot}"
reconnect_initial = 0.2
reconnect_max = 1.0
[actors.failure-log]
kind = "failure-log"
[cluster]
enabled = true
ttl = {ttl}
renew_interval = 1.0
leave_margin = 1.0
settle = 2.0
[retry_policies.sql_operation]
initial = 0.2
max_delay = 1.0
max_retries = 20
attempt_timeout = 4.5
[retry_policies.default]
attempt_timeout = 4.5
[retry_policies.cytube_command]
attempt_timeout = 4.5
[retry_policies.plugin_request]
attempt_timeout = 4.5
"""


class _Node:
    """One `daz-actors run` process of the demo."""

    def __init__(self, index: int, config: Path, dsn: str, work: Path) -> None:
        self.index = index
        self.config, self.dsn, self.work = config, dsn, work
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        data = self.work / f"node{self.index}"
        data.mkdir(exist_ok=True)
        env = {**os.environ, "DAZ_DATABASE_URL": self.dsn, "DAZ_DATA_DIR": str(data),
               "DAZ_CYTUBE_PASSWORD": PASSWORD}  # fmt: skip
        with (self.work / f"node{self.index}.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daz_actors.app.cli", "--log-format", "json", "run",
                 str(self.config)],
                env=env, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _bot_sessions(state: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {c: [] for c in CHANNELS}
    for s in state["sessions"]:
        if s["channel"] in out and s["logged_in"] and (s["name"] or "").lower() == BOT:
            out[s["channel"]].append(s["sid"])
    return out


def _wait(check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)  # polling the chat server, with a deadline
    return None


def _holders(dsn: str) -> dict[str, str]:
    async def read() -> dict[str, str]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT name, holder FROM daz_leases WHERE kind = 'channel'"
                " AND holder IS NOT NULL AND expires_at > now()"
            )
            return {r["name"]: r["holder"] for r in rows}
        finally:
            await conn.close()

    try:
        return asyncio.run(read())
    except (OSError, asyncpg.PostgresError):  # not migrated yet by the first node
        return {}


def _stored(dsn: str, lines: list[str]) -> dict[str, int]:
    async def read() -> dict[str, int]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT message, count(*) AS n FROM daz_chat_messages"
                " WHERE message = ANY($1::text[]) GROUP BY message",
                lines,
            )
            return {r["message"]: r["n"] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(read())


class _Run:
    def __init__(self, nodes: int, duration: float, work: Path, out: TextIO) -> None:
        self.count, self.duration, self.work, self.out = nodes, duration, work, out
        self.said: list[str] = []
        self.checks: list[tuple[str, bool, str]] = []
        self._stop = threading.Event()

    def say(self, text: str) -> None:
        self.out.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
        self.out.flush()

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))
        self.say(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")

    def chatter(self, server: CytubeServerProcess) -> None:
        counter = itertools.count(1)
        for n in counter:
            if self._stop.is_set():
                return
            channel = CHANNELS[n % len(CHANNELS)]
            text = f"{CHATTERS[n % len(CHATTERS)]} says line {n} in {channel}"
            try:
                server.say(channel, CHATTERS[n % len(CHATTERS)], text)
                self.said.append(text)
            except Exception as exc:
                self.say(f"a line could not be said: {exc}")
            self._stop.wait(0.25)  # the chatters' pace

    def handover_after(
        self, server: CytubeServerProcess, node: _Node, sig: int, holders: dict[str, str]
    ) -> float | None:
        """Signal `node`; seconds until each of its channels has a new session (worst)."""
        before = _bot_sessions(server.state())
        assert node.proc is not None
        mine = [c for c, h in holders.items() if f"-{node.proc.pid}-" in h]
        signalled = time.monotonic()
        node.signal(sig)

        def moved() -> bool:
            now = _bot_sessions(server.state())
            return all(len(now[c]) == 1 and now[c] != before[c] for c in mine)

        if _wait(moved, timeout=TTL + 30) is None:
            return None
        return time.monotonic() - signalled

    def run(self) -> bool:
        pg = start_embedded(self.work / "data")
        server = CytubeServerProcess(
            self.work, channels=list(CHANNELS), conn_burst=100000, ping_interval=1,
            ping_timeout=1.0, guest_login_delay=0, media=None,
        )  # fmt: skip
        server.accounts[BOT] = PASSWORD
        nodes: list[_Node] = []
        chatter: threading.Thread | None = None
        try:
            server.start()
            config = self.work / "node.toml"
            quoted = "[" + ", ".join(f'"{c}"' for c in CHANNELS) + "]"
            config.write_text(CONFIG.format(server=server.url, channels=quoted, bot=BOT, ttl=TTL))
            nodes = [_Node(i, config, pg.url, self.work) for i in range(1, self.count + 1)]
            for node in nodes:
                node.start()
            self.say(f"{self.count} nodes starting; {len(CHANNELS)} channels; ttl {TTL:g} s")

            def spread() -> bool:
                sessions = _bot_sessions(server.state())
                holders = set(_holders(pg.url).values())
                return all(len(s) == 1 for s in sessions.values()) and len(holders) == self.count

            if _wait(spread, timeout=120) is None:
                self.check("start", False, "the channels were not spread over every node")
                return False
            self.say("every channel joined once, spread over every node")
            chatter = threading.Thread(target=self.chatter, args=(server,), daemon=True)
            chatter.start()
            time.sleep(self.duration * 0.2)  # the chatters talk for a while before the chaos
            took = self.handover_after(server, nodes[0], signal.SIGKILL, _holders(pg.url))
            self.check(
                "failover within the TTL",
                took is not None and took <= TTL + FAILOVER_SLACK,
                f"node 1 killed (SIGKILL): its channels rejoined after "
                f"{'never' if took is None else f'{took:.1f} s'} (ttl {TTL:g} s)",
            )
            nodes[0].wait()
            self.say("node 1 starts again")
            nodes[0].start()
            if _wait(spread, timeout=60) is None:
                self.check("rebalance", False, "node 1 never got its share back")
                return False
            self.say("node 1 has its share back")
            time.sleep(self.duration * 0.2)  # the chatters talk on
            took = self.handover_after(server, nodes[1], signal.SIGTERM, _holders(pg.url))
            self.check(
                "handover on SIGTERM",
                took is not None and took <= HANDOVER,
                f"node 2 stopped in order: its channels taken over in "
                f"{'never' if took is None else f'{took:.2f} s'}",
            )
            nodes[1].wait()
            self.say("node 2 starts again")
            nodes[1].start()
            time.sleep(self.duration * 0.4)  # the restarted node takes its share back
            self._stop.set()
            chatter.join()
            joined_once = _wait(
                lambda: (
                    all(len(s) == 1 for s in _bot_sessions(server.state()).values())
                    and len(set(_holders(pg.url).values())) == self.count
                ),
                timeout=60,
            )
            self.check(
                "every channel joined exactly once",
                bool(joined_once),
                "at the end, one bot session per channel, the channels spread over every node",
            )
            overlaps = server.state()["overlaps"]
            self.check(
                "never two bot sessions in one channel",
                not overlaps,
                f"{len(overlaps)} moments with two (as the chat server saw it)",
            )
            counts = _wait(
                lambda: (c := _stored(pg.url, self.said)) and len(c) == len(set(self.said)) and c,
                timeout=60,
            ) or _stored(pg.url, self.said)
            missing = [line for line in self.said if line not in counts]
            twice = [line for line, n in counts.items() if n != 1]
            self.check(
                "every line stored once",
                not missing and not twice,
                f"{len(self.said)} lines said, {len(missing)} missing, {len(twice)} stored twice",
            )
            return all(ok for _, ok, _ in self.checks)
        finally:
            self._stop.set()
            for node in nodes:
                node.signal(signal.SIGTERM)
            for node in nodes:
                node.wait()
            server.stop(graceful=False)
            pg.stop()


def run_cluster_demo(
    nodes: int, duration: float, work_dir: Path | None = None, out: TextIO | None = None
) -> int:
    """Run the cluster demo; the exit code (0: every invariant held)."""
    out = sys.stdout if out is None else out
    if not 2 <= nodes <= 6:
        raise ValueError(f"--nodes must be between 2 and 6, got {nodes}")
    work = work_dir.expanduser().resolve() if work_dir is not None else None
    if work is None:
        work = Path(tempfile.mkdtemp(prefix="daz-demo-nodes-"))
    else:
        work.mkdir(parents=True, exist_ok=True)
    out.write(f"work directory: {work} (node logs: node<N>.log)\n")
    passed = _Run(nodes, duration, work, out).run()
    out.write("every invariant held\n" if passed else "an invariant broke\n")
    if passed and work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        out.write(f"kept the work directory for a look: {work}\n")
    return 0 if passed else EXIT_INVARIANT_BROKEN
