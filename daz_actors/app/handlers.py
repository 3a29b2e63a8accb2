"""The application's retry handlers: each layer's own, in one registry."""

from __future__ import annotations

from daz_actors.cytube.elsewhere import Elsewhere
from daz_actors.cytube.retry_handlers import register_cytube_handlers
from daz_actors.retry.handlers import HandlerRegistry, register_retry_handlers

__all__ = ["default_handlers"]


def default_handlers(*, elsewhere: Elsewhere | None = None) -> HandlerRegistry:
    """Every built-in handler: the chat log writes, ``cytube.say``, ``command.run`` and
    ``actor.poison`` (which keeps a poison message as a dead letter). On a cluster node,
    `elsewhere` hands items for channels other nodes hold over to them."""
    return register_cytube_handlers(register_retry_handlers(HandlerRegistry()), elsewhere=elsewhere)
