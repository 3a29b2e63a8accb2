"""The event router's parameters, apart from the router so that reading a config imports
none of it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

from daz_actors.cytube.names import connection_name
from daz_actors.storage.gateway_params import GATEWAY_NAME

__all__ = ["RouterParams"]


def _text(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"{attr.name} must be a non-empty string without spaces, got {value!r}")


def _bot_name(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or any(c.isspace() for c in value):
        raise ValueError(f"bot_name must be a string without spaces, got {value!r}")


def _seconds(*, positive: bool) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def check(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
            or (positive and value == 0)
        ):
            bound = "> 0" if positive else ">= 0"
            raise ValueError(
                f"{attr.name} must be a finite number of seconds {bound}, got {value!r}"
            )

    return check


def _rank(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{attr.name} must be an integer rank, got {value!r}")


def _flag(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{attr.name} must be true or false, got {value!r}")


def _count(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attr.name} must be an integer >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class RouterParams:
    """Parameters of a room's event router."""

    channel: str = attrs.field(validator=_text)  # the CyTube channel
    bot_name: str = attrs.field(default="", validator=_bot_name)  # its lines are not commands
    command_prefix: str = attrs.field(default="!", validator=_text)  # starts a command
    command_cooldown: float = attrs.field(default=3.0, validator=_seconds(positive=False))
    # seconds a user waits before running the same command again
    debug_min_rank: int = attrs.field(default=2, validator=_rank)  # rank `!debug` needs
    log_history: bool = attrs.field(default=True, validator=_flag)
    # store the lines the server replays on join (flagged is_history)
    gateway: str = attrs.field(default=GATEWAY_NAME, validator=_text)  # SQL gateway's name
    connection: str = attrs.field(default="", validator=_bot_name)
    # the connection's registered name; "" means room:<channel>/connection
    log_timeout: float = attrs.field(default=5.0, validator=_seconds(positive=True))
    # seconds one log write (a batch) may take before it fails (and is retried via the queue)
    log_batch: int = attrs.field(default=500, validator=_count)
    # rows written in one transaction at most (the rows that arrived while the last ran)
    log_buffer: int = attrs.field(default=20_000, validator=_count)
    # rows waiting to be written at most; only when this many wait does the router wait
    command_timeout: float = attrs.field(default=10.0, validator=_seconds(positive=True))
    # seconds one command may run
    reply_timeout: float = attrs.field(default=5.0, validator=_seconds(positive=True))
    # seconds to wait for room in the connection's mailbox before the reply is queued
    max_running_commands: int = attrs.field(default=16, validator=_count)
    # commands running at once; more are ignored (counted)
    command_retry_window: float = attrs.field(default=60.0, validator=_seconds(positive=False))
    # a failed command older than this is not run again by the retry queue

    @property
    def connection_name(self) -> str:
        """Where replies go."""
        return self.connection or connection_name(self.channel)
