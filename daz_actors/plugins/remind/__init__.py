"""The ``remind`` plugin: ``!remind <duration> [text]`` (``90s``, ``10m``, ``1h30m``).

A reminder is a row of ``daz_reminders`` and, in the same transaction, a queue item
``remind.fire`` (with the plugin's name) not handed out before the reminder is due: the
retry queue is the timer, so reminders survive restarts and nothing sleeps per reminder.
When it is due a retry worker says it once in the channel (say_once.py); one that fell
due while the bot was down fires when it is back and says how late it is.

Config (``[plugins.remind]``): ``max_duration`` (``"24h"`` by default), ``late_after``
(seconds past due before a reminder says it is late), ``min_rank``, ``cooldown``.

This module is the plugin's light declaration (read when a config is checked); the
command and the firing are in `runtime`, imported by `setup`.
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING, Any

import attrs

from daz_actors.plugins.declaration import Plugin, PluginParts
from daz_actors.plugins.durations import DurationError, parse_duration

if TYPE_CHECKING:
    from daz_actors.plugins.api import PluginContext

__all__ = ["RemindParams", "plugin"]

NAME = "remind"


def _duration(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise ValueError(f'max_duration must be a duration like "24h", got {value!r}')
    try:
        seconds = parse_duration(value)
    except DurationError as exc:
        raise ValueError(f"max_duration: {exc}") from None
    if seconds < 1:
        raise ValueError("max_duration must be at least 1s")


@attrs.frozen(kw_only=True)
class RemindParams:
    """``[plugins.remind]``."""

    max_duration: str = attrs.field(default="24h", validator=_duration)  # the longest
    late_after: float = 30.0  # seconds past due: then it says how late it is
    min_rank: float = 0
    cooldown: float = 5.0  # seconds between two !remind of one user

    @property
    def max_seconds(self) -> int:
        return parse_duration(self.max_duration)


def setup(ctx: PluginContext[RemindParams]) -> PluginParts:
    """The remind command and its fire intent (`runtime.setup`)."""
    from daz_actors.plugins.remind.runtime import setup as setup_remind

    return setup_remind(ctx)


plugin: Plugin[RemindParams] = Plugin(
    name=NAME,
    description="!remind <duration> [text]: said when due, also after a restart",
    version="0.1.0",
    params=RemindParams,
    migrations=files(__name__).joinpath("migrations"),
    setup=setup,
    enabled_by_default=True,
)
