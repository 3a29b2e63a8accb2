"""Pytest fixtures running the CyTube test peer (`daz_actors.cytube.local_server`) as a process.

* ``cytube_peer`` (per test): a peer on a free loopback port with short test timings
  (`TEST_OPTIONS`: pings every 1 s with a 2 s timeout, ``mediaUpdate`` every 1 s, guest
  logins not limited per IP unless a test sets ``guest_login_delay``), stopped at teardown.
* ``cytube_peer_factory`` (per test): ``factory(**options)`` starts another peer with other
  options (keyword names as in `PeerProcess`'s ``options``, e.g. ``ping_interval=2``,
  ``conn_burst=2``, ``accounts={"bot": "pw"}``, ``media=None``); all are stopped at teardown.

The handle (`PeerProcess`) has ``.url`` (``http://127.0.0.1:PORT``), ``.port``,
``.ws_url``, ``socketconfig_url(channel)``, blocking control helpers over HTTP (``say``,
``pm``, ``kick``, ``set_media``, ``stop_media``, ``add_user``, ``remove_user``,
``add_account``, ``spam_filter``, ``reset_budget``, ``state``; each takes well under a
millisecond of server time, so calling them from a trio test is fine),
``await wait_state(predicate)`` to poll the state with a deadline without blocking trio,
and process control: ``restart()``
(SIGKILL, then a new process on the same port, ready when it returns; accounts added with
``add_account`` are kept), ``stop()``, ``start()``, ``freeze()`` / ``thaw()`` (SIGSTOP /
SIGCONT: the dead server a client's ping timeout must detect).

Import both into a conftest (``from cytube_peer.fixtures import cytube_peer,
cytube_peer_factory``) or a test module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from daz_actors.cytube.local_server_process import CytubeServerError as PeerError
from daz_actors.cytube.local_server_process import CytubeServerProcess

__all__ = ["PeerError", "PeerProcess", "cytube_peer", "cytube_peer_factory"]

TEST_OPTIONS: dict[str, Any] = {
    "ping_interval": 1,
    "ping_timeout": 2.0,
    "media_update_interval": 1.0,
    "guest_login_delay": 0,
}

Json = dict[str, Any]


class PeerProcess(CytubeServerProcess):
    """The package's local CyTube server process with test timings, and `wait_state`."""

    def __init__(self, workdir: Path, **options: Any) -> None:
        super().__init__(workdir, **{**TEST_OPTIONS, **options})

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
