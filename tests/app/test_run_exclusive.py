"""`daz-actors run` holds its data directory, and its exit code tells an orderly stop from
a forced one (issue 13, item 10): real processes, real PostgreSQL."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import attrs
import trio

from daz_actors import ActorContext, ActorKind, default_kinds
from daz_actors.app.config import default_config_text, parse_config
from daz_actors.app.runner import EXIT_DATA_DIR_IN_USE, EXIT_FORCED, RunningSystem, run_config
from daz_actors.storage.data_dir_lock import LOCK_NAME
from tests.app.test_run import DAZ, drain, wait_for_line


async def test_a_second_run_on_the_same_data_directory_is_refused_naming_the_first(
    pg: Any, tmp_path: Path
) -> None:
    """The second process exits 5 at once, naming the pid that holds the directory; the
    first runs on and stops in order."""
    config = tmp_path / "bot.toml"
    config.write_text(default_config_text() + "\n[http]\nport = 0\n")
    env = {**os.environ, "DAZ_DATABASE_URL": pg.dsn, "DAZ_DATA_DIR": str(tmp_path / "data")}
    first = await trio.lowlevel.open_process(
        [*DAZ, "run", str(config)], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    seen: list[str] = []
    try:
        with trio.fail_after(60):
            await wait_for_line(first, "tree 'daz' is ready", seen)
            second = await trio.run_process(
                [*DAZ, "run", str(config)], env=env, capture_stderr=True, check=False
            )
        text = second.stderr.decode()
        assert second.returncode == EXIT_DATA_DIR_IN_USE == 5, text
        assert f"data directory {tmp_path / 'data'} is in use by process {first.pid}" in text
        assert "Traceback" not in text
        assert "retry-spool" not in text  # refused before the spool (or anything) was opened
        first.send_signal(signal.SIGINT)
        with trio.fail_after(60):
            await drain(first, seen)
            await first.wait()
    finally:
        if first.returncode is None:
            first.kill()
    assert first.returncode == 0, seen
    # the lock went with the first process: a third run may start (here: refused no more)
    assert (tmp_path / "data" / LOCK_NAME).read_text() == ""


async def second_signal_on_stop(
    ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Stops so slowly that its operator presses Ctrl-C again."""
    ctx.idle = False  # an orderly stop waits for it
    task_status.started()
    await ctx.stop_requested.wait()
    os.kill(os.getpid(), signal.SIGINT)
    await trio.sleep_forever()


@attrs.frozen(kw_only=True)
class NoParams:
    pass


def test_a_second_signal_during_the_stop_exits_6_not_0(
    pg: Any, tmp_path: Path, monkeypatch, caplog
):
    """SIGINT, then a second SIGINT while an actor is still stopping: exit 6 (forced), not
    the 0 of an orderly stop."""
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path))
    kinds = default_kinds()
    kinds.add(
        ActorKind(name="slow-stop", params=NoParams, build=lambda _p, _c: second_signal_on_stop)
    )
    config = parse_config(
        f"""
        [database]
        url = "{pg.dsn}"
        [http]
        enabled = false
        [tree]
        root = "daz"
        [supervisors.daz]
        children = ["slow"]
        [actors.slow]
        kind = "slow-stop"
        shutdown_timeout = 3600
        """,
        kinds,
    )

    async def interrupt(system: RunningSystem) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        await trio.sleep_forever()  # cancelled by the shutdown the signal begins

    with caplog.at_level(logging.INFO, logger="daz_actors.run"):
        assert run_config(config, kinds, alongside=interrupt) == EXIT_FORCED == 6
    messages = [r.getMessage() for r in caplog.records if r.name == "daz_actors.run"]
    assert any("stopped by force: a second SIGINT" in m for m in messages), messages
    assert "stopped in order" not in messages
