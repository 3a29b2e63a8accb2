"""The ``usertracker`` plugin: who is in each channel, their sessions, ``!seen <name>``.

Its actor ``tracker`` hears joins, leaves, chat lines and userlists on the bus and keeps
``daz_usertracker_users`` (one row per user and channel: here now or not, last join and
leave, last line) and ``daz_usertracker_sessions`` (one row per stay, open while the user
is here). Every write is idempotent and guarded by time, so a write redone late by the
retry queue never undoes a newer one.

A userlist (the bot joined or rejoined the channel: after a restart, a reconnect) is a
snapshot, not a series of joins: users already in an open session stay in it; users
listed without one get a session marked ``join_seen = false`` (they came while the bot was
away); open sessions of users not listed are closed, ``leave_seen = false``. A bot restart
therefore neither ends nor starts anyone's session.

``!seen <name>`` says whether the user is here now, or when they were last here, and what
they last said. Config (``[plugins.usertracker]``): ``cooldown`` (seconds per user),
``quote_length`` (characters of the last line shown).

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

__all__ = ["UserTrackerParams", "plugin"]

NAME = "usertracker"


def _quote_length(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 10 <= value <= 200:
        raise ValueError(f"quote_length must be an integer from 10 to 200, got {value!r}")


@attrs.frozen(kw_only=True)
class UserTrackerParams:
    """``[plugins.usertracker]``."""

    cooldown: float = attrs.field(default=5.0, validator=non_negative)  # s between two !seen
    quote_length: int = attrs.field(default=150, validator=_quote_length)
    write_timeout: float = attrs.field(default=10.0, validator=positive)  # s per write


def setup(ctx: PluginContext[UserTrackerParams]) -> PluginParts:
    """The plugin's parts (`runtime.setup`)."""
    from daz_actors.plugins.usertracker.runtime import setup as setup_runtime

    return setup_runtime(ctx)


plugin: Plugin[UserTrackerParams] = Plugin(
    name=NAME,
    description="sessions per user and channel (join, leave, last line); !seen <name>",
    version="0.1.0",
    params=UserTrackerParams,
    migrations=files(__name__).joinpath("migrations"),
    setup=setup,
)
