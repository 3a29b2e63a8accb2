"""An example daz-actors plugin (docs/plugins.md walks through it).

* ``[plugins.hello]`` takes ``greeting`` (a string, default "hello").
* ``!hello``: records a greeting in its own table (migration 0001) and answers with the
  count. When the database is away, the greeting is queued as the intent ``hello.record``
  (with the plugin's name) and recorded later by its retry handler.
* ``!hellolater``: queues the greeting as ``hello.record`` on purpose (the queue records it).
* an actor, ``watcher``, counts the joins it hears on the bus; ``!joins`` asks it, and
  ``!hellocrash`` makes it crash: its supervisor ``plugin:hello`` restarts it alone.

This module is what the entry point names, and it stays light: checking a config loads
every installed plugin's declaration, so the commands, the actor and the intent live in
`runtime`, imported when the plugin is set up.
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

import attrs

from daz_actors.plugins import Plugin

if TYPE_CHECKING:
    from daz_actors.plugins import PluginContext, PluginParts


@attrs.frozen(kw_only=True)
class HelloParams:
    """[plugins.hello]: checked like any config table (a wrong key or type names itself)."""

    greeting: str = "hello"

    def __attrs_post_init__(self) -> None:
        if not self.greeting.strip():
            raise ValueError("greeting must not be blank")


def setup(ctx: PluginContext[HelloParams]) -> PluginParts:
    """Called once per process: the plugin's commands, actors and intents."""
    from daz_hello_plugin.runtime import setup as setup_hello

    return setup_hello(ctx)


plugin = Plugin(
    name="hello",
    description="an example plugin: a command, a table, an actor, a retried intent",
    version="0.1.0",
    params=HelloParams,
    migrations=files(__name__).joinpath("migrations"),
    setup=setup,
)
