"""Run the local CyTube-compatible server (`daz_actors.cytube.local_server`) in its own process.

`CytubeServerProcess` starts ``python .../daz_actors/cytube/local_server.py`` on a loopback port,
waits until it answers, and drives it through its HTTP control API with blocking calls
(each takes well under a millisecond of server time; from trio, call them through
``trio.to_thread.run_sync`` when many are made). It can stop, restart (same port),
freeze (SIGSTOP: a hung server) and thaw the process. Used by ``daz-actors demo`` and by
the test suite's ``cytube_peer`` fixtures.
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
from pathlib import Path
from typing import Any

__all__ = ["CytubeServerError", "CytubeServerProcess"]

# run as a script, not with -m: `python -m` would import the daz_actors package first, and
# trio-asyncio (imported there) patches asyncio in a way that breaks uvicorn's websockets
SERVER_SCRIPT = Path(__file__).with_name("local_server.py")
HOST = "127.0.0.1"
START_TIMEOUT = 20.0  # seconds for a new process to answer /socketconfig
CONTROL_TIMEOUT = 5.0  # seconds for one control request

Json = dict[str, Any]


class CytubeServerError(RuntimeError):
    """The server process did not start, died, or refused a control request."""


def _cli_args(options: Json) -> list[str]:
    """Command-line arguments for keyword options (see `local_server.Options`)."""
    args: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if key == "accounts":
            args += [a for name, pw in value.items() for a in ("--account", f"{name}:{pw}")]
        elif key == "new_accounts":
            args += [a for name in value for a in ("--new-account", name)]
        elif key == "channels":
            args += [a for name in value for a in ("--channel", name)]
        elif key == "channel_passwords":
            args += [a for c, pw in value.items() for a in ("--channel-password", f"{c}:{pw}")]
        elif key == "channel_ranks":
            args += [a for n, r in value.items() for a in ("--channel-rank", f"{n}:{r}")]
        elif key == "antiflood_params":
            args += [flag, json.dumps(value)]
        elif key == "media":
            args += ["--no-media"] if value is None else ["--media", json.dumps(value)]
        else:
            args += [flag, str(value)]
    return args


class CytubeServerProcess:
    """One local CyTube server process and its control API (blocking calls)."""

    def __init__(self, workdir: Path, **options: Any) -> None:
        self.workdir = workdir
        self.options: Json = dict(options)
        self.accounts: dict[str, str] = dict(self.options.pop("accounts", {}))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self.log_path = workdir / "cytube-server.log"
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
            raise CytubeServerError("the server is already running")
        port_file = self.workdir / "port"
        port_file.unlink(missing_ok=True)
        args = [
            sys.executable,
            str(SERVER_SCRIPT),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--port-file",
            str(port_file),
            "--parent-pid",
            str(os.getpid()),
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
                raise CytubeServerError(
                    f"server not ready in {START_TIMEOUT} s:\n{self.log_text()}"
                )
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
            raise CytubeServerError(
                f"server process is not running (exit {code}):\n{self.log_text()}"
            )

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
            raise CytubeServerError("the server is frozen; thaw() it before using the control API")
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
            raise CytubeServerError(f"{method} {path}: HTTP {exc.code} {detail}") from None

    def _control(self, action: str, **body: Any) -> Json:
        return self._request("POST", "/_control/" + action, body)

    def state(self) -> Json:
        """Channels (users, history, media), sessions, connections and connect attempts per
        IP, refusals, received chat lines and PMs with their outcome, logins, kicks."""
        return self._request("GET", "/_control/state")

    def say(
        self,
        channel: str,
        username: str,
        msg: str,
        meta: Json | None = None,
        time: int | None = None,
    ) -> Json:
        """Broadcast a chat line typed by ``username`` (escaped and filtered as the server
        does; no login, no rate limit) and keep it in the channel's history; ``time`` (ms)
        instead of the server's clock."""
        return self._control(
            "say", channel=channel, username=username, msg=msg, meta=meta, time=time
        )

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

    def add_user(
        self, channel: str, name: str, rank: int = 0, channel_rank: int | None = None
    ) -> int:
        """A fake user of global `rank` joins: ``addUser``, then ``setUserRank`` with its
        `channel_rank` if higher (kept for its rejoins), and ``usercount``; the new count."""
        reply = self._control(
            "add_user", channel=channel, name=name, rank=rank, channel_rank=channel_rank
        )
        return int(reply["usercount"])

    def set_rank(self, channel: str, name: str, rank: int) -> None:
        """Promote or demote `name` in `channel`: ``setUserRank`` (and ``rank`` to it)."""
        self._control("set_rank", channel=channel, name=name, rank=rank)

    def set_password(self, channel: str, password: str | None) -> None:
        """Set or clear (None) the channel's password, for later joins."""
        self._control("set_password", channel=channel, password=password)

    def set_opts(self, channel: str, **opts: Any) -> Json:
        """Change channel options; ``channelOpts`` goes to everyone in the channel."""
        return self._control("set_opts", channel=channel, **opts)

    def remove_user(self, channel: str, name: str) -> bool:
        """A fake user leaves: ``userLeave`` and ``usercount``; whether it was there."""
        return bool(self._control("remove_user", channel=channel, name=name)["removed"])

    def add_account(self, name: str, pw: str) -> None:
        """Register an account (rank 1 on login); kept across `restart`."""
        self.accounts[name] = pw
        if self.running:
            self._control("add_account", name=name, pw=pw)

    def burn_limiter(self, name: str) -> None:
        """Saturate the chat rate limiter of `name`'s sockets, as if it had just sent a
        burst: its next lines are refused (``cooldown``) until the limiter allows again."""
        self._control("burn_limiter", name=name)

    def spam_filter(self, name: str, on: bool = True) -> None:
        """Filter `name`'s chat as a new account's (``spamFiltered``), or stop (`on` False)."""
        self._control("spam_filter", name=name, on=on)

    def reset_budget(self) -> None:
        """Refill every IP's connection budget."""
        self._control("reset_budget")

    def emit(self, channel: str, event: str, data: Any = None, *, history: bool = False) -> int:
        """Emit ``event`` with any JSON ``data`` (malformed for CyTube or not) to the
        channel; with ``history`` keep it in the replayed history. How many got it."""
        reply = self._control("emit", channel=channel, event=event, data=data, history=history)
        return int(reply["recipients"])

    def raw(self, channel: str, packet: str) -> int:
        """Send a raw Socket.IO packet (``2["chatMsg",{}]``, or any text) to the channel's
        sockets; how many got it."""
        return int(self._control("raw", channel=channel, packet=packet)["recipients"])
