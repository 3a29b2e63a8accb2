"""A damaged record in the spool at start (issue 13, item 14): its bytes are quarantined
beside the spool and counted in ``daz_retry_spool_quarantined_total``; the rest is queued."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from retry_trees import item_in, retry_tree

from daz_actors.ops.metrics import Metrics
from daz_actors.retry.capture import DrainSpool
from daz_actors.retry.handlers import AttemptContext, HandlerRegistry
from daz_actors.storage.queue_types import NewItem, QueueItem, RetryStatus
from daz_actors.storage.spool import Spool
from daz_actors.storage.spool_quarantine import quarantine_path
from daz_actors.testing import open_tree


def spool_with_a_damaged_record(data_dir: Path) -> Path:
    """The spool an earlier process left: s0, s1, s2, with s1 damaged (bit rot)."""
    spool_file = data_dir / "retry-spool"
    data_dir.mkdir(parents=True)
    with Spool(spool_file, 1 << 20) as spool:
        spool.append_many([NewItem(event_id=f"s{n}", event_type="test.spooled") for n in range(3)])
    lines = spool_file.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"s1"', b'"x1"')  # its checksum now fails
    spool_file.write_bytes(b"".join(lines))
    return spool_file


async def test_a_damaged_spool_record_is_quarantined_and_counted(pg: Any, data_dir: Path):
    handlers = HandlerRegistry()

    @handlers.register("test.spooled")
    async def done(item: QueueItem, ctx: AttemptContext) -> None:
        pass

    spool_file = spool_with_a_damaged_record(data_dir)

    metrics = Metrics().registry
    tree = retry_tree(pg.dsn, handlers, metrics_registry=metrics)
    async with pg.trio_connection() as db, open_tree(tree.sup):
        await item_in(db, "s0", RetryStatus.COMPLETED)
        await item_in(db, "s2", RetryStatus.COMPLETED)
        assert await tree.registry.lookup("retry-capture").ask(DrainSpool())
    assert metrics.get_sample_value("daz_retry_spool_quarantined_total") == 1
    [entry] = [json.loads(line) for line in quarantine_path(spool_file).read_text().splitlines()]
    assert '"event_id":"x1"' in base64.b64decode(entry["bytes_b64"]).decode()
