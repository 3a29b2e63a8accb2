"""The data directory lock (issue 13, item 10): held once, names its holder, released."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daz_actors.storage.data_dir_lock import LOCK_NAME, DataDirInUse, lock_data_dir


def test_a_held_directory_is_refused_naming_the_pid(tmp_path: Path) -> None:
    """A second hold (another open file description) is refused naming this pid; once the
    first is released the directory can be held again, and the file holds no stale pid."""
    with lock_data_dir(tmp_path) as path:
        assert path.read_text() == f"{os.getpid()}\n"
        with (
            pytest.raises(DataDirInUse, match=f"in use by process {os.getpid()}"),
            lock_data_dir(tmp_path),
        ):
            pass
    assert (tmp_path / LOCK_NAME).read_text() == ""
    with lock_data_dir(tmp_path):
        pass


def test_a_killed_holder_leaves_no_lock_behind(tmp_path: Path) -> None:
    """The kernel drops the lock with its process: a SIGKILLed run blocks no later start."""
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib\n"
            "from daz_actors.storage.data_dir_lock import lock_data_dir\n"
            f"with lock_data_dir(pathlib.Path({str(tmp_path)!r})):\n"
            "    print('held', flush=True)\n"
            "    sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "held\n"
            in_use = pytest.raises(DataDirInUse, match=f"in use by process {holder.pid}")
            with in_use, lock_data_dir(tmp_path):
                pass
        finally:
            holder.kill()
            holder.wait(timeout=30)
    with lock_data_dir(tmp_path):  # the stale pid in the file does not matter
        pass
