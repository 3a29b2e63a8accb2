"""Configuration: good files load into attrs classes; each kind of bad file gets its own
clear error naming the key path; the tree is built and printed as configured."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from strategies import TreeShape, tree_shapes

from daz_actors import (
    Actor,
    BackoffPolicy,
    ChildState,
    ConfigError,
    DazActorsError,
    EventBus,
    Jitter,
    Registry,
    Restart,
    Strategy,
    Supervisor,
    UnknownActorKind,
    actor_factory,
    run_tree,
)
from daz_actors.app.build import build_tree, describe_backoff, format_tree
from daz_actors.app.builtin_kinds import default_kinds
from daz_actors.app.config import (
    DEFAULT_RETRY_POLICIES,
    Config,
    RetryPolicy,
    default_config_text,
    load_config,
    parse_config,
)
from daz_actors.retry.failure_log import FailureLogParams
from daz_actors.runtime.kinds import ActorKind, ActorKinds, BuildContext, NoParams
from daz_actors.storage.sql_gateway import SqlGatewayParams

# ---------------------------------------------------------------------------- test kinds


def _at_least_one(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"repeat must be >= 1, got {value}")


@attrs.frozen(kw_only=True)
class EchoParams:
    """Parameters of the test kind ``echo``."""

    greeting: str = "hi"  # prefixed to every reply
    repeat: int = attrs.field(default=1, validator=_at_least_one)  # how often
    tags: tuple[str, ...] = ()  # free labels
    volume: float = 1.0  # any number


@attrs.frozen(kw_only=True)
class PingerParams:
    """Parameters of the test kind ``pinger``: one required key."""

    target: str  # whom to ping
    pair: tuple[int, str] = (0, "")  # a fixed-length tuple


class Echo(Actor):
    """Replies to every message with its greeting."""

    def __init__(self, params: EchoParams, name: str) -> None:
        self.params = params
        self.name = name

    async def handle(self, message: Any) -> Any:
        return (self.name, self.params.greeting * self.params.repeat, message)


def build_echo(params: EchoParams, ctx: BuildContext) -> Any:
    """Factory of the ``echo`` kind."""
    return actor_factory(lambda: Echo(params, ctx.name))


def build_pinger(params: PingerParams, ctx: BuildContext) -> Any:
    """Factory of the ``pinger`` kind (an echo whose greeting is its target)."""
    return actor_factory(lambda: Echo(EchoParams(greeting=params.target), ctx.name))


def build_idle(_params: NoParams, ctx: BuildContext) -> Any:
    """Factory of the ``idle`` kind."""
    return actor_factory(lambda: Echo(EchoParams(greeting="idle"), ctx.name))


def make_kinds() -> ActorKinds:
    """A fresh registry with the test kinds, nothing else."""
    kinds = ActorKinds()
    kinds.add(ActorKind(name="echo", params=EchoParams, build=build_echo, description="echo"))
    kinds.add(ActorKind(name="pinger", params=PingerParams, build=build_pinger))
    kinds.register("idle", params=NoParams)(build_idle)
    return kinds


@pytest.fixture(autouse=True)
def _no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the config text, not a URL from the environment."""
    monkeypatch.delenv("DAZ_DATABASE_URL", raising=False)


def parse(text: str) -> Config:
    """Parse dedented config text with the test kinds."""
    return parse_config(textwrap.dedent(text), make_kinds(), source="test.toml")


GOOD = """\
data_dir = "/srv/daz"

[database]
url = "postgresql://bot:secret@db/daz"

[tree]
root = "app"

[supervisors.app]
strategy = "one_for_one"
children = ["storage", "pinger", "quiet"]

[supervisors.storage]
strategy = "rest_for_one"
max_restarts = 2
within_seconds = 10
reset_after = 4.5
restart = "transient"
shutdown_timeout = 20
children = ["db", "workers"]
backoff = { initial = 1, multiplier = 3, max_delay = 27, jitter = "none" }

[supervisors.workers]
strategy = "one_for_all"
children = ["w1", "w2"]
backoff = { initial = 0.5, max_delay = 8, jitter = "proportional", jitter_ratio = 0.1 }

[actors.db]
kind = "echo"
params = { greeting = "hello", repeat = 2, tags = ["a", "b"], volume = 3 }

[actors.pinger]
kind = "pinger"
restart = "temporary"
mailbox_size = 7
params = { target = "db", pair = [1, "x"] }

[actors.quiet]
kind = "idle"
restart = "transient"

[actors.w1]
kind = "echo"

[actors.w2]
kind = "echo"
shutdown_timeout = 0

[retry_policies.sql_operation]
max_retries = 7

[retry_policies.my_op]
initial = 1
max_delay = 10
jitter = "full"
"""


