"""The local spool: durable, bounded, ordered, drained at most once per acknowledged batch."""

from __future__ import annotations

import base64
import errno
import functools
import json
import logging
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import trio

from daz_actors.runtime.errors import ConfigError, DazActorsError
from daz_actors.storage.errors import QueueInputError
from daz_actors.storage.queue_types import NewItem
from daz_actors.storage.spool import (
    Spool,
    SpoolClosed,
    SpoolFormatError,
    SpoolFull,
    SpoolLocked,
    _encode_record,
)
from daz_actors.storage.spool_quarantine import quarantine_path

REPO = Path(__file__).resolve().parents[2]
MAX = 1 << 20


def item(n: int, **kwargs: Any) -> NewItem:
    """A small item whose event id is ``e<n>``."""
    kwargs.setdefault("event_data", {"n": n})
    return NewItem(event_id=f"e{n}", event_type="chat.log", **kwargs)


FULL = NewItem(
    event_id="full-1",
    event_type="cytube.send",
    event_data={"text": "héllo\nwörld ☃ \u2028", "nested": [1, 2.5, None, True, {"k": []}]},
    channel="room",
    plugin="greeter",
    operation_type="cytube_command",
    event_metadata={"source": "test", "attempt": 0},
    priority=9,
    max_retries=7,
    retry_delay=1.5,
    backoff_multiplier=3.0,
    max_delay=90.0,
    attempt_timeout=4.0,
    correlation_id="corr-1",
    tags=("a", "b c"),
    not_before=datetime(2030, 1, 1, 12, 30, 15, 123456, tzinfo=UTC),
    expires_at=datetime(2030, 1, 2, tzinfo=timezone(timedelta(hours=2))),
    checkpoint={"step": 2},
)


def ids(items: list[NewItem]) -> list[str]:
    """The event ids of ``items``, in order."""
    return [i.event_id for i in items]


class Sender:
    """A ``send_batch`` recording each batch; call number ``fail_on`` raises after recording."""

    def __init__(self, fail_on: int | None = None, during: Callable[[int], Any] | None = None):
        self.batches: list[list[str]] = []
        self.fail_on = fail_on
        self.during = during

    async def __call__(self, batch: list[NewItem]) -> None:
        self.batches.append(ids(batch))
        if self.during is not None:
            await self.during(len(self.batches))
        if len(self.batches) == self.fail_on:
            raise ConnectionError("database went away before acknowledging")


def test_round_trip_preserves_order_and_every_field(tmp_path: Path) -> None:
    """Appended items come back from pending() equal, in order, also after a reopen."""
    items = [item(1), FULL, item(2), item(3, tags=["x"], checkpoint=[1, "two"])]
    with Spool(tmp_path / "spool", MAX) as spool:
        spool.append(items[0])
        spool.append_many(items[1:])
        assert spool.pending() == items
        assert (spool.pending_count, spool.appended) == (4, 4)
        assert spool.size_bytes == (tmp_path / "spool").stat().st_size
    with Spool(tmp_path / "spool", MAX) as reopened:
        pending = reopened.pending()
        assert pending == items
        assert pending[1].not_before == FULL.not_before
        assert pending[1].expires_at is not None
        assert pending[1].expires_at.utcoffset() == timedelta(hours=2)
        assert (reopened.pending_count, reopened.skipped_records) == (4, 0)


async def test_async_wrappers_append_from_trio(tmp_path: Path) -> None:
    """open_async, append_async and append_many_async write like their synchronous forms."""
    spool = await Spool.open_async(tmp_path / "spool", MAX)
    with spool:
        await spool.append_async(item(1))
        await spool.append_many_async(item(n) for n in (2, 3))
        assert ids(spool.pending()) == ["e1", "e2", "e3"]


def test_full_spool_refuses_the_whole_call_and_writes_nothing(tmp_path: Path) -> None:
    """An append past max_bytes raises SpoolFull (ENOSPC) and leaves the file as it was."""
    pad = {"pad": "x" * 100}
    path = tmp_path / "spool"
    with Spool(path, 1024) as spool:
        empty = spool.size_bytes
        spool.append(item(0, event_data=pad))
        record = spool.size_bytes - empty
        assert spool.size_bytes + record <= 1024 < spool.size_bytes + 2 * record
        before = path.read_bytes()
        with pytest.raises(SpoolFull, match="spool full") as caught:
            spool.append_many([item(1, event_data=pad), item(2, event_data=pad)])
        assert isinstance(caught.value, OSError)
        assert isinstance(caught.value, DazActorsError)
        assert caught.value.errno == errno.ENOSPC
        assert path.read_bytes() == before
        assert (spool.refused_full, spool.appended, spool.pending_count) == (2, 1, 1)
        spool.append(item(1, event_data=pad))
        assert ids(spool.pending()) == ["e0", "e1"]


