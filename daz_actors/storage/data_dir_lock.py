"""One ``daz-actors run`` per data directory: ``<data_dir>/daz-actors.lock``.

The running process holds an exclusive `flock` on the file and has written its pid into
it. A second process is refused at once with `DataDirInUse`, which names the holder's pid.
The lock goes with the process (closed, exited or killed: the kernel releases it), so a
file left behind never blocks a later start; the file itself stays. The descriptor is not
inherited by child processes (the embedded PostgreSQL outlives nothing it should not).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from daz_actors.runtime.errors import DazActorsError

__all__ = ["LOCK_NAME", "DataDirInUse", "lock_data_dir"]

LOCK_NAME = "daz-actors.lock"


class DataDirInUse(DazActorsError, RuntimeError):
    """Another process holds the data directory."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        self.data_dir = data_dir
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process (pid not known yet)"
        super().__init__(
            f"data directory {data_dir} is in use by {holder} (lock file "
            f"{data_dir / LOCK_NAME}): one `daz-actors run` per data directory; stop that one "
            "or give this one another data_dir"
        )


def _holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def lock_data_dir(data_dir: Path) -> Iterator[Path]:
    """Hold `data_dir` (created if missing) for this process; the lock file's path.

    Raises `DataDirInUse` when another process holds it, `OSError` when the directory
    cannot be created or the file cannot be opened.
    """
    data_dir = data_dir.expanduser()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise DataDirInUse(data_dir, _holder(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no stale pid to mislead a reader
    finally:
        os.close(fd)