# ---------------------------------------------------------------------------- good files


def test_shipped_default_config_loads() -> None:
    """The config inside the package loads with the built-in kinds."""
    cfg = load_config(None, default_kinds())
    assert cfg.source == "<default>"
    assert cfg.root == "daz"
    assert cfg.supervisors["daz"].children == (
        "storage", "plugins", "rooms", "health-monitor", "failure-log",
    )  # fmt: skip
    assert cfg.actors["plugins"].kind == "plugins"
    assert cfg.actor_params["rooms"].channels == ("daz-actors",)
    assert cfg.supervisors["storage"].children == ("sql-gateway", "retry")
    assert cfg.supervisors["storage"].strategy is Strategy.REST_FOR_ONE
    assert isinstance(cfg.actor_params["sql-gateway"], SqlGatewayParams)
    assert cfg.supervisors["daz"].strategy is Strategy.ONE_FOR_ONE
    assert cfg.actors["failure-log"].kind == "failure-log"
    assert isinstance(cfg.actor_params["failure-log"], FailureLogParams)
    assert set(DEFAULT_RETRY_POLICIES) <= set(cfg.retry_policies)
    assert "[tree]" in default_config_text()


def test_good_multi_level_file_loads(tmp_path: Path) -> None:
    """Nested supervisors, actors of several kinds and their params all load as written."""
    path = tmp_path / "good.toml"
    path.write_text(GOOD, encoding="utf-8")
    cfg = load_config(path, make_kinds())
    assert cfg.source == str(path)
    assert cfg.root == "app"
    assert cfg.data_dir == Path("/srv/daz")
    assert cfg.database.url == "postgresql://bot:secret@db/daz"
    assert "secret" not in repr(cfg.database)
    assert {n: s.children for n, s in cfg.supervisors.items()} == {
        "app": ("storage", "pinger", "quiet"),
        "storage": ("db", "workers"),
        "workers": ("w1", "w2"),
    }
    storage = cfg.supervisors["storage"]
    assert storage.strategy is Strategy.REST_FOR_ONE
    assert storage.restart is Restart.TRANSIENT
    assert storage.shutdown_timeout == 20.0
    assert storage.backoff == BackoffPolicy(
        initial=1.0, multiplier=3.0, max_delay=27.0, jitter=Jitter.NONE
    )
    policy = storage.policy()
    assert (policy.max_restarts, policy.within_seconds, policy.reset_after) == (2, 10.0, 4.5)
    assert cfg.supervisors["workers"].strategy is Strategy.ONE_FOR_ALL
    assert cfg.supervisors["workers"].backoff.jitter_ratio == 0.1
    assert cfg.supervisors["app"].backoff == BackoffPolicy()  # the default
    assert cfg.actor_params["db"] == EchoParams(
        greeting="hello", repeat=2, tags=("a", "b"), volume=3.0
    )
    assert cfg.actor_params["w1"] == EchoParams()
    assert cfg.actor_params["pinger"] == PingerParams(target="db", pair=(1, "x"))
    assert cfg.actor_params["quiet"] == NoParams()
    assert cfg.actors["pinger"].restart is Restart.TEMPORARY
    assert cfg.actors["pinger"].mailbox_size == 7
    assert cfg.actors["w2"].shutdown_timeout == 0.0
    assert cfg.actors["w1"].shutdown_timeout == 5.0


def test_retry_policy_override_is_merged_over_the_defaults() -> None:
    """A [retry_policies.X] table changes only the keys it names; new names get their own."""
    cfg = parse(GOOD)
    sql = cfg.retry_policies["sql_operation"]
    assert sql == RetryPolicy(
        max_retries=7, initial=2.0, max_delay=60.0, multiplier=1.5, attempt_timeout=15.0,
        priority=5, tags=("database",),
    )  # fmt: skip
    assert cfg.retry_policies["cytube_command"] == RetryPolicy(
        **DEFAULT_RETRY_POLICIES["cytube_command"]
    )
    mine = cfg.retry_policies["my_op"]
    assert (mine.initial, mine.max_delay, mine.jitter) == (1.0, 10.0, Jitter.FULL)
    assert mine.max_retries == RetryPolicy().max_retries
    assert cfg.retry_policy("my_op") is mine
    assert cfg.retry_policy("never_configured") is cfg.retry_policies["default"]
    assert mine.backoff().bounds(0) == (0.0, 1.0)


