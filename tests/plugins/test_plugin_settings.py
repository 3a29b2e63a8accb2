"""[plugins.<name>] in the config: strict params, enabled/channels, clear errors; commands
per channel; the plugin API's own checks."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from daz_actors import default_kinds
from daz_actors.app.config import parse_config
from daz_actors.cytube.commands import CommandContext
from daz_actors.plugins import (
    InstalledPlugin,
    IntentType,
    Plugin,
    PluginCommand,
    PluginContext,
    PluginParts,
)
from daz_actors.plugins.host import PluginHost
from daz_actors.runtime.bus import EventBus
from daz_actors.runtime.errors import ConfigError
from daz_actors.runtime.registry import Registry


@attrs.frozen(kw_only=True)
class EchoParams:
    word: str = "echo"
    times: int = 1


async def echo(ctx: CommandContext) -> str:
    return ctx.args


def echo_setup(ctx: PluginContext[EchoParams]) -> PluginParts:
    return PluginParts(commands=[PluginCommand(name="echo", fn=echo, help="say it back")])


def make(name: str, *, default: bool = False, command: str = "echo") -> Plugin[Any]:
    def setup(ctx: PluginContext[Any]) -> PluginParts:
        return PluginParts(commands=[PluginCommand(name=command, fn=echo, help="say it back")])

    return Plugin(
        name=name, description="test", params=EchoParams, setup=setup,
        enabled_by_default=default,
    )  # fmt: skip


def installed(*plugins: Plugin[Any], broken: str | None = None) -> dict[str, InstalledPlugin]:
    found = {
        p.name: InstalledPlugin(name=p.name, value="x:y", distribution="d", plugin=p)
        for p in plugins
    }
    if broken:
        found[broken] = InstalledPlugin(
            name=broken, value="x:y", distribution="d", plugin=None, error="ImportError: no"
        )
    return found


BASE = """
[tree]
root = "daz"
[supervisors.daz]
children = [{children}]
[actors.plugins]
kind = "plugins"
{extra}
"""


def config(extra: str, plugins: dict[str, InstalledPlugin], *, placed: bool = True) -> Any:
    children = '"plugins"' if placed else ""
    text = BASE.format(children=children, extra=extra)
    if not placed:
        text = text.replace('[actors.plugins]\nkind = "plugins"\n', "")
        text = text.replace(
            "children = []", 'children = ["log"]\n[actors.log]\nkind = "failure-log"'
        )
    return parse_config(text, default_kinds(), installed=plugins)


def test_params_are_read_strictly_and_channels_kept() -> None:
    """Known keys are typed; enabled and channels belong to the host."""
    cfg = config(
        '[plugins.echo]\nword = "hey"\ntimes = 3\nchannels = ["a", "b"]', installed(make("echo"))
    )
    assert cfg.plugins["echo"].params == EchoParams(word="hey", times=3)
    assert cfg.plugins["echo"].channels == frozenset({"a", "b"})


@pytest.mark.parametrize(
    ("extra", "path", "reason"),
    [
        ("[plugins.echo]\ncolour = 1", "plugins.echo.colour", "unknown key"),
        ('[plugins.echo]\ntimes = "x"', "plugins.echo.times", "expected an integer"),
        ("[plugins.echo]\nenabled = 1", "plugins.echo.enabled", "expected true or false"),
        ('[plugins.echo]\nchannels = "a"', "plugins.echo.channels", "list of channel names"),
        ("[plugins.nope]\nword = 'x'", "plugins.nope", "no installed plugin named 'nope'"),
        ("[plugins.bad]", "plugins.bad", "failed to load: ImportError: no"),
    ],
)
def test_a_bad_plugin_table_names_its_key(extra: str, path: str, reason: str) -> None:
    """Each mistake is a ConfigError naming the key path and why."""
    with pytest.raises(ConfigError) as info:
        config(extra, installed(make("echo"), broken="bad"))
    assert info.value.path == path
    assert reason in str(info.value)


def test_switched_off_plugins_may_be_missing_or_broken() -> None:
    """enabled = false needs no installed (or working) plugin."""
    cfg = config(
        "[plugins.nope]\nenabled = false\n[plugins.bad]\nenabled = false",
        installed(make("echo"), broken="bad"),
    )
    assert cfg.plugins == {}


def test_defaults_apply_only_where_the_plugins_actor_is_placed() -> None:
    """A plugin on by default runs with the plugins actor; enabling one without it is an
    error; a config with neither runs none."""
    plugins = installed(make("auto", default=True), make("echo"))
    assert list(config("", plugins).plugins) == ["auto"]
    assert config("", plugins, placed=False).plugins == {}
    with pytest.raises(ConfigError, match="no actor of kind 'plugins'"):
        config("[plugins.echo]", plugins, placed=False)


def test_commands_exist_only_in_the_channels_of_their_plugin() -> None:
    """commands_for(channel) holds a plugin's commands where it is enabled only; two
    plugins with one command name are refused, naming both."""
    cfg = config(
        '[plugins.echo]\nchannels = ["a"]\n[plugins.other]',
        installed(make("echo"), make("other", command="other")),
    )
    host = PluginHost(cfg.plugins, registry=Registry(), bus=EventBus())
    assert "echo" in host.commands_for("a")
    assert "echo" not in host.commands_for("b")
    assert "other" in host.commands_for("b")
    clash = config("[plugins.echo]\n[plugins.twin]", installed(make("echo"), make("twin")))
    with pytest.raises(ConfigError, match="also brought by plugin 'echo'"):
        PluginHost(clash.plugins, registry=Registry(), bus=EventBus())


def test_the_api_refuses_what_it_cannot_run() -> None:
    """A bad plugin name, params that are not attrs, an intent outside the plugin's
    namespace, queueing another plugin's intent."""
    with pytest.raises(ValueError, match="invalid plugin name"):
        Plugin(name="Bad-Name", description="x", setup=echo_setup)
    with pytest.raises(TypeError, match="params must be an attrs class"):
        Plugin(name="ok", description="x", setup=echo_setup, params=dict)  # type: ignore[arg-type]

    async def run(args: EchoParams, ctx: Any) -> None:
        return None

    foreign = IntentType(name="other.thing", version=1, args=EchoParams, run=run)

    def setup(ctx: PluginContext[Any]) -> PluginParts:
        return PluginParts(intents=[foreign])

    cfg = config("[plugins.echo]", installed(make("echo")))
    bad = attrs.evolve(
        cfg.plugins["echo"], plugin=attrs.evolve(cfg.plugins["echo"].plugin, setup=setup)
    )
    with pytest.raises(ValueError, match=r"must be named echo\.<what>"):
        PluginHost({"echo": bad}, registry=Registry(), bus=EventBus())
    host = PluginHost(cfg.plugins, registry=Registry(), bus=EventBus())
    context = host.plugins["echo"].context
    with pytest.raises(ValueError, match="queues only its own intents"):
        context.new_item(foreign.intent(EchoParams()), policy=context.policy("x", _policy()))


def _policy() -> Any:
    from daz_actors.plugins import RetryPolicy

    return RetryPolicy()
