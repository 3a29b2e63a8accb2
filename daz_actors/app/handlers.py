"""The application's retry handlers: each layer's own, in one registry."""

from __future__ import annotations

from daz_actors.cytube.retry_handlers import register_cytube_handlers
from daz_actors.retry.handlers import HandlerRegistry

__all__ = ["default_handlers"]


def default_handlers() -> HandlerRegistry:
    """Every built-in handler: the chat log writes, ``cytube.say`` and ``command.run``."""
    return register_cytube_handlers(HandlerRegistry())
