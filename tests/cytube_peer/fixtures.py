"""Pytest fixtures that run the CyTube test peer (`cytube_peer.server`) in its own process.

* ``cytube_peer`` (per test): a peer on a free loopback port with short test timings
  (`TEST_OPTIONS`: pings every 1 s with a 2 s timeout, ``mediaUpdate`` every 1 s), stopped at
  teardown.
* ``cytube_peer_factory`` (per test): ``factory(**options)`` starts another peer with other
  options (keyword names as in `PeerProcess`'s ``options``, e.g. ``ping_interval=2``,
  ``conn_burst=2``, ``accounts={"bot": "pw"}``, ``media=None``); all are stopped at teardown.

The handle (`PeerProcess`) has ``.url`` (``http://127.0.0.1:PORT``), ``.port``,
``.ws_url``, ``socketconfig_url(channel)``, blocking control helpers over HTTP (``say``,
``pm``, ``kick``, ``set_media``, ``stop_media``, ``add_user``, ``remove_user``,
``add_account``, ``reset_budget``, ``state``; each takes well under a millisecond of server
time, so calling them from a trio test is fine), ``await wait_state(predicate)`` to poll
the state with a deadline without blocking trio, and process control: ``restart()``
(SIGKILL, then a new process on the same port, ready when it returns; accounts added with
``add_account`` are kept), ``stop()``, ``start()``, ``freeze()`` / ``thaw()`` (SIGSTOP /
SIGCONT: the dead server a client's ping timeout must detect).

Import both into a conftest (``from cytube_peer.fixtures import cytube_peer,
cytube_peer_factory``) or a test module.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

SERVER = Path(__file__).with_name("server.py")
HOST = "127.0.0.1"
START_TIMEOUT = 20.0  # seconds for a new process to answer /socketconfig
CONTROL_TIMEOUT = 5.0  # seconds for one control request
TEST_OPTIONS: dict[str, Any] = {
    "ping_interval": 1,
    "ping_timeout": 2.0,
    "media_update_interval": 1.0,
}

Json = dict[str, Any]


class PeerError(RuntimeError):
    """The peer process did not start, died, or refused a control request."""


def _cli_args(options: Json) -> list[str]:
    """``server.py`` arguments for keyword options (see `cytube_peer.server.Options`)."""
    args: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if key == "accounts":
            args += [a for name, pw in value.items() for a in ("--account", f"{name}:{pw}")]
        elif key == "new_accounts":
            args += [a for name in value for a in ("--new-account", name)]
        elif key == "channels":
            args += [a for name in value for a in ("--channel", name)]
        elif key == "media":
            args += ["--no-media"] if value is None else ["--media", json.dumps(value)]
        else:
            args += [flag, str(value)]
    return args


class PeerProcess:
    """One test peer process and its control API."""

    def __init__(self, workdir: Path, **options: Any) -> None:
        self.workdir = workdir
        self.options: Json = {**TEST_OPTIONS, **options}
        self.accounts: dict[str, str] = dict(self.options.pop("accounts", {}))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self.log_path = workdir / "peer.log"
        self._log: Any = None

    # -- addresses --
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, the base of discovery and control."""
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The Engine.IO v4 websocket endpoint."""
        return f"ws://{HOST}:{self.port}/socket.io/?EIO=4&transport=websocket"

    def socketconfig_url(self, channel: str) -> str:
        """Where a client discovers the server of ``channel``."""
        return f"{self.url}/socketconfig/{channel}.json"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        """What the server process printed (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- process control --
    def start(self) -> None:
        """Start the process (on the port it had before, if any); return once it answers."""
        if self.running:
            raise PeerError("the peer is already running")
        port_file = self.workdir / "port"
        port_file.unlink(missing_ok=True)
        args = [
            sys.executable,
            str(SERVER),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--port-file",
            str(port_file),
            *_cli_args({**self.options, "accounts": self.accounts}),
        ]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in _reap)
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        self.frozen = False
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self._check_alive()
            if not self.port and port_file.exists():
                with contextlib.suppress(ValueError):
                    self.port = int(port_file.read_text())
            if self.port and self._answers():
                return
            if time.monotonic() > deadline:
                self._reap(signal.SIGKILL)
                raise PeerError(f"peer not ready in {START_TIMEOUT} s:\n{self.log_text()}")
            time.sleep(0.02)  # polling with a deadline

    def _answers(self) -> bool:
        """Whether discovery answers (a 404 for a channel outside an allowlist counts)."""
        try:
            with urllib.request.urlopen(self.socketconfig_url("ready"), timeout=1):
                return True
        except urllib.error.HTTPError as exc:
            exc.close()
            return True
        except OSError:
            return False

    def _check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise PeerError(f"peer process is not running (exit {code}):\n{self.log_text()}")

    def _reap(self, sig: int) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            if self.frozen and sig != signal.SIGKILL:
                proc.send_signal(signal.SIGCONT)
            proc.send_signal(sig)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.frozen = False
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, *, graceful: bool = True) -> None:
        """Stop the process: SIGTERM (uvicorn's orderly shutdown) or SIGKILL."""
        self._reap(signal.SIGTERM if graceful else signal.SIGKILL)

    def restart(self, *, graceful: bool = False) -> None:
        """A server restart: kill the process (SIGKILL by default), start a new one on the
        same port, and return once it answers. Its state is fresh except for the accounts."""
        self.stop(graceful=graceful)
        self.start()

    def freeze(self) -> None:
        """SIGSTOP the process: connections stay open, but no frame and no ping comes."""
        self._check_alive()
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT a frozen process."""
        self._check_alive()
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.frozen = False

    # -- control API --
    def _request(self, method: str, path: str, body: Json | None = None) -> Json:
        if self.frozen:
            raise PeerError("the peer is frozen; thaw() it before using the control API")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=CONTROL_TIMEOUT) as resp:
                reply: Json = json.loads(resp.read())
                return reply
        except urllib.error.HTTPError as exc:
            with exc:
                detail = exc.read().decode(errors="replace")
            raise PeerError(f"{method} {path}: HTTP {exc.code} {detail}") from None

    def _control(self, action: str, **body: Any) -> Json:
        return self._request("POST", "/_control/" + action, body)

    def state(self) -> Json:
        """Channels (users, history, media), sessions, connections and connect attempts per
        IP, refusals, received chat lines and PMs with their outcome, logins, kicks."""
        return self._request("GET", "/_control/state")

    def say(self, channel: str, username: str, msg: str, meta: Json | None = None) -> Json:
        """Broadcast a chat line as ``username`` (no login, no rate limit) and keep it in the
        channel's history."""
        return self._control("say", channel=channel, username=username, msg=msg, meta=meta)

    def pm(self, channel: str, to: str, msg: str, sender: str = "someone") -> int:
        """Send a PM from ``sender`` to the sockets logged in as ``to``; how many got it."""
        reply = self._control("pm", channel=channel, to=to, msg=msg, username=sender)
        return int(reply["delivered"])

    def kick(self, channel: str, name: str | None = None, reason: str = "Kicked") -> int:
        """``kick {"reason"}`` then disconnect ``name``'s sockets (all sockets of the channel
        when ``name`` is None); how many were kicked."""
        return int(self._control("kick", channel=channel, name=name, reason=reason)["kicked"])

    def set_media(
        self,
        channel: str,
        title: str = "Test video",
        id: str = "abc123",
        type: str = "yt",
        seconds: int = 212,
        *,
        current_time: float = 0.0,
        paused: bool = False,
    ) -> Json:
        """Play an item: ``changeMedia`` to the channel, then ``mediaUpdate`` periodically."""
        media = {"id": id, "title": title, "type": type, "seconds": seconds}
        return self._control(
            "media",
            channel=channel,
            media=media,
            current_time=current_time,
            paused=paused,
        )

    def stop_media(self, channel: str) -> None:
        """Nothing plays any more (no ``mediaUpdate`` from now on)."""
        self._control("media", channel=channel, media=None)

    def add_user(self, channel: str, name: str, rank: int = 0) -> int:
        """A fake user joins: ``addUser`` and ``usercount``; the new count."""
        return int(self._control("add_user", channel=channel, name=name, rank=rank)["usercount"])

    def remove_user(self, channel: str, name: str) -> bool:
        """A fake user leaves: ``userLeave`` and ``usercount``; whether it was there."""
        return bool(self._control("remove_user", channel=channel, name=name)["removed"])

    def add_account(self, name: str, pw: str) -> None:
        """Register an account (rank 1 on login); kept across `restart`."""
        self.accounts[name] = pw
        if self.running:
            self._control("add_account", name=name, pw=pw)

    def reset_budget(self) -> None:
        """Refill every IP's connection budget."""
        self._control("reset_budget")

    async def wait_state(self, predicate: Callable[[Json], Any], timeout: float = 10.0) -> Json:
        """Poll `state` (in a thread, so trio keeps running) until ``predicate(state)`` is
        true; return that state, or fail the test after ``timeout`` seconds."""
        state: Json = {}
        with contextlib.suppress(trio.TooSlowError), trio.fail_after(timeout):
            while True:
                state = await trio.to_thread.run_sync(self.state)
                if predicate(state):
                    return state
                await trio.sleep(0.05)  # polling interval, bounded by the deadline
        raise AssertionError(f"peer state did not match in {timeout} s; last state: {state}")


@pytest.fixture
def cytube_peer_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., PeerProcess]]:
    """``factory(**options)`` starts a peer process and returns its handle; all are stopped
    at teardown."""
    peers: list[PeerProcess] = []

    def factory(**options: Any) -> PeerProcess:
        peer = PeerProcess(tmp_path_factory.mktemp("cytube_peer"), **options)
        peers.append(peer)
        peer.start()
        return peer

    yield factory
    for peer in peers:
        peer.stop(graceful=False)


@pytest.fixture
def cytube_peer(cytube_peer_factory: Callable[..., PeerProcess]) -> PeerProcess:
    """A CyTube test peer with short test timings, on a free loopback port."""
    return cytube_peer_factory()