def test_default_retry_table_matches_the_design() -> None:
    """The built-in retry policies are the ones in DESIGN section 4's table."""
    cfg = parse(GOOD.replace("max_retries = 7", "max_retries = 3"))
    rows = {
        name: (p.max_retries, p.initial, p.max_delay, p.multiplier, p.attempt_timeout)
        for name, p in cfg.retry_policies.items()
        if name != "my_op"
    }
    assert rows == {
        "cytube_command": (5, 5.0, 300.0, 2.0, 30.0),
        "sql_operation": (3, 2.0, 60.0, 1.5, 15.0),
        "plugin_request": (3, 1.0, 30.0, 2.0, 20.0),
        "default": (3, 60.0, 3600.0, 2.0, 30.0),
    }


def test_database_url_from_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """$DAZ_DATABASE_URL replaces the URL in the file."""
    monkeypatch.setenv("DAZ_DATABASE_URL", "postgresql://env/db")
    assert parse(GOOD).database.url == "postgresql://env/db"


def test_data_dir_defaults_to_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without data_dir in the file, $DAZ_DATA_DIR is used."""
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path / "state"))
    cfg = parse(GOOD.replace('data_dir = "/srv/daz"', ""))
    assert cfg.data_dir == tmp_path / "state"
    assert cfg.database.url == "postgresql://bot:secret@db/daz"


@given(shape=tree_shapes())
def test_any_valid_tree_loads_as_written(shape: TreeShape) -> None:
    """A random valid tree loads with every node, child order, strategy and restart kept."""
    cfg = parse_config(shape.toml(kind="idle"), make_kinds())
    assert cfg.root == shape.root
    assert {n: s.children for n, s in cfg.supervisors.items()} == shape.supervisors
    assert {n: s.strategy for n, s in cfg.supervisors.items()} == shape.strategies
    assert {n: a.restart for n, a in cfg.actors.items()} == shape.actors


@given(shape=tree_shapes(), data=st.data())
def test_any_node_left_out_is_reported_as_unreachable(
    shape: TreeShape, data: st.DataObject
) -> None:
    """Removing one child from its supervisor's list is reported at that very node."""
    parents = shape.parents()
    victim = data.draw(st.sampled_from(sorted(parents)))
    section = "supervisors" if victim in shape.supervisors else "actors"

    def drop(children: dict[str, list[str]]) -> None:
        children[parents[victim]].remove(victim)

    with pytest.raises(ConfigError) as info:
        parse_config(shape.toml(kind="idle", edit=drop), make_kinds())
    assert info.value.path == f"{section}.{victim}"
    assert "not placed in the tree" in info.value.reason


@given(shape=tree_shapes())
def test_format_tree_lists_every_node_once_at_its_depth(shape: TreeShape) -> None:
    """The printed tree has one line per node, indented by its depth, in start order."""
    cfg = parse_config(shape.toml(kind="idle"), make_kinds())
    lines = format_tree(cfg).splitlines()
    assert len(lines) == len(shape.supervisors) + len(shape.actors)
    expected_order: list[str] = []

    def walk(name: str) -> None:
        expected_order.append(name)
        for child in shape.supervisors.get(name, ()):
            walk(child)

    walk(shape.root)
    for line, name in zip(lines, expected_order, strict=True):
        depth = shape.depth(name)
        prefix, rest = line[: 4 * depth], line[4 * depth :]
        assert rest.startswith(f"{name} (")
        assert set(prefix) <= set("│ ├└─")
        assert depth == 0 or prefix.endswith(("├── ", "└── "))
        kind = "supervisor" if name in shape.supervisors else "actor idle"
        assert f"{name} ({kind}" in line


# ---------------------------------------------------------------------------- bad files

BASE = """\
[tree]
root = "daz"

[supervisors.daz]
children = ["a"]

[actors.a]
kind = "echo"
"""


