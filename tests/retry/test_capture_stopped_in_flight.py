"""A chat row handed to the retry path just as the retry capture is stopped is not lost.

The soak of issue 19 lost two chat lines (``alice-c28 says line 19``, ``bob-c29 says line
22``) this way: the demo killed the SQL gateway; a room's log writer failed to store a row
(the gateway was dead) and handed it over as a `FailureBatch` on ``chat.log.failed``;
``storage`` (rest_for_one: the gateway, then the retry subtree) stopped the retry subtree,
and the capture was asked to stop after trio had handed it the batch but before it ran.
Still counted as idle, it was cancelled, and the batch died at the handler's first
checkpoint: neither queued nor spooled, and no line in the log.

Real parts: PostgreSQL, the gateway, the retry subtree of the ``retry`` kind, the room's
`LogWriter` and the CyTube layer's ``chat.log`` handler. The window is made deterministic:
the writer's hand-over and the stop happen in one scheduling step of the test task.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from retry_trees import retry_tree

from daz_actors import ActorCrashed
from daz_actors.cytube.chat_log import ChatLine
from daz_actors.cytube.log_writer import LogBuffer, LogWriter
from daz_actors.cytube.retry_handlers import register_cytube_handlers
from daz_actors.retry.capture import CAPTURE_NAME
from daz_actors.retry.handlers import HandlerRegistry
from daz_actors.runtime.bus import EventBus
from daz_actors.runtime.mailbox import Mailbox
from daz_actors.runtime.ref import ActorRef
from daz_actors.storage.sql_messages import SqlClient
from daz_actors.testing import open_tree, poll

LINE = ChatLine(
    event_id="soak-c28-alice-19",
    channel="demo",
    username="alice-c28",
    message="alice-c28 says line 19",
    sent_ms=1796471244000,
    is_history=False,
    received_ms=1796471244010,
    meta={},
    raw_message="alice-c28 says line 19",
)


async def writer_to_a_crashed_gateway(bus: EventBus) -> tuple[LogBuffer, LogWriter]:
    """A room's chat-log buffer holding LINE, and its writer, whose gateway has crashed:
    each call fails at once with ActorCrashed."""
    buffer = LogBuffer(10)
    await buffer.add(LINE)
    dead = Mailbox("sql-gateway (crashed)", 10)
    dead.mark_down(lambda: ActorCrashed("actor 'sql-gateway' crashed handling the message"))
    writer = LogWriter(
        buffer,
        db=SqlClient(ActorRef(dead)),
        bus=bus,
        source="room:demo/event-router",
        channel="demo",
        timeout=5.0,
        batch=50,
    )
    return buffer, writer


def stop_now(sup: Any, name: str) -> None:
    """What `Supervisor._stop` does first when the supervisor's task runs before the
    child it just handed a message to (no checkpoint here)."""
    ctx = sup._slot(name).ctx
    assert ctx is not None
    assert ctx.idle, "the capture must be waiting for a message"
    assert sup._slot(name).mailbox.depth == 0, "the message was handed to its waiting task"
    ctx._request_stop()


async def test_a_row_handed_over_as_the_gateway_dies_and_the_capture_stops_is_stored_once(pg):
    handlers = register_cytube_handlers(HandlerRegistry())
    # a long poll: no DrainSpool from the dispatcher in the capture's mailbox meanwhile
    tree = retry_tree(pg.dsn, handlers, poll_interval=30)
    # what the room's writer saw: its call to the killed gateway failed at once with
    # ActorCrashed (`storage` marks a crashed child's mailbox down while it restarts the
    # group); the retry path itself uses the real gateway, restarted
    buffer, writer = await writer_to_a_crashed_gateway(tree.bus)
    async with pg.trio_connection() as db, open_tree(tree.sup):
        with trio.fail_after(30):
            await trio.testing.wait_all_tasks_blocked(0.05)  # the capture waits for a message
        await writer.write_batch()  # fails at once, hands the row over to the waiting capture
        tree.sup.kill_child("sql-gateway", "test: the demo's chaos")  # the gateway dies...
        stop_now(tree.retry, CAPTURE_NAME)  # ...and storage's rest_for_one stops the capture
        assert buffer.handed_over == 1  # the writer let go of it
        assert len(buffer) == 0

        async def stored() -> int:
            return int(
                await db.call(
                    lambda conn: conn.fetchval(
                        "SELECT count(*) FROM daz_chat_messages WHERE event_id = $1",
                        LINE.event_id,
                    )
                )
            )

        assert await poll(stored, timeout=60) == 1
        queued = await db.call(
            lambda conn: conn.fetchval(
                "SELECT status FROM daz_retry_queue WHERE event_id = $1", f"log-{LINE.event_id}"
            )
        )
        assert queued == "completed"

        async def drained() -> bool:  # nothing else left behind in the queue
            left = await db.call(
                lambda conn: conn.fetchval(
                    "SELECT count(*) FROM daz_retry_queue WHERE status <> 'completed'"
                )
            )
            return left == 0

        assert await poll(drained, timeout=30)


async def test_rows_a_failed_write_cannot_hand_to_any_capture_are_counted_refused(caplog):
    """A tree without a retry capture (nothing subscribes to ``chat.log.failed``): the rows
    of a failed write are not counted as handed over (nothing would store them); they are
    counted refused and an error names them."""
    buffer, writer = await writer_to_a_crashed_gateway(EventBus())
    with trio.fail_after(10):
        await writer.write_batch()
    assert (buffer.handed_over, buffer.refused, len(buffer)) == (0, 1, 0)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("1 rows not stored" in e and "no retry capture" in e for e in errors), errors
