"""`daz-actors run`: the main job as a real process, and the root giving up."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from daz_actors import Actor, ActorKind, actor_factory, default_kinds
from daz_actors.app.config import default_config_text, parse_config
from daz_actors.app.runner import (
    EXIT_DASHBOARD_REFUSED,
    EXIT_GAVE_UP,
    EXIT_HTTP_UNAVAILABLE,
    RunningSystem,
    run_config,
)

DAZ = [sys.executable, "-m", "daz_actors.app.cli"]


def gateway_tree_config(dsn: str, kinds: Any) -> Any:
    """A tree of the SQL gateway alone on `dsn`, its HTTP endpoints on any free port."""
    return parse_config(
        f"""
        [database]
        url = "{dsn}"
        [http]
        port = 0
        [tree]
        root = "daz"
        [supervisors.daz]
        children = ["sql-gateway"]
        [actors.sql-gateway]
        kind = "sql-gateway"
        """,
        kinds,
    )


async def wait_for_line(process: trio.Process, text: str, seen: list[str]) -> None:
    """Read the process's stderr until a line contains `text` (all lines go to `seen`)."""
    assert process.stderr is not None
    buffer = b""
    while not any(text in line for line in seen):
        chunk = await process.stderr.receive_some(4096)
        if not chunk:
            raise AssertionError(f"process ended before {text!r}: {seen}")
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        seen.extend(line.decode() for line in lines)


async def drain(process: trio.Process, seen: list[str]) -> None:
    assert process.stderr is not None
    rest = b""
    while chunk := await process.stderr.receive_some(4096):
        rest += chunk
    seen.extend(rest.decode().splitlines())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_run_starts_the_default_tree_serves_health_and_stops_in_order_on_a_signal(
    pg, tmp_path, signum
):
    """The main job migrates, starts the whole default tree, serves /healthz /readyz and
    /metrics, and exits 0 after an orderly shutdown on SIGTERM or SIGINT, without printing
    the database password."""
    config = tmp_path / "bot.toml"
    config.write_text(default_config_text() + "\n[http]\nport = 0\n")
    env = {**os.environ, "DAZ_DATABASE_URL": pg.dsn, "DAZ_DATA_DIR": str(tmp_path)}
    process = await trio.lowlevel.open_process(
        [*DAZ, "run", str(config)], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    seen: list[str] = []
    try:
        with trio.fail_after(60):
            await wait_for_line(process, "tree 'daz' is ready", seen)
            await wait_for_line(process, "serving /healthz", seen)
            await wait_for_line(process, "connected to", seen)
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)", "\n".join(seen)).group(1))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            metrics = (await client.get("/metrics")).text
        components = ready.json()["components"]
        assert components["database"]["status"] == "UP"
        # the shipped channel is on cytu.be, out of reach here: not ready, and it says why
        assert ready.status_code == 503
        assert components["room:daz-actors"]["status"] == "DOWN"
        assert "daz_sql_connected 1.0" in metrics
        assert "daz_sql_call_seconds_count" in metrics  # the registry the gateway fills
        process.send_signal(signum)
        with trio.fail_after(60):
            await drain(process, seen)
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == 0, seen
    assert any("shutting down in order" in line for line in seen)
    assert any("stopped in order" in line for line in seen)
    assert (tmp_path / "retry-spool").exists()


class AlwaysCrashes(Actor):
    async def on_start(self) -> None:
        raise RuntimeError("this actor can never start")


@attrs.frozen(kw_only=True)
class NoParams:
    pass