def base_with(**sections: str) -> str:
    """BASE plus extra lines appended to the named tables (``daz``, ``a``, ``top``)."""
    text = BASE
    if "a" in sections:
        text = text.replace('kind = "echo"\n', f'kind = "echo"\n{sections["a"]}\n')
    if "daz" in sections:
        text = text.replace('children = ["a"]\n', f'children = ["a"]\n{sections["daz"]}\n')
    if "top" in sections:
        text = f"{sections['top']}\n{text}"
    if "tail" in sections:
        text = f"{text}\n{sections['tail']}\n"
    return text


BAD_FILES = [
    # unknown kind
    pytest.param(
        BASE.replace('kind = "echo"', 'kind = "nope"'),
        "actors.a.kind",
        "unknown actor kind 'nope' (known: echo, idle, pinger)",
        id="unknown-kind",
    ),
    # bad enum values
    pytest.param(
        base_with(daz='strategy = "one_for_none"'),
        "supervisors.daz.strategy",
        "expected one of 'one_for_one', 'one_for_all', 'rest_for_one', got the string",
        id="bad-strategy",
    ),
    pytest.param(
        base_with(a='restart = "sometimes"'),
        "actors.a.restart",
        "expected one of 'permanent', 'transient', 'temporary'",
        id="bad-restart",
    ),
    pytest.param(
        base_with(daz='backoff = { jitter = "lots" }'),
        "supervisors.daz.backoff.jitter",
        "expected one of 'none', 'proportional', 'full', 'decorrelated'",
        id="bad-jitter",
    ),
    # negative or impossible numbers
    pytest.param(
        base_with(daz="backoff = { initial = -1 }"),
        "supervisors.daz.backoff.initial",
        "initial must be a finite number >= 0",
        id="negative-backoff-initial",
    ),
    pytest.param(
        base_with(daz="backoff = { multiplier = 0.5 }"),
        "supervisors.daz.backoff.multiplier",
        "multiplier must be a finite number >= 1",
        id="backoff-multiplier-below-one",
    ),
    pytest.param(
        base_with(daz="backoff = { initial = 10, max_delay = 5 }"),
        "supervisors.daz.backoff.max_delay",
        "max_delay (5) must not be below initial (10)",
        id="backoff-max-below-initial",
    ),
    pytest.param(
        base_with(daz="backoff = { jitter_ratio = 1.5 }"),
        "supervisors.daz.backoff.jitter_ratio",
        "jitter_ratio must be between 0 and 1",
        id="backoff-ratio-above-one",
    ),
    pytest.param(
        base_with(a="shutdown_timeout = -1"),
        "actors.a.shutdown_timeout",
        "shutdown_timeout must be >= 0",
        id="negative-actor-shutdown-timeout",
    ),
    pytest.param(
        base_with(daz="shutdown_timeout = -0.5"),
        "supervisors.daz.shutdown_timeout",
        "shutdown_timeout must be >= 0",
        id="negative-supervisor-shutdown-timeout",
    ),
    pytest.param(
        base_with(tail="[retry_policies.default]\ninitial = -5"),
        "retry_policies.default.initial",
        "initial must be >= 0",
        id="negative-retry-initial",
    ),
    pytest.param(
        base_with(tail="[retry_policies.sql_operation]\nmax_delay = 1"),
        "retry_policies.sql_operation.max_delay",
        "max_delay (1) must not be below initial (2)",
        id="retry-max-below-default-initial",
    ),
    pytest.param(
        base_with(tail="[retry_policies.default]\nattempt_timeout = 0"),
        "retry_policies.default.attempt_timeout",
        "attempt_timeout must be > 0",
        id="zero-attempt-timeout",
    ),
    pytest.param(
        base_with(daz="max_restarts = -1"),
        "supervisors.daz.max_restarts",
        "max_restarts must be >= 0",
        id="negative-max-restarts",
    ),
    pytest.param(
        base_with(daz="within_seconds = 0"),
        "supervisors.daz.within_seconds",
        "within_seconds must be > 0",
        id="zero-window",
    ),
    pytest.param(
        base_with(a="mailbox_size = 0"),
        "actors.a.mailbox_size",
        "mailbox_size must be > 0",
        id="zero-mailbox",
    ),
    pytest.param(
        base_with(daz="backoff = { initial = 1" + "0" * 400 + " }"),
        "supervisors.daz.backoff.initial",
        "expected a finite number",
        id="number-past-float-range",
    ),
    pytest.param(
        base_with(daz="reset_after = inf"),
        "supervisors.daz.reset_after",
        "expected a finite number, got inf",
        id="infinite-number",
    ),
    # missing keys
    pytest.param(
        BASE.replace('[tree]\nroot = "daz"\n', ""),
        "tree",
        "required key is missing",
        id="no-tree",
    ),
    pytest.param(
        BASE.replace('root = "daz"', ""),
        "tree.root",
        "required key is missing",
        id="no-root",
    ),
    pytest.param(
        BASE.replace('children = ["a"]', 'strategy = "one_for_one"'),
        "supervisors.daz.children",
        "required key is missing",
        id="no-children",
    ),
    pytest.param(
        BASE.replace('kind = "echo"', 'restart = "permanent"'),
        "actors.a.kind",
        "required key is missing",
        id="no-kind",
    ),
    pytest.param(
        BASE.replace('root = "daz"', 'root = "main"'),
        "tree.root",
        "'main' is not defined in [supervisors]",
        id="root-not-defined",
    ),
    # wrong types
    pytest.param(
        base_with(daz='max_restarts = "5"'),
        "supervisors.daz.max_restarts",
        "expected an integer, got the string '5'",
        id="string-for-int",
    ),
    pytest.param(
        base_with(daz="max_restarts = 2.5"),
        "supervisors.daz.max_restarts",
        "expected an integer, got a number",
        id="float-for-int",
    ),
    pytest.param(
        BASE.replace('children = ["a"]', "children = 5"),
        "supervisors.daz.children",
        "expected a list, got an integer",
        id="int-for-string-list",
    ),
    pytest.param(
        BASE.replace('children = ["a"]', 'children = ["a", 2]'),
        "supervisors.daz.children[1]",
        "expected a string, got an integer",
        id="int-in-string-list",
    ),
    pytest.param(
        base_with(daz="within_seconds = true"),
        "supervisors.daz.within_seconds",
        "expected a number, got a boolean",
        id="bool-for-number",
    ),
    pytest.param(
        BASE.replace('kind = "echo"', "kind = 3"),
        "actors.a.kind",
        "expected a string, got an integer",
        id="int-for-string",
    ),
    pytest.param(
        base_with(daz='backoff = "fast"'),
        "supervisors.daz.backoff",
        "expected a table, got the string 'fast'",
        id="string-for-table",
    ),
    pytest.param(
        'supervisors = 3\n[tree]\nroot = "daz"\n[actors.a]\nkind = "echo"\n',
        "supervisors",
        "expected a table, got an integer",
        id="int-for-section",
    ),
    pytest.param(
        base_with(tail="[retry_policies]\nfast = 1"),
        "retry_policies.fast",
        "expected a table",
        id="int-for-retry-policy",
    ),
    pytest.param(
        base_with(top="data_dir = 1"),
        "data_dir",
        "expected a string, got an integer",
        id="int-for-data-dir",
    ),
    # unknown keys
    pytest.param(
        base_with(top='colour = "blue"'),
        "colour",
        "unknown key; expected one of actors, cluster, data_dir, database",
        id="unknown-top-level-key",
    ),
    pytest.param(
        base_with(daz='strategey = "one_for_all"'),
        "supervisors.daz.strategey",
        "unknown key; expected one of backoff, children,",
        id="misspelt-supervisor-key",
    ),
    pytest.param(
        base_with(a="restarts = 3"),
        "actors.a.restarts",
        "unknown key; expected one of kind, mailbox_size, params, redeliver, restart, "
        "shutdown_timeout",
        id="unknown-actor-key",
    ),
    pytest.param(
        base_with(daz="backoff = { initial = 1, cap = 9 }"),
        "supervisors.daz.backoff.cap",
        "unknown key",
        id="unknown-backoff-key",
    ),
    pytest.param(
        base_with(tail="[retry_policies.default]\nretries = 9"),
        "retry_policies.default.retries",
        "unknown key",
        id="unknown-retry-key",
    ),
    pytest.param(
        BASE.replace('root = "daz"', 'root = "daz"\nroots = []'),
        "tree.roots",
        "unknown key; expected one of root",
        id="unknown-tree-key",
    ),
    # the shape of the tree
    pytest.param(
        base_with(tail='[supervisors.p]\nchildren = ["q"]\n[supervisors.q]\nchildren = ["p"]'),
        "supervisors.q.children",
        "cycle in the tree: q -> p -> q",
        id="cycle",
    ),
    pytest.param(
        base_with(tail='[supervisors.s]\nchildren = ["s"]'),
        "supervisors.s.children",
        "cycle in the tree: s -> s",
        id="self-cycle",
    ),
    pytest.param(
        BASE.replace('children = ["a"]', 'children = ["a", "loop"]')
        + '[supervisors.loop]\nchildren = ["daz"]\n',
        "supervisors.daz.children",
        "cycle in the tree: daz -> loop -> daz",
        id="cycle-through-root",
    ),
    pytest.param(
        base_with(tail='[supervisors.orphan]\nchildren = ["daz"]'),
        "supervisors.orphan.children",
        "the root 'daz' cannot be a child",
        id="root-as-child",
    ),
    pytest.param(
        BASE.replace('children = ["a"]', 'children = ["a", "a"]'),
        "supervisors.daz.children[1]",
        "duplicate name: 'a' is already a child of 'daz'",
        id="child-listed-twice",
    ),
    pytest.param(
        BASE.replace('children = ["a"]', 'children = ["a", "s"]')
        + '[supervisors.s]\nchildren = ["a"]\n',
        "supervisors.s.children[0]",
        "duplicate name: 'a' is already a child of 'daz'",
        id="child-in-two-supervisors",
    ),
    pytest.param(
        BASE.replace('children = ["a"]', 'children = ["a"]\n[supervisors.a]\nchildren = []'),
        "actors.a",
        "name 'a' is also a supervisor",
        id="name-is-supervisor-and-actor",
    ),
    pytest.param(
        BASE.replace('children = ["a"]', 'children = ["a", "ghost"]'),
        "supervisors.daz.children[1]",
        "'ghost' is not defined in [supervisors] or [actors]",
        id="child-not-defined",
    ),
    pytest.param(
        base_with(tail='[actors.lonely]\nkind = "echo"'),
        "actors.lonely",
        "defined but not placed in the tree",
        id="unreachable-actor",
    ),
    pytest.param(
        base_with(tail="[supervisors.spare]\nchildren = []"),
        "supervisors.spare",
        "defined but not placed in the tree",
        id="unreachable-supervisor",
    ),
    pytest.param(
        BASE.replace('children = ["a"]', 'children = ["a", "b c"]')
        + '[actors."b c"]\nkind = "echo"\n',
        "actors.b c",
        "names must be non-empty, without spaces or '/'",
        id="name-with-space",
    ),
    # TOML itself
    pytest.param(
        BASE.replace('root = "daz"', "root = daz"),
        "",
        "test.toml is not valid TOML: Invalid value (at line 2, column 8)",
        id="invalid-toml",
    ),
    pytest.param(
        BASE + '[actors.a]\nkind = "echo"\n',
        "",
        "test.toml is not valid TOML: Cannot declare ('actors', 'a') twice",
        id="toml-table-declared-twice",
    ),
    # the kind's own parameters
    pytest.param(
        base_with(a="params = { volume = 2, loudness = 11 }"),
        "actors.a.params.loudness",
        "unknown key; expected one of greeting, repeat, tags, volume",
        id="unknown-param",
    ),
    pytest.param(
        base_with(a='params = { repeat = "twice" }'),
        "actors.a.params.repeat",
        "expected an integer, got the string 'twice'",
        id="wrong-param-type",
    ),
    pytest.param(
        base_with(a="params = { repeat = 0 }"),
        "actors.a.params.repeat",
        "repeat must be >= 1, got 0",
        id="param-validator",
    ),
    pytest.param(
        base_with(a='params = { tags = "x" }'),
        "actors.a.params.tags",
        "expected a list, got the string 'x'",
        id="string-for-param-list",
    ),
    pytest.param(
        BASE.replace('kind = "echo"', 'kind = "pinger"'),
        "actors.a.params.target",
        "required key is missing",
        id="missing-required-param",
    ),
    pytest.param(
        BASE.replace('kind = "echo"', 'kind = "pinger"\nparams = { target = "x", pair = [1] }'),
        "actors.a.params.pair",
        "expected a list of 2 items, got 1",
        id="fixed-tuple-param-too-short",
    ),
    pytest.param(
        BASE.replace(
            'kind = "echo"', 'kind = "pinger"\nparams = { target = "x", pair = ["1", "y"] }'
        ),
        "actors.a.params.pair[0]",
        "expected an integer, got the string '1'",
        id="fixed-tuple-param-wrong-item",
    ),
    pytest.param(
        BASE.replace('kind = "echo"', 'kind = "idle"\nparams = { anything = 1 }'),
        "actors.a.params.anything",
        "unknown key; no keys here",
        id="param-for-kind-without-params",
    ),
    pytest.param(
        base_with(a="params = 3"),
        "actors.a.params",
        "expected a table, got an integer",
        id="params-not-a-table",
    ),
]


