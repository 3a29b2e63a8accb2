"""Real `daz-actors run` processes as cluster nodes, for the cluster tests.

`NodeProcess` starts one node against a shared PostgreSQL and a local CyTube server, keeps
reading its log (a node whose pipe fills would stall), and knows its node id (from its
first log line) and its HTTP port. `node_config` writes the config every node of a test
shares: short timings, the bot account "bot", [cluster] enabled with the given TTL.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

BOT = "bot"
BOT_PASSWORD = "secret"

CONFIG = """
[http]
port = 0

[tree]
root = "daz"

[supervisors.daz]
children = ["storage", {plugins_child}"rooms", "failure-log"]

[supervisors.storage]
strategy = "rest_for_one"
children = ["sql-gateway", "retry"]

[actors.sql-gateway]
kind = "sql-gateway"
[actors.sql-gateway.params]
pool_max_size = 4
breaker_open_seconds = 0.5
reconnect_initial = 0.1
reconnect_max = 0.5
call_timeout = 3.0

[actors.retry]
kind = "retry"
[actors.retry.params]
worker_count = 1
poll_interval = 0.5
lock_timeout = 5.0
cleanup_interval = {cleanup_interval}

[actors.rooms]
kind = "rooms"
shutdown_timeout = 20
[actors.rooms.params]
server = "{server}"
channels = {channels}
name = "{bot}"
reconnect_initial = 0.2
reconnect_max = 1.0
command_cooldown = 0.0

[actors.failure-log]
kind = "failure-log"
{plugins_actor}
[cluster]
enabled = true
ttl = {ttl}
renew_interval = {renew}
leave_margin = {margin}
settle = {settle}

[retry_policies.sql_operation]
initial = 0.2
max_delay = 1.0
max_retries = 20
attempt_timeout = 4.5

[retry_policies.cytube_command]
initial = 0.2
max_delay = 1.0
attempt_timeout = 4.5

[retry_policies.plugin_request]
attempt_timeout = 4.5

[retry_policies.default]
attempt_timeout = 4.5
"""

PLUGINS_ACTOR = """
[actors.plugins]
kind = "plugins"
shutdown_timeout = 15
"""


def node_config(
    path: Path,
    *,
    server: str,
    channels: list[str],
    ttl: float,
    renew: float,
    margin: float,
    settle: float,
    cleanup_interval: float = 0.5,
    plugins: bool = False,
) -> Path:
    """Write the shared node config to `path`; return it. With `plugins`, the tree has
    the plugins' actors (the built-in plugins are on by default)."""
    quoted = "[" + ", ".join(f'"{c}"' for c in channels) + "]"
    path.write_text(
        CONFIG.format(
            server=server,
            channels=quoted,
            bot=BOT,
            ttl=ttl,
            renew=renew,
            margin=margin,
            settle=settle,
            cleanup_interval=cleanup_interval,
            plugins_child='"plugins", ' if plugins else "",
            plugins_actor=PLUGINS_ACTOR if plugins else "",
        )
    )
    return path


class NodeProcess:
    """One `daz-actors run` process."""

    def __init__(self, label: str, config: Path, dsn: str, workdir: Path) -> None:
        self.label = label
        self.config = config
        self.dsn = dsn
        self.workdir = workdir
        self.lines: list[str] = []
        self.process: trio.Process | None = None
        self.node_id: str | None = None
        self.http_port: int | None = None
        self._changed = trio.Event()

    async def start(self, nursery: trio.Nursery) -> None:
        """Start the process and a task reading its log; return at once."""
        env = {
            **os.environ,
            "DAZ_DATABASE_URL": self.dsn,
            "DAZ_DATA_DIR": str(self.workdir),
            "DAZ_CYTUBE_PASSWORD": BOT_PASSWORD,
        }
        self.process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "daz_actors.app.cli", "--log-format", "console", "run",
             str(self.config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        nursery.start_soon(self._read)

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        buffer = b""
        while chunk := await self.process.stderr.receive_some(65536):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                self.lines.append(line)
                if self.node_id is None and (m := re.search(r"cluster node (\S+)", line)):
                    self.node_id = m.group(1)
                if self.http_port is None and (m := re.search(r"http://127\.0\.0\.1:(\d+)", line)):
                    self.http_port = int(m.group(1))
            self._changed.set()
            self._changed = trio.Event()
        self._changed.set()

    async def wait_for(self, pattern: str, timeout: float = 30.0) -> str:
        """The first log line matching `pattern` (a regex), waiting up to `timeout` s."""
        with trio.fail_after(timeout):
            while True:
                for line in self.lines:
                    if re.search(pattern, line):
                        return line
                if self.process is not None and self.process.returncode is not None:
                    raise AssertionError(f"{self.label} ended: {self.log()}")
                await self._changed.wait()

    def log(self) -> str:
        return "\n".join(self.lines[-80:])

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        with trio.fail_after(timeout):
            return await self.process.wait()

    def kill_now(self) -> None:
        """SIGCONT then SIGKILL, if still running (teardown)."""
        if self.process is not None and self.process.returncode is None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    self.process.send_signal(sig)
                except ProcessLookupError:
                    break


def bot_sessions(state: dict[str, Any], channel: str) -> list[str]:
    """The sids of the bot's logged-in sessions in `channel`, at the server."""
    return [
        s["sid"]
        for s in state["sessions"]
        if s["channel"] == channel and s["logged_in"] and (s["name"] or "").lower() == BOT
    ]


async def stop_all(nodes: list[NodeProcess]) -> None:
    """SIGTERM every node at once, then each must exit 0 (its log in the failure)."""
    for node in nodes:
        node.send(signal.SIGTERM)
    for node in nodes:
        assert await node.wait() == 0, node.log()
