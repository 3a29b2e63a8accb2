"""The ``greeter`` plugin: greets users who join, at most once per cooldown.

Its actor ``greeter`` hears joins on the bus. A user who joins is greeted with one of the
configured greetings, picked at random, unless: it is the bot itself; it is a guest (rank
below 1) and ``greet_guests`` is off; they said ``!greet off``; or they were greeted less
than their cooldown ago. The cooldown is picked at random between ``cooldown_min`` and
``cooldown_max`` seconds after each greeting (45 min to 3 h, as the original bot) and
kept in ``daz_greeter_users``, so a restart of the bot greets nobody twice. A userlist
(the bot joining or rejoining) greets nobody: only joins do.

``!greet off`` / ``!greet on`` switch the greetings off and on for the user who says it;
``!greet`` says which it is.

Config (``[plugins.greeter]``): ``greetings`` (a list; ``{name}`` is the user's name),
``greet_guests``, ``cooldown_min``, ``cooldown_max`` (seconds), ``command_cooldown``,
``write_timeout``.

This module is the plugin's light declaration (read when a config is checked); the
actors, commands and writes are in `runtime`, imported by `setup`.
"""

from __future__ import annotations

import string
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import attrs

from daz_actors.cytube.events import CHAT_LIMIT
from daz_actors.plugins.declaration import Plugin, PluginParts
from daz_actors.runtime.validators import non_negative, positive

if TYPE_CHECKING:
    from daz_actors.plugins.api import PluginContext

__all__ = ["GreeterParams", "plugin"]

NAME = "greeter"
LONGEST_NAME = "x" * 20  # CyTube names are at most 20 characters
DEFAULT_GREETINGS = (
    "hi {name}!",
    "hey {name}, welcome back",
    "look who it is: {name}",
    "welcome, {name}",
)


def _greetings(_inst: object, _attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("greetings must list at least one greeting")
    for text in value:
        fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
        if fields - {"name"}:
            raise ValueError(
                f"greeting {text!r} uses {sorted(fields - {'name'})}: only {{name}} is known"
            )
        if not text.format(name="x").strip():
            raise ValueError("a greeting must not be blank")
        if len(text.format(name=LONGEST_NAME)) > CHAT_LIMIT:
            raise ValueError(f"greeting {text[:40]!r}... is longer than {CHAT_LIMIT} characters")


@attrs.frozen(kw_only=True)
class GreeterParams:
    """``[plugins.greeter]``."""

    greetings: tuple[str, ...] = attrs.field(default=DEFAULT_GREETINGS, validator=_greetings)
    greet_guests: bool = False  # guests: rank below 1 (not logged in)
    cooldown_min: float = attrs.field(default=45 * 60.0, validator=non_negative)  # seconds
    cooldown_max: float = attrs.field(default=3 * 3600.0, validator=non_negative)
    command_cooldown: float = attrs.field(default=5.0, validator=non_negative)  # !greet
    write_timeout: float = attrs.field(default=10.0, validator=positive)

    def __attrs_post_init__(self) -> None:
        if self.cooldown_max < self.cooldown_min:
            raise ValueError(
                f"cooldown_max ({self.cooldown_max}) must not be below cooldown_min "
                f"({self.cooldown_min})"
            )


def setup(ctx: PluginContext[GreeterParams]) -> PluginParts:
    """The plugin's parts (`runtime.setup`)."""
    from daz_actors.plugins.greeter.runtime import setup as setup_runtime

    return setup_runtime(ctx)


plugin: Plugin[GreeterParams] = Plugin(
    name=NAME,
    description="greets users who join (a random cooldown per user); !greet off|on",
    version="0.1.0",
    params=GreeterParams,
    migrations=files(__name__).joinpath("migrations"),
    setup=setup,
)