def test_root_giving_up_exits_non_zero_with_a_clear_log_line(pg, tmp_path, monkeypatch, caplog):
    """When the root supervisor exceeds its intensity, run returns exit code 1 and says why."""
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path))
    kinds = default_kinds()
    kinds.add(
        ActorKind(
            name="crasher", params=NoParams, build=lambda _p, _c: actor_factory(AlwaysCrashes)
        )
    )
    config = parse_config(
        f"""
        [database]
        url = "{pg.dsn}"
        [tree]
        root = "daz"
        [supervisors.daz]
        children = ["crasher"]
        max_restarts = 2
        backoff = {{ initial = 0.01, max_delay = 0.01 }}
        [actors.crasher]
        kind = "crasher"
        """,
        kinds,
    )
    with caplog.at_level(logging.CRITICAL, logger="daz_actors.run"):
        code = run_config(config, kinds, handle_signals=False)
    assert code == EXIT_GAVE_UP == 1
    messages = [r.getMessage() for r in caplog.records if r.name == "daz_actors.run"]
    assert any("the root supervisor gave up" in m and "crasher" in m for m in messages), messages


def test_run_exits_2_when_the_database_cannot_be_prepared(tmp_path: Path, monkeypatch: Any):
    """An unreachable database at start gives exit code 2 and a message without secrets."""
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path))
    dsn = f"postgresql://bot:hunter2@/postgres?host={tmp_path}&port=1"
    env = {**os.environ, "DAZ_DATABASE_URL": dsn, "DAZ_DATA_DIR": str(tmp_path)}
    result = subprocess.run([*DAZ, "run"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "cannot prepare the database" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_an_alongside_task_sees_the_running_tree_and_its_return_stops_it(pg, tmp_path, monkeypatch):
    """run_config(alongside=...) runs the task once the tree is ready, with the endpoints'
    port; when it returns the tree stops in order and run_config returns 0."""
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path))
    kinds = default_kinds()
    config = gateway_tree_config(pg.dsn, kinds)
    seen: list[Any] = []

    async def alongside(system: RunningSystem) -> None:
        seen.append([c.state.value for c in system.tree.which_children()])
        async with httpx.AsyncClient() as client:
            reply = await client.get(f"http://127.0.0.1:{system.http_port}/readyz")
        seen.append(reply.status_code)

    assert run_config(config, kinds, handle_signals=False, alongside=alongside) == 0
    assert seen == [["running"], 200]

    async def failing(system: RunningSystem) -> None:
        raise LookupError("the alongside task failed")

    with pytest.raises(LookupError, match="alongside task failed"):
        run_config(config, kinds, handle_signals=False, alongside=failing)


def test_a_shutdown_begun_elsewhere_cancels_the_alongside_task_first(pg, tmp_path, monkeypatch):
    """A signal (here: tree.stop()) cancels the alongside task as the shutdown begins,
    while the actors still run: it never acts on a tree that is being taken down."""
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path))
    kinds = default_kinds()
    config = parse_config(
        f"""
        [database]
        url = "{pg.dsn}"
        [http]
        enabled = false
        [tree]
        root = "daz"
        [supervisors.daz]
        children = ["sql-gateway"]
        [actors.sql-gateway]
        kind = "sql-gateway"
        shutdown_timeout = 30
        """,
        kinds,
    )
    states: list[str] = []

    async def alongside(system: RunningSystem) -> None:
        system.tree.stop()
        try:
            await trio.sleep_forever()
        finally:
            states.extend(c.state.value for c in system.tree.which_children())

    assert run_config(config, kinds, handle_signals=False, alongside=alongside) == 0
    # cancelled as the shutdown began: the gateway still running, or at most beginning to
    # stop, never already stopped
    assert len(states) == 1
    assert states[0] in {"running", "stopping"}


