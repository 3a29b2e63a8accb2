"""The application's retry handlers: each layer's own, in one registry."""

from __future__ import annotations

from daz_actors.cytube.retry_handlers import register_cytube_handlers
from daz_actors.retry.handlers import HandlerRegistry
from daz_actors.retry.handlers import default_handlers as retry_layer_handlers

__all__ = ["default_handlers"]


def default_handlers() -> HandlerRegistry:
    """Every built-in handler: ``sql.exec``, ``cytube.send_chat``/``_pm``, ``command.run``."""
    return register_cytube_handlers(retry_layer_handlers())
