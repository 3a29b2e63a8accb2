"""The ``tell`` plugin: ``!tell <name> <message>``, said once the next time they are here.

The message waits in ``daz_tells`` (at most one per sender and target in a channel). The
plugin's ``watcher`` hears joins and chat lines on the bus; when a user with a message
waiting joins or speaks, it queues ``tell.deliver`` (with the plugin's name), and the retry
workers say each waiting message once (say_once.py): in the channel, or by PM with
``delivery = "pm"``, marked delivered only when the server echoed it. The queue keeps
trying across crashes, restarts, database outages and chat server restarts.

Config (``[plugins.tell]``): ``delivery`` ("channel" or "pm"), ``max_length`` (characters
of a message, at most 250), ``min_rank``, ``cooldown`` (seconds per user).

This module is the plugin's light declaration (read when a config is checked); the
commands, the watcher and the delivery are in `runtime`, imported by `setup`.
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING, Any

import attrs

from daz_actors.plugins.declaration import Plugin, PluginParts

if TYPE_CHECKING:
    from daz_actors.plugins.api import PluginContext

__all__ = ["MAX_LENGTH", "TellParams", "plugin"]

NAME = "tell"
MAX_LENGTH = 250  # a message, so that the whole line fits CyTube's 320 characters


def _delivery(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if value not in ("channel", "pm"):
        raise ValueError(f'delivery must be "channel" or "pm", got {value!r}')


def _positive(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{attr.name} must be a number of seconds > 0, got {value!r}")


def _max_length(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LENGTH:
        raise ValueError(f"max_length must be an integer from 1 to {MAX_LENGTH}, got {value!r}")


@attrs.frozen(kw_only=True)
class TellParams:
    """``[plugins.tell]``."""

    delivery: str = attrs.field(default="channel", validator=_delivery)  # or "pm"
    max_length: int = attrs.field(default=200, validator=_max_length)  # of a message
    min_rank: float = 0  # who may leave a message
    cooldown: float = 5.0  # seconds between two !tell of one user
    # seconds between two reads of who has messages waiting (besides the one at start):
    # a message stored where the watcher did not hear of it is noticed within this time
    refresh_seconds: float = attrs.field(default=60.0, validator=_positive)


def setup(ctx: PluginContext[TellParams]) -> PluginParts:
    """The tell command, its watcher and its delivery intent (`runtime.setup`)."""
    from daz_actors.plugins.tell.runtime import setup as setup_tell

    return setup_tell(ctx)


plugin: Plugin[TellParams] = Plugin(
    name=NAME,
    description="!tell <name> <message>: said once, when they next join or speak",
    version="0.1.0",
    params=TellParams,
    migrations=files(__name__).joinpath("migrations"),
    setup=setup,
    enabled_by_default=True,
)