async def test_drain_makes_room_in_a_full_spool(tmp_path: Path) -> None:
    """After a full drain the file is compacted to its header and takes items again."""
    pad = {"pad": "x" * 100}
    path = tmp_path / "spool"
    with Spool(path, 1024) as spool:
        empty = spool.size_bytes
        spool.append_many([item(0, event_data=pad), item(1, event_data=pad)])
        with pytest.raises(SpoolFull):
            spool.append(item(2, event_data=pad))
        assert await spool.drain(Sender()) == 2
        assert spool.size_bytes == empty == path.stat().st_size
        spool.append(item(2, event_data=pad))
        assert ids(spool.pending()) == ["e2"]


BAD: dict[str, tuple[Any, str]] = {
    "not an item": ({"event_id": "x", "event_type": "y"}, "expected a NewItem"),
    "object payload": (item(9, event_data={"x": object()}), "event_data: not JSON"),
    "nan payload": (item(9, event_data={"x": math.nan}), "event_data: not JSON"),
    "nul in payload": (item(9, event_data={"x": "a\x00b"}), "event_data: .*NUL"),
    "bad checkpoint": (item(9, checkpoint={"f": print}), "checkpoint: not JSON"),
    "oversized": (item(9, event_data="x" * 2000), "event_data: payload .* limit is 1000"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_and_nothing_written(tmp_path: Path, case: str) -> None:
    """A bad item raises QueueInputError alone or in a batch, and the file is unchanged."""
    bad, message = BAD[case]
    path = tmp_path / "spool"
    with Spool(path, MAX, max_payload_bytes=1000) as spool:
        spool.append(item(0))
        before = path.read_bytes()
        with pytest.raises(QueueInputError, match=message):
            spool.append(bad)
        with pytest.raises(QueueInputError, match=message):
            spool.append_many([item(1), bad])
        assert path.read_bytes() == before
        assert (spool.appended, spool.pending_count) == (1, 1)


def test_single_item_passed_as_batch_is_refused(tmp_path: Path) -> None:
    """append_many(item) is a mistake that raises instead of iterating the item."""
    with Spool(tmp_path / "spool", MAX) as spool, pytest.raises(QueueInputError):
        spool.append_many(item(1))  # type: ignore[arg-type]


def test_torn_last_line_is_skipped_counted_and_cut(tmp_path: Path) -> None:
    """Half a record at the end is skipped and cut; earlier records and later appends survive."""
    path = tmp_path / "spool"
    with Spool(path, MAX) as spool:
        spool.append_many([item(0), item(1), item(2)])
        good_size = spool.size_bytes
    last = path.read_bytes().splitlines(keepends=True)[-1]
    with path.open("ab") as f:
        f.write(last[: len(last) // 2])
    with Spool(path, MAX) as spool:
        assert ids(spool.pending()) == ["e0", "e1", "e2"]
        assert (spool.skipped_records, spool.pending_count) == (1, 3)
        assert spool.size_bytes == good_size == path.stat().st_size
        spool.append(item(3))
    with Spool(path, MAX) as spool:
        assert ids(spool.pending()) == ["e0", "e1", "e2", "e3"]
        assert spool.skipped_records == 0


@pytest.mark.parametrize("damage", ["flipped byte", "garbage line"])
def test_damaged_record_is_skipped_and_counted(tmp_path: Path, damage: str) -> None:
    """A complete line whose checksum fails is skipped; the records around it are kept."""
    path = tmp_path / "spool"
    with Spool(path, MAX) as spool:
        spool.append_many([item(0), item(1), item(2)])
    lines = path.read_bytes().splitlines(keepends=True)
    if damage == "flipped byte":
        lines[2] = lines[2].replace(b'"n":1', b'"n":7')
    else:
        lines.insert(2, b"\x00\xffnot a record\n")
    path.write_bytes(b"".join(lines))
    with Spool(path, MAX) as spool:
        expected = ["e0", "e2"] if damage == "flipped byte" else ["e0", "e1", "e2"]
        assert ids(spool.pending()) == expected
        assert (spool.skipped_records, spool.pending_count) == (1, len(expected))


async def test_crash_mid_drain_resends_only_the_unacknowledged_batch(tmp_path: Path) -> None:
    """send_batch failing on batch 2 leaves it pending; a restarted spool sends from there."""
    path = tmp_path / "spool"
    with Spool(path, MAX) as spool:
        spool.append_many([item(n) for n in range(5)])
        failing = Sender(fail_on=2)
        with pytest.raises(ConnectionError):
            await spool.drain(failing, batch_size=2)
        assert failing.batches == [["e0", "e1"], ["e2", "e3"]]
        assert (spool.drained, spool.pending_count) == (2, 3)
    with Spool(path, MAX) as restarted:
        assert ids(restarted.pending()) == ["e2", "e3", "e4"]
        again = Sender()
        assert await restarted.drain(again, batch_size=2) == 3
        assert again.batches == [["e2", "e3"], ["e4"]]
        assert restarted.pending() == []
    with Spool(path, MAX) as after:
        assert after.pending_count == 0


async def test_stale_checkpoint_after_compaction_resends_instead_of_skipping(
    tmp_path: Path,
) -> None:
    """A kill between compaction and its checkpoint re-sends the compacted records."""
    path = tmp_path / "spool"
    checkpoint = path.with_name("spool.offset")
    old: list[bytes] = []

    async def remember(call: int) -> None:
        if call == 2:  # the checkpoint after batch 1, before compaction replaces it
            old.append(checkpoint.read_bytes())

    with Spool(path, MAX) as spool:
        spool.append_many([item(n) for n in range(4)])
        full_size = spool.size_bytes
        with pytest.raises(ConnectionError):
            await spool.drain(Sender(fail_on=2, during=remember), batch_size=2)
        assert spool.size_bytes < full_size  # half drained: compacted
    checkpoint.write_bytes(old[0])  # as if killed before the new checkpoint was written
    with Spool(path, MAX) as spool:
        assert ids(spool.pending()) == ["e2", "e3"]


async def test_items_appended_during_drain_are_drained_after(tmp_path: Path) -> None:
    """An item appended while a batch is in flight is sent in a later batch, and kept."""
    with Spool(tmp_path / "spool", MAX) as spool:
        empty = spool.size_bytes

        async def append_once(call: int) -> None:
            if call == 1:
                await spool.append_async(item(9))

        spool.append_many([item(0), item(1), item(2)])
        sender = Sender(during=append_once)
        assert await spool.drain(sender) == 4
        assert sender.batches == [["e0", "e1", "e2"], ["e9"]]
        assert (spool.pending_count, spool.size_bytes) == (0, empty)


async def test_concurrent_drains_send_each_record_once(tmp_path: Path) -> None:
    """Two drains started together are serialised: every record goes out exactly once."""
    with Spool(tmp_path / "spool", MAX) as spool:
        spool.append_many([item(n) for n in range(6)])
        sender = Sender()
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(functools.partial(spool.drain, sender, batch_size=2))
        assert [i for batch in sender.batches for i in batch] == [f"e{n}" for n in range(6)]


def test_second_opener_in_the_same_process_is_refused(tmp_path: Path) -> None:
    """A second Spool on a locked path raises SpoolLocked naming the holder; close frees it."""
    path = tmp_path / "spool"
    with Spool(path, MAX) as spool:
        spool.append(item(1))
        with pytest.raises(SpoolLocked, match=f"pid {os.getpid()}"):
            Spool(path, MAX)
    with Spool(path, MAX) as reopened:
        assert ids(reopened.pending()) == ["e1"]


HOLD = """
import sys
from daz_actors.storage.spool import Spool
spool = Spool(sys.argv[1], 1 << 20)
print("locked", flush=True)
sys.stdin.read()
"""


def test_lock_refuses_an_opener_while_another_process_holds_it(tmp_path: Path) -> None:
    """While a child process holds the spool, opening it here raises SpoolLocked with its pid."""
    path = tmp_path / "spool"
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as child:
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline() == "locked\n"
        with pytest.raises(SpoolLocked, match=f"pid {child.pid}"):
            Spool(path, MAX)
        child.stdin.close()
        assert child.wait() == 0
    with Spool(path, MAX) as spool:
        assert spool.pending() == []


APPEND = """
import sys
from daz_actors.storage.queue_types import NewItem
from daz_actors.storage.spool import Spool
spool = Spool(sys.argv[1], 1 << 30)
for n in range(int(sys.argv[2])):
    spool.append(NewItem(event_id=f"k{n}", event_type="chat.log", event_data={"pad": "x" * 500}))
    print(n, flush=True)
"""


def spool_until_killed(path: Path, total: int, kill_after: int) -> list[str]:
    """Run a child appending ``total`` items, SIGKILL it after ``kill_after``; reported ids."""
    with subprocess.Popen(
        [sys.executable, "-c", APPEND, str(path), str(total)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as child:
        assert child.stdout is not None
        reported = [child.stdout.readline() for _ in range(kill_after)]
        child.send_signal(signal.SIGKILL)
        reported += child.stdout.read().splitlines()
        assert child.wait() == -signal.SIGKILL
    assert len(reported) < total, "the child finished before the kill"
    return [f"k{line.strip()}" for line in reported]


def test_sigkilled_appender_loses_no_reported_item(tmp_path: Path) -> None:
    """Every append a killed process reported is found, in order, by the next opener."""
    path = tmp_path / "spool"
    reported = spool_until_killed(path, total=100_000, kill_after=200)
    with Spool(path, MAX) as spool:
        pending = ids(spool.pending())
        assert pending[: len(reported)] == reported
        assert pending == [f"k{n}" for n in range(len(pending))]
        assert len(pending) <= len(reported) + 1  # at most the append in flight at the kill
        spool.append(item(0))
        assert ids(spool.pending())[-1] == "e0"


def test_not_a_spool_file_is_left_alone(tmp_path: Path) -> None:
    """A foreign file at the path raises SpoolFormatError, is unchanged, and the lock is freed."""
    path = tmp_path / "spool"
    path.write_bytes(b"precious data\n")
    for _ in range(2):  # the second attempt would say SpoolLocked had the first leaked it
        with pytest.raises(SpoolFormatError, match="not a spool file"):
            Spool(path, MAX)
    assert path.read_bytes() == b"precious data\n"


def test_closed_spool_refuses_work_and_bad_limits_are_refused(tmp_path: Path) -> None:
    """A closed spool raises SpoolClosed; max_bytes must be an integer of at least 1024."""
    spool = Spool(tmp_path / "spool", MAX)
    spool.close()
    spool.close()
    with pytest.raises(SpoolClosed):
        spool.append(item(1))
    with pytest.raises(SpoolClosed):
        spool.pending()
    for bad in (0, 1023, True, 2048.0):
        with pytest.raises(ConfigError, match="max_bytes"):
            Spool(tmp_path / "other", bad)  # type: ignore[arg-type]


# --- quarantine (issue 13, item 14) ------------------------------------------------------


def quarantined(path: Path) -> list[dict[str, Any]]:
    """The entries of the quarantine file beside the spool at `path`."""
    lines = quarantine_path(path).read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("damage", ["flipped byte", "garbage line"])
def test_a_damaged_record_is_kept_in_the_quarantine_file_named_in_the_warning(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its exact bytes go to <spool>.quarantine, once (a reopened spool no longer holds it),
    and the warning names that file."""
    path = tmp_path / "spool"
    with Spool(path, MAX) as spool:
        spool.append_many([item(0), item(1), item(2)])
    lines = path.read_bytes().splitlines(keepends=True)
    if damage == "flipped byte":
        lines[2] = lines[2].replace(b'"n":1', b'"n":7')
        bad = lines[2][:-1]
    else:
        bad = b"\x00\xffnot a record"
        lines.insert(2, bad + b"\n")
    offset = sum(len(line) for line in lines[:2])
    path.write_bytes(b"".join(lines))
    with caplog.at_level(logging.WARNING, logger="daz_actors.spool"), Spool(path, MAX) as spool:
        assert spool.skipped_records == 1
    [entry] = quarantined(path)
    assert base64.b64decode(entry["bytes_b64"]) == bad
    assert (entry["reason"], entry["offset"], entry["length"]) == ("checksum", offset, len(bad))
    assert entry["spool"] == str(path)
    assert any(str(quarantine_path(path)) in r.getMessage() for r in caplog.records)
    with Spool(path, MAX) as again:  # the damaged record is gone from the spool itself
        assert again.skipped_records == 0
        expected = ["e0", "e2"] if damage == "flipped byte" else ["e0", "e1", "e2"]
        assert ids(again.pending()) == expected
    assert len(quarantined(path)) == 1


def test_a_torn_last_record_is_quarantined_before_it_is_cut(tmp_path: Path) -> None:
    """A kill mid-write leaves half a line: those bytes are kept too (reason torn)."""
    path = tmp_path / "spool"
    with Spool(path, MAX) as spool:
        spool.append_many([item(0), item(1)])
    good = path.read_bytes()
    half = _encode_record(item(2), 1 << 20)[:20]
    path.write_bytes(good + half)
    with Spool(path, MAX) as spool:
        assert ids(spool.pending()) == ["e0", "e1"]
        assert spool.size_bytes == len(good)
    [entry] = quarantined(path)
    assert (entry["reason"], entry["offset"]) == ("torn", len(good))
    assert base64.b64decode(entry["bytes_b64"]) == half


def test_a_damaged_record_after_the_checkpoint_keeps_the_drained_ones_drained(
    tmp_path: Path,
) -> None:
    """Rewriting the spool without the damaged record keeps only the undrained records."""
    path = tmp_path / "spool"
    with Spool(path, MAX) as spool:
        spool.append_many([item(n) for n in range(4)])
        spool._acknowledge(*spool._read(1)[1:], 1)  # e0 drained
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"n":2', b'"n":9')
    path.write_bytes(b"".join(lines))
    with Spool(path, MAX) as spool:
        assert ids(spool.pending()) == ["e1", "e3"]
    with Spool(path, MAX) as spool:
        assert ids(spool.pending()) == ["e1", "e3"]
    assert len(quarantined(path)) == 1