@pytest.mark.parametrize(("text", "path", "reason"), BAD_FILES)
def test_bad_file_gets_a_clear_error_naming_the_key(text: str, path: str, reason: str) -> None:
    """Each kind of bad file raises ConfigError whose message starts with the key path
    and says why."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, make_kinds(), source="test.toml")
    error = info.value
    assert error.path == path
    assert reason in error.reason
    assert str(error) == (f"{path}: {error.reason}" if path else error.reason)
    assert isinstance(error, ValueError)
    assert isinstance(error, DazActorsError)


def test_bad_file_errors_are_distinct() -> None:
    """No two kinds of bad file share one message: each says what is wrong with it."""
    messages = []
    for param in BAD_FILES:
        text = param.values[0]
        with pytest.raises(ConfigError) as info:
            parse_config(str(text), make_kinds(), source="test.toml")
        messages.append(str(info.value))
    assert len(set(messages)) == len(messages)


def test_unknown_kind_is_its_own_error_type() -> None:
    """An unknown kind raises UnknownActorKind, a ConfigError that lists the known kinds."""
    with pytest.raises(UnknownActorKind, match=r"actors\.a\.kind: unknown actor kind 'nope'"):
        parse(BASE.replace('kind = "echo"', 'kind = "nope"'))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A path that does not exist gives a ConfigError naming the file."""
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=r"cannot read config file .*absent\.toml.*No such file"):
        load_config(missing, make_kinds())


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not UTF-8 text gives a ConfigError, not a UnicodeDecodeError."""
    path = tmp_path / "latin1.toml"
    path.write_bytes(BASE.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1\.toml' is not UTF-8 text"):
        load_config(path, make_kinds())


def test_kind_names_are_registered_once() -> None:
    """Registering a kind name twice, or a params class that is not attrs, is refused."""
    kinds = make_kinds()
    with pytest.raises(ValueError, match="already registered"):
        kinds.add(ActorKind(name="echo", params=EchoParams, build=build_echo))
    with pytest.raises(TypeError, match="must be an attrs class"):
        kinds.add(ActorKind(name="raw", params=dict, build=build_echo))
    assert kinds.names() == ["echo", "idle", "pinger"]
    assert "idle" in kinds
    assert "raw" not in kinds


# ---------------------------------------------------------------------------- building


def test_build_tree_matches_the_config() -> None:
    """`build_tree` makes a root Supervisor whose children, nested, are those of the config."""
    cfg = parse(GOOD)
    root = build_tree(cfg, make_kinds(), registry=Registry(), bus=EventBus())
    assert isinstance(root, Supervisor)
    assert root.name == "app"
    assert root.policy == cfg.supervisors["app"].policy()

    def shape(infos: Any) -> list[tuple[str, Restart, Any]]:
        return [
            (i.name, i.restart, None if i.children is None else shape(i.children)) for i in infos
        ]

    assert shape(root.which_children()) == [
        (
            "storage",
            Restart.TRANSIENT,
            [
                ("db", Restart.PERMANENT, None),
                (
                    "workers",
                    Restart.PERMANENT,
                    [("w1", Restart.PERMANENT, None), ("w2", Restart.PERMANENT, None)],
                ),
            ],
        ),
        ("pinger", Restart.TEMPORARY, None),
        ("quiet", Restart.TRANSIENT, None),
    ]
    assert all(i.state is ChildState.STOPPED for i in root.which_children())


async def test_built_tree_runs_with_configured_params() -> None:
    """The built tree starts, each actor answers with its own params, and it stops in order."""
    cfg = parse(GOOD)
    registry = Registry()
    root = build_tree(cfg, make_kinds(), registry=registry, bus=EventBus())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            tree = await nursery.start(run_tree, root)
            assert all(i.state is ChildState.RUNNING for i in tree.which_children())
            assert await registry.lookup("db").ask("x") == ("db", "hellohello", "x")
            assert await registry.lookup("w2").ask("y") == ("w2", "hi", "y")
            assert await registry.lookup("pinger").ask("z") == ("pinger", "db", "z")
            tree.stop()
    assert all(i.state is ChildState.STOPPED for i in root.which_children())


def test_format_tree_prints_each_node_with_its_policy() -> None:
    """`format_tree` draws the tree with every supervisor's and actor's policy."""
    text = format_tree(parse(GOOD))
    assert text.splitlines() == [
        "app (supervisor one_for_one, permanent, max 5 restarts in 60 s, backoff 0.1 s x2 "
        "up to 30 s, jitter proportional ±25%, reset after 30 s, shutdown no limit)",
        "├── storage (supervisor rest_for_one, transient, max 2 restarts in 10 s, backoff 1 s "
        "x3 up to 27 s, jitter none, reset after 4.5 s, shutdown 20 s)",
        "│   ├── db (actor echo, permanent, shutdown 5 s, mailbox 100)",
        "│   └── workers (supervisor one_for_all, permanent, max 5 restarts in 60 s, backoff "
        "0.5 s x2 up to 8 s, jitter proportional ±10%, reset after 30 s, shutdown no limit)",
        "│       ├── w1 (actor echo, permanent, shutdown 5 s, mailbox 100)",
        "│       └── w2 (actor echo, permanent, shutdown 0 s, mailbox 100)",
        "├── pinger (actor pinger, temporary, shutdown 5 s, mailbox 7)",
        "└── quiet (actor idle, transient, shutdown 5 s, mailbox 100)",
    ]


@pytest.mark.parametrize(
    ("policy", "text"),
    [
        (BackoffPolicy(), "backoff 0.1 s x2 up to 30 s, jitter proportional ±25%"),
        (BackoffPolicy(jitter_ratio=0.125), "jitter proportional ±12.5%"),
        (
            BackoffPolicy(initial=60, multiplier=1.5, max_delay=3600, jitter=Jitter.DECORRELATED),
            "backoff 60 s x1.5 up to 3600 s, jitter decorrelated",
        ),
    ],
)
def test_backoff_is_described_exactly(policy: BackoffPolicy, text: str) -> None:
    """The one-line backoff description shows the policy's numbers without rounding them."""
    assert describe_backoff(policy).endswith(text)


