"""The built-in plugins' queued writes: each intent survives the trip through the queue's
JSON (what a retry worker decodes is what was queued), is named after its plugin, and
the plugins' setup declares every one of them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from daz_actors.plugins import greeter, mediatracker, usertracker
from daz_actors.plugins.api import PluginContext
from daz_actors.plugins.greeter import runtime as greeter_rt
from daz_actors.plugins.mediatracker import runtime as mediatracker_rt
from daz_actors.plugins.usertracker import runtime as usertracker_rt
from daz_actors.retry.intents import IntentType, intent_data
from daz_actors.runtime.bus import EventBus
from daz_actors.runtime.registry import Registry

WRITES: list[tuple[IntentType[Any], Any]] = [
    (usertracker_rt.JOINED.intent, usertracker_rt.Joined(channel="c", username="Ann", at=1.5)),
    (usertracker_rt.LEFT.intent, usertracker_rt.Left(channel="c", username="Ann", at=2.5)),
    (
        usertracker_rt.SAID.intent,
        usertracker_rt.Said(channel="c", username="Ann", text="hé", at=3.0),
    ),
    (
        usertracker_rt.PRESENT.intent,
        usertracker_rt.Present(channel="c", usernames=("Ann", "bob"), at=4.0),
    ),
    (
        mediatracker_rt.PLAYED.intent,
        mediatracker_rt.Played(
            channel="c",
            media_type="yt",
            media_id="x",
            title="T",
            duration_s=61.0,
            at=5.0,
            queued_by=None,
        ),
    ),
    (
        mediatracker_rt.PLAYED.intent,
        mediatracker_rt.Played(
            channel="c",
            media_type="yt",
            media_id="x",
            title="T",
            duration_s=0.0,
            at=5.0,
            queued_by="ann",
            replay_slack=30.0,
        ),
    ),
    (
        greeter_rt.GREETED.intent,
        greeter_rt.Greeted(channel="c", username="Ann", at=6.0, next_at=9.0),
    ),
    (greeter_rt.OPTED.intent, greeter_rt.Opted(channel="c", username="Ann", out=True, at=7.0)),
]


@pytest.mark.parametrize(("intent_type", "args"), WRITES)
def test_a_queued_write_decodes_to_what_was_queued(intent_type: IntentType[Any], args: Any):
    """Through JSON (the queue's jsonb) and back, the arguments are equal."""
    intent = intent_type.intent(args)
    data = json.loads(json.dumps(intent_data(intent)))
    assert data["version"] == intent_type.version
    decoded = intent_type.decode(type(intent)(name=intent.name, version=1, args=data["args"]))
    assert decoded == args


@pytest.mark.parametrize("module", [usertracker, mediatracker, greeter])
def test_setup_declares_every_write_of_the_plugin(module: Any) -> None:
    """Each plugin's intents are named <plugin>.<what> and handed to the host by setup."""
    plugin = module.plugin
    ctx: PluginContext[Any] = PluginContext(
        name=plugin.name, params=plugin.params(), channels=None, registry=Registry(),
        bus=EventBus(),
    )  # fmt: skip
    parts = plugin.setup(ctx)
    names = {i.name for i in parts.intents}
    written = {t.name for t, _ in WRITES if t.name.startswith(f"{plugin.name}.")}
    assert written
    assert written <= names
    assert all(n.startswith(f"{plugin.name}.") for n in names)
