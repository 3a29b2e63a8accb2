"""The enabled plugins of one process: their contexts, commands, retry handlers and actors.

The application makes one `PluginHost` from the config before it builds the tree: the
rooms' routers take `commands_for(channel)`, the retry workers' handler registry takes
`register_handlers`, and the ``plugins`` actor kind (kind.py) runs `subtree`: one
``plugin:<name>`` supervisor per plugin with actors, one_for_one under ``plugins``, so a
crashing plugin restarts alone and never takes a room or another plugin down. A plugin's
actors report ready as they start (`ready_at_once`): one that cannot start never holds
the tree's start back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import trio

from daz_actors.cytube.commands import CommandRegistry
from daz_actors.cytube.elsewhere import Elsewhere
from daz_actors.plugins.api import PluginContext
from daz_actors.plugins.declaration import PluginParts
from daz_actors.plugins.names import plugin_actor_name
from daz_actors.plugins.settings import PluginSettings
from daz_actors.retry.handlers import HandlerRegistry
from daz_actors.retry.policies import RetryPolicy
from daz_actors.runtime.actor import ActorContext, Startable
from daz_actors.runtime.backoff import BackoffPolicy, Jitter
from daz_actors.runtime.bus import EventBus
from daz_actors.runtime.errors import ConfigError, NameTaken
from daz_actors.runtime.registry import Registry
from daz_actors.runtime.supervision_policy import Strategy, SupervisorPolicy
from daz_actors.runtime.supervisor import ChildSpec, Supervisor

__all__ = ["PLUGIN_SUPERVISION", "LoadedPlugin", "PluginHost"]

# A plugin's own supervisor: restarts back off up to 30 s, so a plugin that crashes for
# good keeps being restarted (10 restarts never fit in 60 s) and never escalates.
PLUGIN_SUPERVISION = SupervisorPolicy(
    strategy=Strategy.ONE_FOR_ONE,
    max_restarts=10,
    within_seconds=60.0,
    backoff=BackoffPolicy(initial=0.5, multiplier=2.0, max_delay=30.0, jitter=Jitter.PROPORTIONAL),
    reset_after=60.0,
)


@attrs.frozen(kw_only=True)
class LoadedPlugin:
    """One enabled plugin, set up."""

    settings: PluginSettings
    context: PluginContext[Any]
    parts: PluginParts


def ready_at_once(start: Startable) -> Startable:
    """`start`, reporting ready to its supervisor before it runs: a plugin actor that cannot
    start (its ``on_start`` raises, every time) then crashes like a running one, restarted
    with backoff, instead of holding its supervisor (and every sibling after the
    ``plugins`` subtree, the rooms among them) back from being ready."""

    async def run(
        ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await start(ctx)

    run.__qualname__ = f"ready_at_once({getattr(start, '__qualname__', start)!s})"
    return run


class PluginHost:
    """Every enabled plugin, set up once with the process's registry and bus."""

    def __init__(
        self,
        settings: Mapping[str, PluginSettings],
        *,
        registry: Registry,
        bus: EventBus,
        bot_names: Mapping[str, str] | None = None,
        retry_policies: Mapping[str, RetryPolicy] | None = None,
        elsewhere: Elsewhere | None = None,
    ) -> None:
        self.registry = registry
        self.bus = bus
        self.plugins: dict[str, LoadedPlugin] = {}
        commands: dict[str, str] = {}  # command -> plugin, to name both on a clash
        for name, setting in settings.items():
            context: PluginContext[Any] = PluginContext(
                name=name,
                params=setting.params,
                channels=setting.channels,
                registry=registry,
                bus=bus,
                bot_names=dict(bot_names or {}),
                retry_policies=dict(retry_policies or {}),
                elsewhere=elsewhere,
            )
            parts = setting.plugin.setup(context)
            if not isinstance(parts, PluginParts):
                raise TypeError(f"plugin {name!r}: setup must return PluginParts, got {parts!r}")
            for command in parts.commands:
                if command.name in commands:
                    raise ConfigError(
                        f"plugins.{name}",
                        f"command !{command.name} is also brought by plugin "
                        f"{commands[command.name]!r}: disable one of them",
                    )
                commands[command.name] = name
            for intent in parts.intents:
                if not intent.name.startswith(f"{name}."):
                    raise ValueError(
                        f"plugin {name!r}: intent {intent.name!r} must be named {name}.<what>"
                    )
            self.plugins[name] = LoadedPlugin(settings=setting, context=context, parts=parts)

    def commands_for(self, channel: str, extra: CommandRegistry | None = None) -> CommandRegistry:
        """The commands of the plugins enabled in `channel` (and `extra`'s)."""
        registry = CommandRegistry()
        if extra is not None:
            registry.include(extra)
        for loaded in self.plugins.values():
            if not loaded.context.active_in(channel):
                continue
            for command in loaded.parts.commands:
                try:
                    registry.add(
                        command.name, command.fn, description=command.help,
                        min_rank=command.min_rank, cooldown=command.cooldown,
                    )  # fmt: skip
                except NameTaken as exc:
                    raise ConfigError(f"plugins.{loaded.context.name}", str(exc)) from None
        return registry

    def register_handlers(self, handlers: HandlerRegistry) -> HandlerRegistry:
        """Add every enabled plugin's intents to `handlers`."""
        for loaded in self.plugins.values():
            for intent in loaded.parts.intents:
                handlers.add(intent.name, intent, description=intent.description)
        return handlers

    def plugin_specs(self) -> list[ChildSpec]:
        """One ``plugin:<name>`` supervisor per plugin that runs actors."""
        specs = []
        for name, loaded in self.plugins.items():
            if not loaded.parts.actors:
                continue
            supervisor_name = plugin_actor_name(name)
            supervisor = Supervisor(
                supervisor_name,
                [
                    ChildSpec(
                        name=actor.name,
                        start=ready_at_once(actor.start),
                        restart=actor.restart,
                        shutdown_timeout=actor.shutdown_timeout,
                        mailbox_size=actor.mailbox_size,
                    )
                    for actor in loaded.parts.actors
                ],
                policy=PLUGIN_SUPERVISION,
                registry=self.registry,
                bus=self.bus,
                prefix=f"{supervisor_name}/",
            )
            specs.append(ChildSpec(name=supervisor_name, start=supervisor, shutdown_timeout=None))
        return specs

    def subtree(self, name: str) -> Supervisor:
        """The ``plugins`` supervisor (one_for_one) of every plugin's supervisor."""
        return Supervisor(
            name,
            self.plugin_specs(),
            policy=SupervisorPolicy(
                strategy=Strategy.ONE_FOR_ONE, max_restarts=20, within_seconds=60.0
            ),
            registry=self.registry,
            bus=self.bus,
        )

    def names(self) -> Sequence[str]:
        """The enabled plugins' names, sorted."""
        return sorted(self.plugins)