def test_run_with_its_http_port_in_use_exits_4_naming_the_address(pg, tmp_path):
    """A taken HTTP port is a clear error naming the address, after an orderly stop of the
    tree, with its own exit code (4), and no traceback."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "bot.toml"
        config.write_text(default_config_text() + f"\n[http]\nport = {port}\n")
        env = {**os.environ, "DAZ_DATABASE_URL": pg.dsn, "DAZ_DATA_DIR": str(tmp_path)}
        result = subprocess.run(
            [*DAZ, "run", str(config)], env=env, capture_output=True, text=True, timeout=120
        )
    assert result.returncode == EXIT_HTTP_UNAVAILABLE == 4, result.stderr
    assert f"cannot serve HTTP on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_refuses_a_dashboard_off_loopback_without_a_token_exit_3(tmp_path):
    """On an address that is not loopback, `run` refuses to start without the dashboard's
    token (exit 3, the variable named); the token is never printed."""
    config = tmp_path / "bot.toml"
    config.write_text(
        default_config_text() + '\n[http]\nhost = "0.0.0.0"\nport = 0\ntoken_env = "MY_TOKEN"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "MY_TOKEN"}
    env["DAZ_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(
        [*DAZ, "run", str(config)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == EXIT_DASHBOARD_REFUSED == 3, result.stderr
    assert "refusing to serve the dashboard on 0.0.0.0" in result.stderr
    assert "$MY_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "pg").exists()  # refused before the database was started


def test_run_serves_the_dashboard_and_hands_its_address_alongside(pg, tmp_path, monkeypatch):
    """The dashboard is served on the HTTP address with the running tree and its database;
    `alongside` gets its address."""
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path))
    kinds = default_kinds()
    config = gateway_tree_config(pg.dsn, kinds)
    seen: dict[str, Any] = {}

    async def alongside(system: RunningSystem) -> None:
        seen["url"] = system.dashboard_url
        async with httpx.AsyncClient(base_url=system.dashboard_url) as client:
            seen["tree"] = (await client.get("/api/tree")).json()
            seen["overview"] = (await client.get("/api/overview")).json()

    assert run_config(config, kinds, handle_signals=False, alongside=alongside) == 0
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", seen["url"])
    assert [(n["name"], n["state"]) for n in seen["tree"]["tree"]] == [("sql-gateway", "running")]
    assert seen["overview"]["total"] == 0


def test_an_open_tree_event_stream_does_not_hold_up_the_stop(pg, tmp_path, monkeypatch):
    """A browser still reading the tree page's event stream does not keep `run` from
    stopping in order."""
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path))
    kinds = default_kinds()
    config = gateway_tree_config(pg.dsn, kinds)
    import socket

    streams: list[socket.socket] = []

    async def alongside(system: RunningSystem) -> None:
        assert system.http_port is not None
        stream = socket.create_connection(("127.0.0.1", system.http_port), timeout=10)
        streams.append(stream)  # left open on purpose while the tree stops
        stream.sendall(b"GET /tree/events HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        received = b""
        while b"data: " not in received:  # each read waits 10 s at most (the timeout)
            chunk = await trio.to_thread.run_sync(stream.recv, 65536)
            assert chunk, "the stream ended"
            received += chunk

    try:  # a stop held up by the stream would end in the suite's per-test timeout
        assert run_config(config, kinds, handle_signals=False, alongside=alongside) == 0
        assert len(streams) == 1
    finally:
        for stream in streams:
            stream.close()


def _task_names() -> list[str]:
    names, stack = [], [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        names.append(task.name)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return names


def test_run_gives_the_free_heap_back_while_the_tree_runs(pg, tmp_path, monkeypatch):
    """With glibc's thresholds fixed at start-up (app/allocator.py), a task gives the free
    heap back every 60 s while the tree runs; with DAZ_MALLOC_TUNING=off there is none."""
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path))
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "MALLOC_MMAP_MAX_", "DAZ_MALLOC_TUNING"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    kinds = default_kinds()
    config = gateway_tree_config(pg.dsn, kinds)
    seen: list[int] = []

    async def alongside(system: RunningSystem) -> None:
        seen.append(sum(1 for n in _task_names() if n.endswith("trim_malloc_every")))

    assert run_config(config, kinds, handle_signals=False, alongside=alongside) == 0
    monkeypatch.setenv("DAZ_MALLOC_TUNING", "off")
    assert run_config(config, kinds, handle_signals=False, alongside=alongside) == 0
    assert seen == [1, 0]
