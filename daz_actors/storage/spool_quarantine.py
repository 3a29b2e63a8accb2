"""Where the spool keeps the bytes of records it cannot read: ``<spool>.quarantine``.

One JSON object per line, appended and fsynced before the spool drops the record::

    {"at": "2026-01-02T03:04:05.678+00:00", "spool": "/srv/bot/retry-spool",
     "file_id": "5f0c...", "offset": 4711, "reason": "checksum", "length": 312,
     "text": "<the bytes as UTF-8, bad bytes replaced>", "bytes_b64": "<the exact bytes>"}

``reason`` is ``checksum`` (a complete line whose checksum or JSON is wrong) or ``torn``
(the last line, cut short by a kill mid-write). ``text`` is for reading; ``bytes_b64`` is
exact: ``jq -r .bytes_b64 retry-spool.quarantine | base64 -d``. The file only grows; an
operator deletes it once read (nothing reads it back).
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import attrs

__all__ = ["Damaged", "quarantine", "quarantine_path"]


@attrs.frozen(kw_only=True)
class Damaged:
    """One record the spool could not read."""

    offset: int  # where it starts in the spool file
    data: bytes  # the line, without its newline
    reason: str  # "checksum" or "torn"


def quarantine_path(spool: Path) -> Path:
    """The quarantine file beside `spool`."""
    return spool.with_name(spool.name + ".quarantine")


def quarantine(spool: Path, file_id: str, records: list[Damaged]) -> Path:
    """Append `records` to the quarantine file of `spool`, durably; its path."""
    path = quarantine_path(spool)
    at = datetime.now(UTC).isoformat(timespec="milliseconds")
    lines = b"".join(
        json.dumps(
            {
                "at": at,
                "spool": str(spool),
                "file_id": file_id,
                "offset": record.offset,
                "reason": record.reason,
                "length": len(record.data),
                "text": record.data.decode("utf-8", "replace"),
                "bytes_b64": base64.b64encode(record.data).decode("ascii"),
            },
            ensure_ascii=True,
        ).encode()
        + b"\n"
        for record in records
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(lines)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return path
