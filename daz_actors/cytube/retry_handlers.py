"""The CyTube layer's retry handlers: say a failed chat line or PM again, rerun a command."""

from __future__ import annotations

import logging

from daz_actors.cytube.connection import CannotSpeak
from daz_actors.cytube.events import SendChat, SendPrivate
from daz_actors.cytube.router import rerun_command
from daz_actors.retry.handlers import AttemptContext, HandlerRegistry, PermanentError
from daz_actors.storage.queue_types import QueueItem

__all__ = ["register_cytube_handlers", "resend_chat"]

log = logging.getLogger("daz_actors.cytube")

HOLD_SHARE = 0.5  # of the attempt's timeout, spent waiting for the bot to be able to speak


async def resend_chat(item: QueueItem, ctx: AttemptContext) -> None:
    """Handler for ``cytube.send_chat`` and ``cytube.send_pm``: send it again.

    The same event id goes with it, so a failure of this attempt is not queued twice.
    Raises `SendFailed` (retryable) when the echo does not come. When the bot cannot speak
    in the room (no such room in this process, not joined, not logged in, within half the
    attempt's timeout), the line is dropped, logged, and the item completes: a reply is only
    worth saying while it is fresh, and waiting rooms must not burn retries into dead
    letters.
    """
    data = item.event_data if isinstance(item.event_data, dict) else {}
    channel, msg = data.get("channel"), data.get("msg")
    if not isinstance(channel, str) or not isinstance(msg, str):
        raise PermanentError(f"{item.event_type} item needs 'channel' and 'msg' in its data")
    ref = ctx.registry.get(f"room:{channel}/connection")
    if ref is None:
        log.warning("%s: not said again: no room for this channel in this process", channel)
        return
    hold = item.attempt_timeout * HOLD_SHARE
    ids: dict[str, str] = {"event_id": item.event_id}
    if item.correlation_id:
        ids["correlation_id"] = item.correlation_id
    request: SendChat | SendPrivate
    if item.event_type == "cytube.send_pm":
        to = data.get("to")
        if not isinstance(to, str):
            raise PermanentError("cytube.send_pm item needs 'to' in its data")
        request = SendPrivate(to=to, msg=msg, hold=hold, **ids)
    else:
        request = SendChat(msg=msg, hold=hold, **ids)
    try:
        await ref.ask(request, timeout=item.attempt_timeout)
    except CannotSpeak as exc:
        log.warning("%s: not said again (%s); dropped", channel, exc)


def register_cytube_handlers(handlers: HandlerRegistry) -> HandlerRegistry:
    """Add ``cytube.send_chat``, ``cytube.send_pm`` and ``command.run`` to `handlers`."""
    handlers.add("cytube.send_chat", resend_chat, description="say a failed chat line again")
    handlers.add("cytube.send_pm", resend_chat, description="send a failed private message again")
    handlers.add("command.run", rerun_command, description="run a failed chat command again")
    return handlers
