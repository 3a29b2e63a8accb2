"""The local spool (DESIGN section 7): queue items kept on disk while PostgreSQL is down.

The file holds a header line ``DAZSPOOL 1 <file id>`` then one line per record,
``<crc32 of the JSON, 8 hex> <JSON of the NewItem's fields>``. A torn last line (a kill
mid-write) or a record failing its checksum is skipped, counted and logged; a torn tail is
cut so the next append starts on a fresh line. Beside it: ``<path>.offset`` ("<file id>
<offset>" of the first undrained record, replaced atomically after each acknowledged batch),
``<path>.lock`` (flocked while open: one process per spool) and briefly ``<path>.tmp``.
Compaction rewrites the undrained tail under a new file id, so a checkpoint left stale by a
kill between the two renames reads as "send all again" (harmless: enqueue is idempotent by
event id), never as a skip.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import sys
import threading
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import trio

from daz_actors.runtime.errors import ConfigError, DazActorsError
from daz_actors.storage.errors import QueueInputError
from daz_actors.storage.queue import _encode_item
from daz_actors.storage.queue_types import DEFAULT_MAX_PAYLOAD_BYTES, NewItem

__all__ = ["Spool", "SpoolClosed", "SpoolError", "SpoolFormatError", "SpoolFull", "SpoolLocked"]

log = logging.getLogger("daz_actors.spool")

_MAGIC = b"DAZSPOOL"
_VERSION = b"1"
_FIELDS = tuple(field.name for field in attrs.fields(NewItem))
_DATETIMES = ("not_before", "expires_at")


class SpoolError(DazActorsError):
    """Root of the spool's errors."""


class SpoolFull(SpoolError, OSError):
    """An append would take the spool past its ``max_bytes``; nothing of it was written."""

    def __init__(self, path: Path, *, needed: int, size: int, max_bytes: int) -> None:
        self.needed = needed
        self.size = size
        self.max_bytes = max_bytes
        super().__init__(
            errno.ENOSPC,
            f"spool full: appending {needed} bytes to {size} would exceed max_bytes "
            f"{max_bytes}; nothing was written",
            str(path),
        )


class SpoolLocked(SpoolError, RuntimeError):
    """Another process (or another open `Spool`) holds the spool's lock."""


class SpoolFormatError(SpoolError, ValueError):
    """The file at the spool's path is not a spool file (or of an unknown version)."""


class SpoolClosed(SpoolError, RuntimeError):
    """The spool was closed."""


