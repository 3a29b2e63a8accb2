"""The ``quote`` plugin: ``!quote <name>``, a random past line of that user, and ``!rq``, a
random line of anyone, from the chat log (the core's ``daz_chat_messages``).

Never the bot's own lines, never commands (lines starting with the room's prefix), never
blank lines. It writes nothing and has no tables of its own.

The pick stays fast on a chat log of millions of lines: no ``ORDER BY random()`` over
the rows. A random instant between the first and the last line of the user (or of the
channel) is drawn, and the first quotable line at or after it is read through the index
(``channel, lower(username), sent_at`` or ``channel, sent_at``), wrapping round to the
first line before it: a handful of index probes whatever the table's size. The price: a
line that follows a long silence is likelier than one in a busy stretch.

Config (``[plugins.quote]``): ``cooldown`` (seconds per user), ``quote_length``
(characters shown).

This module is the plugin's light declaration (read when a config is checked); the
actors, commands and writes are in `runtime`, imported by `setup`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from daz_actors.plugins.declaration import Plugin, PluginParts
from daz_actors.runtime.validators import non_negative

if TYPE_CHECKING:
    from daz_actors.plugins.api import PluginContext

__all__ = ["QuoteParams", "plugin"]

NAME = "quote"


def _quote_length(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 20 <= value <= 250:
        raise ValueError(f"quote_length must be an integer from 20 to 250, got {value!r}")


@attrs.frozen(kw_only=True)
class QuoteParams:
    """``[plugins.quote]``."""

    cooldown: float = attrs.field(default=5.0, validator=non_negative)
    quote_length: int = attrs.field(default=220, validator=_quote_length)


def setup(ctx: PluginContext[QuoteParams]) -> PluginParts:
    """The plugin's parts (`runtime.setup`)."""
    from daz_actors.plugins.quote.runtime import setup as setup_runtime

    return setup_runtime(ctx)


plugin: Plugin[QuoteParams] = Plugin(
    name=NAME,
    description="!quote <name>: a random past line of a user; !rq: a random line",
    version="0.1.0",
    params=QuoteParams,
    setup=setup,
)
