"""Several nodes on one PostgreSQL: 200 channels across 3 `daz-actors run` processes.

    python -m bench.cluster [--channels 200] [--nodes 3] [--ttl 5]

Starts an embedded PostgreSQL, the local CyTube-compatible server and N nodes sharing
every channel, plus one idle node (cluster on, no channel) as the memory baseline, and
prints, with the machine's load:

* memory per channel: (the nodes' resident memory - N idle nodes') / channels, and the
  idle node's resident memory beside it;
* leases renewed per second (all nodes, read from their /metrics over a window) against
  the ideal (channels / renew interval);
* one node killed (SIGKILL): the time from the kill until each of its channels has a
  session again at the server (median, worst), against the least it can be (the TTL,
  since the lease lives that long after its last renewal), and the time a channel takes
  to be joined from nothing (the first join of the run's channels) for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg

from daz_actors.cytube.local_server_process import CytubeServerProcess
from daz_actors.storage.embedded_pg import start_embedded

BOT, PASSWORD = "bot", "secret"

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
[actors.retry]
kind = "retry"
[actors.retry.params]
worker_count = 1
[actors.rooms]
kind = "rooms"
shutdown_timeout = 60
[actors.rooms.params]
server = "{server}"
channels = {channels}
name = "{bot}"
reconnect_initial = 0.5
reconnect_max = 2.0
[actors.failure-log]
kind = "failure-log"
[cluster]
enabled = true
ttl = {ttl}
settle = 1.0
"""


