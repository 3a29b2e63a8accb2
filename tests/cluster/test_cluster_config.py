"""The ``[cluster]`` table: off by default, validated with the key path named."""

from __future__ import annotations

import pytest

from daz_actors.app.builtin_kinds import CLUSTER_NODE, default_kinds
from daz_actors.app.config import default_config_text, parse_config
from daz_actors.cluster.keeper import KEEPER_NAME
from daz_actors.cluster.node import ClusterNode
from daz_actors.runtime.bus import EventBus
from daz_actors.runtime.errors import ConfigError
from daz_actors.runtime.kinds import BuildContext
from daz_actors.runtime.registry import Registry
from daz_actors.runtime.supervisor import Supervisor


def rooms_children(resources: dict[str, object], extra: str = "") -> list[str]:
    """The children the ``rooms`` kind's factory starts with, for the shipped config."""
    kinds = default_kinds()
    config = parse_config(default_config_text() + extra, kinds)
    name = next(n for n, actor in config.actors.items() if actor.kind == "rooms")
    ctx = BuildContext(
        name=name,
        config=config,
        registry=Registry(),
        bus=EventBus(),
        resources={"database_url": "postgresql://x@/y", **resources},
    )
    rooms = kinds.get("rooms").build(config.actor_params[name], ctx)
    assert isinstance(rooms, Supervisor)
    return [info.name for info in rooms.which_children()]


def test_a_single_process_is_the_default_and_joins_every_channel_itself():
    """Without [cluster] the rooms are the plain ones: every configured channel, no keeper."""
    config = parse_config(default_config_text(), default_kinds())
    assert config.cluster.enabled is False
    assert rooms_children({}) == ["room:daz-actors"]


def test_a_cluster_node_starts_only_its_lease_keeper_and_joins_what_it_wins():
    """With a cluster node the rooms supervisor starts with the lease keeper alone."""
    extra = "\n[cluster]\nenabled = true\nttl = 6\n"
    config = parse_config(default_config_text() + extra, default_kinds())
    node = ClusterNode(config.cluster)
    assert rooms_children({CLUSTER_NODE: node}, extra) == [KEEPER_NAME]
    assert node.channels == ("daz-actors",)
    assert node.settings.renew_every == 2.0
    assert node.settings.margin == 2.0


@pytest.mark.parametrize(
    ("table", "path", "reason"),
    [
        ("ttl = 3\nrenew_interval = 2\nleave_margin = 2", "cluster.renew_interval", "below ttl"),
        ("ttl = -1", "cluster.ttl", "> 0"),
        ("weight = 0", "cluster.weight", "> 0"),
        ("bogus = 1", "cluster.bogus", "unknown key"),
        ("channel_weights = {a = 0}", "cluster.channel_weights", "channel_weights.a"),
        ('name = "a b"', "cluster.name", "without spaces"),
        ("settle = -1", "cluster.settle", "settle"),
    ],
)
def test_a_bad_cluster_setting_is_refused_naming_its_key(table, path, reason):
    """Each bad value gets a ConfigError starting with its key path and saying why."""
    with pytest.raises(ConfigError) as caught:
        parse_config(default_config_text() + "\n[cluster]\n" + table + "\n", default_kinds())
    assert str(caught.value).startswith(path), str(caught.value)
    assert reason in str(caught.value)