def _encode_record(item: NewItem, max_payload_bytes: int) -> bytes:
    # the queue's own checks (type, JSON, NUL, size): what is spooled can be enqueued later
    _encode_item(item, max_payload_bytes)
    fields = {name: getattr(item, name) for name in _FIELDS}
    for name in _DATETIMES:
        if fields[name] is not None:
            fields[name] = fields[name].isoformat()
    fields["tags"] = list(item.tags)
    fields["jitter"] = item.jitter.value
    body = json.dumps(fields, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    data = body.encode()
    return b"%08x %s\n" % (zlib.crc32(data), data)


def _decode_record(line: bytes) -> NewItem | None:
    """The item of one line (without its newline), or None if the line is damaged."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    data = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(data):
            return None
        fields = json.loads(data)
        if not isinstance(fields, dict):
            return None
        for name in _DATETIMES:
            if fields.get(name) is not None:
                fields[name] = datetime.fromisoformat(fields[name])
        return NewItem(**fields)
    except (ValueError, TypeError):  # QueueInputError is a ValueError
        return None


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    try:  # make the rename durable; past the rename a failure here must not look like one
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # at worst a power loss brings the old file back: a re-send, no loss
        log.exception("fsync of directory %s failed", path.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Spool:
    """An append-only, fsynced, bounded file of `NewItem`; see the module docstring.

    The methods are synchronous and thread-safe; trio code uses `open_async`,
    `append_async` and `append_many_async` (file I/O in a worker thread) and `drain`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1024:
            raise ConfigError(
                "max_bytes", f"must be an integer of at least 1024, got {max_bytes!r}"
            )
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._max_payload_bytes = max_payload_bytes
        self._lock = threading.Lock()  # file, offsets and counters
        self._drain_lock = trio.Lock()  # one drain at a time
        self._closed = False
        # metrics: items appended, items refused with SpoolFull, damaged records skipped
        # when opening, items acknowledged by send_batch
        self.appended = self.refused_full = self.skipped_records = self.drained = 0
        self._lock_fd = self._take_lock()
        try:
            self._fd = self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise

    @classmethod
    async def open_async(cls, path: str | os.PathLike[str], max_bytes: int, **kwargs: Any) -> Spool:
        """`Spool` (which reads the whole file) from trio, in a worker thread."""
        return await trio.to_thread.run_sync(lambda: cls(path, max_bytes, **kwargs))

    @property
    def size_bytes(self) -> int:
        """Size of the spool file, drained records not yet compacted included."""
        return self._size

    @property
    def pending_count(self) -> int:
        """Number of records not yet drained."""
        return self._pending

    def _side(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)

    def _take_lock(self) -> int:
        fd = os.open(self._side(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SpoolLocked(
                f"spool {self.path} is in use (locked by pid {holder}); "
                "a spool belongs to one process: give each process its own data directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        return fd

    def _new_file(self, body: bytes) -> None:
        """Replace the spool file with a fresh header and ``body``; offset at its start."""
        file_id = uuid.uuid4().hex
        header = b"%s %s %s\n" % (_MAGIC, _VERSION, file_id.encode())
        _atomic_write(self.path, header + body)
        self._file_id, self._start = file_id, len(header)
        self._offset, self._size = len(header), len(header) + len(body)

    def _write_checkpoint(self, offset: int) -> None:
        _atomic_write(self._side(".offset"), f"{self._file_id} {offset}\n".encode())

    def _open(self) -> int:
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._new_file(b"")
        with open(self.path, "rb") as f:
            header = f.readline()
            parts = header.split()
            if len(parts) != 3 or parts[0] != _MAGIC or not header.endswith(b"\n"):
                raise SpoolFormatError(f"{self.path}: not a spool file (starts {header[:40]!r})")
            if parts[1] != _VERSION:
                raise SpoolFormatError(f"{self.path}: unknown spool version {parts[1]!r}")
            self._file_id, self._start = parts[2].decode(), len(header)
            self._offset = pos = self._read_checkpoint(f)
            f.seek(pos)
            self._pending = 0
            for line in f:
                if not line.endswith(b"\n"):
                    log.warning("spool %s: torn last record (%d bytes) cut", self.path, len(line))
                    self.skipped_records += 1
                    break
                if _decode_record(line[:-1]) is None:
                    log.warning("spool %s: damaged record at byte %d skipped", self.path, pos)
                    self.skipped_records += 1
                else:
                    self._pending += 1
                pos += len(line)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        if pos < self.path.stat().st_size:
            os.ftruncate(fd, pos)
            os.fsync(fd)
        self._size = pos
        return fd

    def _read_checkpoint(self, f: Any) -> int:
        try:
            parts = self._side(".offset").read_text().split()
        except (FileNotFoundError, UnicodeDecodeError):
            return self._start
        if len(parts) != 2 or parts[0] != self._file_id or not parts[1].isdigit():
            # normal after a kill between compaction and its checkpoint: re-send all
            log.info("spool %s: checkpoint %r is not for this file, draining all", self.path, parts)
            return self._start
        offset = int(parts[1])
        if offset > self._start:
            f.seek(offset - 1)
            if f.read(1) != b"\n":
                log.warning("spool %s: checkpoint %d is not a record boundary", self.path, offset)
                return self._start
        return max(offset, self._start)

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolClosed(f"spool {self.path} is closed")

    def append(self, item: NewItem) -> None:
        """Append one item, durably (fsynced) before returning; see `append_many`."""
        self.append_many([item])

    def append_many(self, items: Iterable[NewItem]) -> None:
        """Append items in order, durably (fsynced) before returning.

        Every item is checked first as `._queue.enqueue` would (`QueueInputError`); a bad
        item or a spool without room for all of them (`SpoolFull`) writes nothing.
        """
        if isinstance(items, NewItem):
            raise QueueInputError("items: expected an iterable of NewItem, got a single NewItem")
        records = [_encode_record(item, self._max_payload_bytes) for item in items]
        data = b"".join(records)
        if not data:
            return
        with self._lock:
            self._check_open()
            if self._size + len(data) > self.max_bytes:
                self.refused_full += len(records)
                raise SpoolFull(
                    self.path, needed=len(data), size=self._size, max_bytes=self.max_bytes
                )
            try:
                _write_all(self._fd, data)
                os.fsync(self._fd)
            except BaseException:
                with contextlib.suppress(OSError):  # leave no partial record behind
                    os.ftruncate(self._fd, self._size)
                raise
            self._size += len(data)
            self._pending += len(records)
            self.appended += len(records)

    async def append_async(self, item: NewItem) -> None:
        """`append` from trio, in a worker thread."""
        await trio.to_thread.run_sync(self.append, item)

    async def append_many_async(self, items: Iterable[NewItem]) -> None:
        """`append_many` from trio, in a worker thread."""
        await trio.to_thread.run_sync(self.append_many, list(items))

    def _read(self, limit: int) -> tuple[list[NewItem], int, int]:
        """Up to ``limit`` undrained items from the offset, the offset and the end read."""
        with self._lock:
            self._check_open()
            start = pos = self._offset
            items: list[NewItem] = []
            with open(self.path, "rb") as f:
                f.seek(start)
                while len(items) < limit and pos < self._size:
                    line = f.readline(self._size - pos)
                    pos += len(line)
                    item = _decode_record(line[:-1])
                    if item is not None:
                        items.append(item)
            return items, start, pos

    def pending(self) -> list[NewItem]:
        """The records not yet drained, in order."""
        return self._read(sys.maxsize)[0]

    def _acknowledge(self, start: int, end: int, count: int) -> None:
        with self._lock:
            self._check_open()
            assert self._offset == start, "drain is serialised"
            self._write_checkpoint(end)
            self._offset = end
            self._pending -= count
            self.drained += count

    def _compact(self) -> None:
        """Drop drained records if all are drained or they are at least half the file."""
        with self._lock:
            drained = self._offset - self._start
            if self._closed or not drained or drained * 2 < self._size - self._start:
                return
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                body = f.read(self._size - self._offset)
            try:
                self._new_file(body)  # a new file id: the old checkpoint now means "from start"
                self._write_checkpoint(self._offset)
            finally:
                os.close(self._fd)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    async def drain(
        self,
        send_batch: Callable[[list[NewItem]], Awaitable[object]],
        *,
        batch_size: int = 100,
    ) -> int:
        """Send the undrained records in order, ``batch_size`` at a time; return how many.

        A batch counts as delivered when ``send_batch`` returns; its progress is then
        recorded durably. If ``send_batch`` raises, the drain stops and re-raises, and the
        next drain starts again with that batch. Items appended meanwhile are drained too.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise QueueInputError(f"batch_size: must be a positive integer, got {batch_size!r}")
        sent = 0
        async with self._drain_lock:
            try:
                while True:
                    items, start, end = await trio.to_thread.run_sync(self._read, batch_size)
                    if end == start:
                        return sent
                    if items:
                        await send_batch(items)
                    await trio.to_thread.run_sync(self._acknowledge, start, end, len(items))
                    sent += len(items)
            finally:
                with trio.CancelScope(shield=True):
                    try:
                        await trio.to_thread.run_sync(self._compact)
                    except OSError:  # only space is lost; the next drain tries again
                        log.exception("spool %s: compaction failed", self.path)

    def close(self) -> None:
        """Close the file and release the lock (pending records stay for the next opener)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._fd)
            os.close(self._lock_fd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