class Node:
    def __init__(self, label: str, config: Path, dsn: str, workdir: Path) -> None:
        workdir.mkdir(parents=True)
        self.log_path = workdir / "node.log"
        env = {**os.environ, "DAZ_DATABASE_URL": dsn, "DAZ_DATA_DIR": str(workdir),
               "DAZ_CYTUBE_PASSWORD": PASSWORD}  # fmt: skip
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daz_actors.app.cli", "--log-format", "console", "run",
             str(config)],
            env=env, stdout=subprocess.DEVNULL, stderr=self.log,
        )  # fmt: skip
        self.label = label

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (m := re.search(pattern, self.text())) is not None:
                return m
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} ended:\n{self.text()[-3000:]}")
            time.sleep(0.1)  # polling a log file, with a deadline
        raise TimeoutError(f"{self.label}: no {pattern!r} in {timeout} s")

    @property
    def node_id(self) -> str:
        return self.wait_for(r"cluster node (\S+)").group(1)

    @property
    def port(self) -> int:
        return int(self.wait_for(r"http://127\.0\.0\.1:(\d+)").group(1))

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def renewals(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        m = re.search(r"^daz_cluster_lease_renewals_total\{[^}]*\} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def sessions(state: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in state["sessions"]:
        if s["channel"] and s["logged_in"] and (s["name"] or "").lower() == BOT:
            out.setdefault(s["channel"], []).append(s["sid"])
    return out


def wait_state(server: CytubeServerProcess, check: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = server.state()
        if check(state):
            return state
        time.sleep(0.1)  # polling the server, with a deadline
    raise TimeoutError("the server never showed the expected state")


def leases(dsn: str) -> dict[str, str]:
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

    return asyncio.run(read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--ttl", type=float, default=5.0)
    parser.add_argument("--work-dir", type=Path, help="keep the run's logs here (a new dir)")
    args = parser.parse_args()
    channels = [f"ch{n:03d}" for n in range(args.channels)]
    print(f"load average {os.getloadavg()[0]:.2f} at start; {args.channels} channels, "
          f"{args.nodes} nodes, ttl {args.ttl:g} s")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp) if args.work_dir is None else args.work_dir
        work.mkdir(parents=True, exist_ok=True)
        pg = start_embedded(work / "pg")
        server = CytubeServerProcess(work, conn_burst=100000, media=None)
        server.accounts[BOT] = PASSWORD
        server.start()
        nodes: list[Node] = []
        try:
            quoted = "[" + ", ".join(f'"{c}"' for c in channels) + "]"
            config = work / "node.toml"
            config.write_text(CONFIG.format(server=server.url, channels=quoted, bot=BOT,
                                            ttl=args.ttl))  # fmt: skip
            idle_config = work / "idle.toml"
            idle_config.write_text(CONFIG.format(server=server.url, channels="[]", bot=BOT,
                                                 ttl=args.ttl))  # fmt: skip
            started = time.monotonic()
            nodes = [Node(f"node{i}", config, pg.url, work / f"node{i}") for i in range(args.nodes)]
            idle = Node("idle", idle_config, pg.url, work / "idle")
            for node in [*nodes, idle]:
                node.node_id  # noqa: B018 (waits for the node to be up)
            wait_state(
                server,
                lambda s: (
                    all(len(sessions(s).get(c, [])) == 1 for c in channels)
                    and len(set(leases(pg.url).values())) == args.nodes
                ),
                timeout=300,
            )
            first_join = time.monotonic() - started
            # let the rebalance settle: each node holds its share
            share = args.channels // args.nodes
            wait_state(
                server,
                lambda s: min(
                    list(leases(pg.url).values()).count(n.node_id) for n in nodes
                ) >= share and all(len(sessions(s).get(c, [])) == 1 for c in channels),
                timeout=300,
            )  # fmt: skip
            rss = sum(n.rss() for n in nodes)
            idle_rss = idle.rss()
            per_channel = (rss - args.nodes * idle_rss) / args.channels
            print(f"memory: {per_channel / 1024:.0f} KiB per channel; an idle node "
                  f"{idle_rss / 2**20:.1f} MiB; the {args.nodes} nodes {rss / 2**20:.1f} MiB "
                  f"(all {args.channels} channels first joined in {first_join:.1f} s)")  # fmt: skip
            window = 3 * args.ttl
            before = sum(n.renewals() for n in nodes)
            time.sleep(window)  # a measurement window, not a wait for a condition
            rate = (sum(n.renewals() for n in nodes) - before) / window
            ideal = args.channels / (args.ttl / 3)
            print(f"leases renewed: {rate:.0f}/s, ideal {ideal:.0f}/s "
                  f"(channels / renew interval), ratio {rate / ideal:.2f}")  # fmt: skip
            victim = nodes[0]
            held = leases(pg.url)
            lost = sorted(c for c, holder in held.items() if holder == victim.node_id)
            old = sessions(server.state())
            old_sids = {c: old[c][0] for c in lost}
            killed_ms = time.time() * 1000
            victim.stop(signal.SIGKILL)
            state = wait_state(
                server,
                lambda s: all(
                    any(sid != old_sids[c] for sid in sessions(s).get(c, [])) for c in lost
                ),
                timeout=120,
            )
            rejoins = []
            for channel in lost:
                joins = [p["time"] for p in state["presence"]
                         if p["channel"] == channel and p["event"] == "join"
                         and p["sid"] != old_sids[channel] and p["time"] >= killed_ms]  # fmt: skip
                rejoins.append((min(joins) - killed_ms) / 1000)
            median, worst = statistics.median(rejoins), max(rejoins)
            print(f"rejoin of the killed node's {len(lost)} channels: median {median:.2f} s, "
                  f"worst {worst:.2f} s; ttl {args.ttl:g} s (median {median / args.ttl:.2f}x,"
                  f" worst {worst / args.ttl:.2f}x the ttl)")  # fmt: skip
            print(f"overlaps seen by the server: {len(state['overlaps'])}")
            print(f"load average {os.getloadavg()[0]:.2f} at the end")
        finally:
            for node in nodes:
                node.stop()
            if "idle" in locals():
                idle.stop()
            server.stop()
            pg.stop()


if __name__ == "__main__":
    main()
