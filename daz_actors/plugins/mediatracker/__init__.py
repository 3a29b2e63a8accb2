"""The ``mediatracker`` plugin: every media played per channel; ``!nowplaying`` (``!np``),
``!lastplayed [n]``, ``!topmedia``.

Its actor ``tracker`` hears media changes on the bus and records each play in
``daz_mediatracker_plays`` (title, type, id, duration, when, who queued it when known) and
counts it in ``daz_mediatracker_media`` (one row per media and channel), in one statement
that is idempotent by the play's event id.

The server announces what is playing every time the bot (re)joins the channel: a media
change for the media that started last, still within its duration (plus
``replay_slack`` seconds), is the same play heard again, not a new one; so a bot restart
or a reconnect counts nothing twice. (A live stream, duration 0, is the same play for as
long as nothing else played.)

Config (``[plugins.mediatracker]``): ``cooldown`` (seconds per user and command),
``lastplayed_max`` (most plays ``!lastplayed`` lists), ``top`` (entries of ``!topmedia``),
``replay_slack``, ``write_timeout``.

This module is the plugin's light declaration (read when a config is checked); the
actors, commands and writes are in `runtime`, imported by `setup`.
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING, Any

import attrs

from daz_actors.plugins.declaration import Plugin, PluginParts
from daz_actors.runtime.validators import non_negative, positive

if TYPE_CHECKING:
    from daz_actors.plugins.api import PluginContext

__all__ = ["MediaTrackerParams", "plugin"]

NAME = "mediatracker"


def _count(low: int, high: int) -> Any:
    def check(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{attr.name} must be an integer from {low} to {high}, got {value!r}")

    return check


@attrs.frozen(kw_only=True)
class MediaTrackerParams:
    """``[plugins.mediatracker]``."""

    cooldown: float = attrs.field(default=5.0, validator=non_negative)
    lastplayed_max: int = attrs.field(default=10, validator=_count(1, 20))
    top: int = attrs.field(default=5, validator=_count(1, 10))
    replay_slack: float = attrs.field(default=120.0, validator=non_negative)  # seconds
    write_timeout: float = attrs.field(default=10.0, validator=positive)


def setup(ctx: PluginContext[MediaTrackerParams]) -> PluginParts:
    """The plugin's parts (`runtime.setup`)."""
    from daz_actors.plugins.mediatracker.runtime import setup as setup_runtime

    return setup_runtime(ctx)


plugin: Plugin[MediaTrackerParams] = Plugin(
    name=NAME,
    description="every media played per channel; !nowplaying (!np), !lastplayed, !topmedia",
    version="0.1.0",
    params=MediaTrackerParams,
    migrations=files(__name__).joinpath("migrations"),
    setup=setup,
)
