"""Pacing benchmark: the bot's replies against CyTube's chat rate limiter.

Run from the project root::

    python -m bench.pacing      # about 30 s (the anti-flood case is 16 s of the limiter)

The local CyTube-compatible server (its own process, the real server's limiter algorithm)
and one room's connection actor. Two cases from issue 12's measurements:

1. the minimum limiter (burst 20, then 10 a second): 51 replies asked in 0.66 s, as to 51
   commands from 17 users;
2. anti-flood on (``chat_antiflood``, burst 4, 1 a second, cooldown 4) with the bot at
   rank 1: 20 replies asked within 0.25 s.

For each: replies delivered, refused by the server (``cooldown``), said twice, the time
from the first ask to the last reply's echo, and beside it the least time the server's
limiter allows for those lines asked at those times (`pacing.least_time`). Target: 0
refused, 0 twice, last reply within 1.2x the least time.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from daz_actors import ChildSpec, EventBus, Registry, Supervisor, actor_factory
from daz_actors.cytube.connection import ConnectionParams, CytubeConnection
from daz_actors.cytube.events import ConnectionStatus, SendChat
from daz_actors.cytube.local_server_process import CytubeServerProcess
from daz_actors.cytube.pacing import MIN_ANTIFLOOD, LimiterParams, least_time
from daz_actors.runtime.actor import Actor
from daz_actors.testing import fast_policy, open_tree, wait_until

CHANNEL = "bench"


class _Ignore(Actor):
    async def handle(self, message: Any) -> Any:
        return None


async def _case(
    server: CytubeServerProcess, label: str, lines: int, spread: float, params: LimiterParams
) -> str:
    connection = CytubeConnection(
        ConnectionParams(
            server=server.url, channel=CHANNEL, name="bot", password="secret", echo_timeout=30
        )
    )
    root = Supervisor(
        f"room:{CHANNEL}",
        [
            ChildSpec(name="connection", start=connection),
            ChildSpec(name="event-router", start=actor_factory(_Ignore)),
        ],
        policy=fast_policy(),
        registry=Registry(),
        bus=EventBus(),
        prefix=f"room:{CHANNEL}/",
    )
    ready: list[float] = []
    done: list[float] = []
    failed: list[BaseException] = []
    async with open_tree(root):
        await wait_until(lambda: connection.status is ConnectionStatus.JOINED, timeout=30)
        await wait_until(lambda: connection.sender.chat_params == params, timeout=10)
        ref = root.ref("connection")
        start = trio.current_time()

        async def reply(n: int) -> None:
            ready.append(trio.current_time() - start)
            try:
                await ref.ask(SendChat(msg=f"{label} reply {n}"), timeout=120)
            except Exception as exc:
                failed.append(exc)
            done.append(trio.current_time() - start)

        async with trio.open_nursery() as nursery:
            for n in range(lines):
                nursery.start_soon(reply, n)
                await trio.sleep_until(start + spread * (n + 1) / lines)
    state = await trio.to_thread.run_sync(server.state)
    mine = [c for c in state["chat_received"] if c["msg"].startswith(f"{label} reply")]
    refused = sum(c["outcome"] == "throttled" for c in mine)
    shown = Counter(c["msg"] for c in mine if c["outcome"] == "broadcast")
    twice = sum(n - 1 for n in shown.values() if n > 1)
    last = max(done)
    least = least_time(sorted(ready), params)
    ratio = last / least if least else float("nan")
    return (
        f"{label:<10} {lines:>3} asked in {spread:.2f} s: sent {len(shown):>3}, "
        f"refused {refused}, duplicated {twice}, failed {len(failed)}; last reply "
        f"{last:6.2f} s, limiter's least {least:6.2f} s, ratio {ratio:.2f}x (target <= 1.2x)"
    )


async def _main() -> None:
    logging.getLogger("daz_actors").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as work:
        cases = [
            ("minimum", {}, 51, 0.66, MIN_ANTIFLOOD),
            ("antiflood", {"antiflood": True}, 20, 0.25, LimiterParams(burst=4, sustained=1,
                                                                       cooldown=4)),
        ]  # fmt: skip
        for label, options, lines, spread, params in cases:
            server = CytubeServerProcess(
                Path(work) / label, channels=[CHANNEL], accounts={"bot": "secret"}, **options
            )
            (Path(work) / label).mkdir()
            server.start()
            try:
                print(await _case(server, label, lines, spread, params), flush=True)
            finally:
                server.stop(graceful=False)


def main() -> None:
    trio.run(_main)


if __name__ == "__main__":
    main()
