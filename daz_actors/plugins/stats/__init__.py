"""The ``stats`` plugin: ``!stats`` for the channel (lines today and in all, top chatters,
busiest hour, media played today).

It reads counts, not the chat log: its migration adds ``daz_stats_hours`` (lines per
channel and hour) and ``daz_stats_users`` (lines per channel and user), kept by a trigger
on the core's ``daz_chat_messages`` in the same transaction as each insert (so they are
exactly as durable as the lines, and a line logged twice is counted once), and filled
from the lines already logged when the migration runs. ``!stats`` then reads a few
hundred rows through their keys however long the log grows (``python -m bench.stats``
measures it on a million lines beside the plain queries of the chat log).

Media played today come from the mediatracker's plays when that plugin's table exists,
else from the media changes of the core's channel log (which also counts the media
announced again when the bot rejoins).

Config (``[plugins.stats]``): ``cooldown`` (seconds per user), ``top`` (chatters shown),
``timezone`` (an IANA name: when "today" starts and how the busiest hour is shown; the
counts are kept per UTC hour, so a zone whose offset is not whole hours starts "today"
at the hour holding local midnight).

This module is the plugin's light declaration (read when a config is checked); the
actors, commands and writes are in `runtime`, imported by `setup`.
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from daz_actors.plugins.declaration import Plugin, PluginParts
from daz_actors.runtime.validators import non_negative

if TYPE_CHECKING:
    from daz_actors.plugins.api import PluginContext

__all__ = ["StatsParams", "plugin"]

NAME = "stats"


def _timezone(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as UTC)") from None


def _top(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10:
        raise ValueError(f"top must be an integer from 1 to 10, got {value!r}")


@attrs.frozen(kw_only=True)
class StatsParams:
    """``[plugins.stats]``."""

    cooldown: float = attrs.field(default=10.0, validator=non_negative)
    top: int = attrs.field(default=3, validator=_top)
    timezone: str = attrs.field(default="UTC", validator=_timezone)


def setup(ctx: PluginContext[StatsParams]) -> PluginParts:
    """The plugin's parts (`runtime.setup`)."""
    from daz_actors.plugins.stats.runtime import setup as setup_runtime

    return setup_runtime(ctx)


plugin: Plugin[StatsParams] = Plugin(
    name=NAME,
    description="!stats: lines today, top chatters, busiest hour, media played",
    version="0.1.0",
    params=StatsParams,
    migrations=files(__name__).joinpath("migrations"),
    setup=setup,
)
