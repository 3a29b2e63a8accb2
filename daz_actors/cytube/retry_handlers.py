"""The CyTube layer's retry handlers, one per intent it queues.

``chat.log``, ``pm.log`` and ``channel_event.log`` store a row again (`chat_log`);
``cytube.say`` says the undelivered rest of a line and ``command.run`` runs a failed
command again (`intents`).
"""

from __future__ import annotations

from daz_actors.cytube.chat_log import register_log_handlers
from daz_actors.cytube.elsewhere import Elsewhere
from daz_actors.cytube.intents import register_intent_handlers
from daz_actors.retry.handlers import HandlerRegistry

__all__ = ["register_cytube_handlers"]


def register_cytube_handlers(
    handlers: HandlerRegistry, *, elsewhere: Elsewhere | None = None
) -> HandlerRegistry:
    """Add the handlers of every intent the CyTube layer queues to `handlers`; on a
    cluster node, `elsewhere` hands items for channels other nodes hold over to them."""
    register_log_handlers(handlers)
    register_intent_handlers(handlers, elsewhere=elsewhere)
    return handlers