@attrs.frozen(kw_only=True)
class PrivateParams:
    """A params class with a private field, which attrs sets through its alias."""

    _level: int = 0  # set as ``level`` in the config


def test_private_params_field_is_read_by_its_init_name() -> None:
    """A private attrs field ``_level`` is configured as ``level``, as its __init__ takes it."""
    kinds = make_kinds()
    kinds.add(ActorKind(name="private", params=PrivateParams, build=build_idle))
    text = BASE.replace('kind = "echo"', 'kind = "private"\nparams = { level = 3 }')
    assert parse_config(text, kinds).actor_params["a"] == PrivateParams(level=3)
    with pytest.raises(ConfigError) as info:
        parse_config(text.replace("level = 3", "_level = 3"), kinds)
    assert info.value.path == "actors.a.params._level"
    assert "expected one of level" in info.value.reason


def test_the_dashboard_settings_of_docs_dashboard_md_load() -> None:
    """The `[http]` example of docs/dashboard.md loads; the defaults keep the dashboard on,
    with actions, its token read from DAZ_DASHBOARD_TOKEN."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "dashboard.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    config = parse_config(default_config_text() + "\n" + example, default_kinds())
    assert (config.http.host, config.http.port, config.http.read_only) == ("0.0.0.0", 9464, True)
    assert config.http.token_env == "DAZ_DASHBOARD_TOKEN"
    default = parse_config(default_config_text(), default_kinds()).http
    assert (default.dashboard, default.read_only) == (True, False)


@pytest.mark.parametrize("bad", ["", "1TOKEN", "MY-TOKEN", "A B"])
def test_a_token_variable_that_is_no_variable_name_is_refused(bad: str) -> None:
    """`[http] token_env` must be an environment variable's name; the error names the key."""
    with pytest.raises(
        ConfigError, match=r"^http\.token_env: token_env must be an environment variable name"
    ):
        parse_config(default_config_text() + f'\n[http]\ntoken_env = "{bad}"\n', default_kinds())
