"""The configuration file: one TOML file, validated into attrs classes before anything starts.

Layout::

    data_dir = "..."                 # optional; default $DAZ_DATA_DIR or the user data dir
    [database]   url = "..."         # optional; $DAZ_DATABASE_URL wins; none = embedded
    [http]       host, port          # /healthz /readyz /metrics (127.0.0.1:9464)
                 dashboard, read_only, token_env   # the dashboard at / (same address)
    [tree]       root = "daz"        # the root supervisor
    [supervisors.NAME]               # strategy, intensity, backoff, children = [names]
    [actors.NAME]                    # kind = "...", restart, shutdown_timeout, [params]
    [retry_policies.NAME]            # per operation type; merged over the built-in table
    [retention]  chat_days, private_days, events_days   # optional; none: rows kept forever
    [cluster]    enabled, ttl, ...   # several processes on one PostgreSQL (docs/operating.md)
    [plugins.NAME]                   # enabled, channels, and the plugin's params

Every error is a `ConfigError` whose message starts with the key path.
"""

from __future__ import annotations

import importlib.resources
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from daz_actors.cluster.settings import ClusterSettings
from daz_actors.plugins.discovery import InstalledPlugin, installed_plugins
from daz_actors.plugins.names import PLUGINS_KIND
from daz_actors.plugins.settings import PluginSettings, read_plugin_settings
from daz_actors.retry.params import RetryParams
from daz_actors.retry.policies import DEFAULT_RETRY_POLICIES, RetryPolicy
from daz_actors.runtime.backoff import BackoffPolicy
from daz_actors.runtime.config_reader import read_attrs
from daz_actors.runtime.errors import ConfigError
from daz_actors.runtime.kinds import ActorKinds
from daz_actors.runtime.supervision_policy import Restart, Strategy, SupervisorPolicy
from daz_actors.runtime.validators import at_most, non_negative, positive
from daz_actors.storage.embedded_pg import DATA_DIR_ENV, DATABASE_URL_ENV, default_data_dir
from daz_actors.storage.retention import MAX_RETENTION_DAYS, TableRetention

__all__ = [
    "DEFAULT_RETRY_POLICIES",
    "ActorConfig",
    "ClusterSettings",
    "Config",
    "DatabaseConfig",
    "RetentionConfig",
    "RetryPolicy",
    "SupervisorConfig",
    "default_config_text",
    "load_config",
    "parse_config",
]


@attrs.frozen(kw_only=True)
class DatabaseConfig:
    """Where PostgreSQL is; no URL means the embedded server in the data directory."""

    url: str | None = attrs.field(default=None, repr=False)  # may hold a password: never logged


def _port(_inst: object, _attr: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {value!r}")


def _env_name(_inst: object, _attr: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not value.replace("_", "").isalnum() or value[0].isdigit():
        raise ValueError(
            "token_env must be an environment variable name (letters, digits and _, not"
            f" starting with a digit), got {value!r}"
        )


@attrs.frozen(kw_only=True)
class HttpConfig:
    """Where /healthz, /readyz and /metrics are served (loopback by default)."""

    enabled: bool = True
    host: str = "127.0.0.1"  # loopback: expose it on purpose, not by accident
    port: int = attrs.field(default=9464, validator=_port)  # 0: any free port (logged)
    dashboard: bool = True  # the operators' dashboard at / (docs/dashboard.md)
    read_only: bool = False  # the dashboard hides and refuses its actions
    # the environment variable holding the dashboard's access token (required off loopback)
    token_env: str = attrs.field(default="DAZ_DASHBOARD_TOKEN", validator=_env_name)


def _days(_inst: object, attr: attrs.Attribute[Any], value: float | None) -> None:
    if value is None:
        return
    if not value > 0:
        raise ValueError(
            f"{attr.name} must be > 0 (leave the key out to keep these rows forever), got {value:g}"
        )
    if value > MAX_RETENTION_DAYS:
        raise ValueError(f"{attr.name} must be at most {MAX_RETENTION_DAYS:g}, got {value:g}")


@attrs.frozen(kw_only=True)
class RetentionConfig:
    """How many days of chat and channel events are kept; a key left out keeps its rows
    forever (the default: users expect their logs kept). Rows are pruned by when the bot
    received them, by the retry actor's periodic cleanup (``cleanup_interval``), in
    batches of its ``cleanup_batch_size``."""

    chat_days: float | None = attrs.field(default=None, validator=_days)  # chat lines
    private_days: float | None = attrs.field(default=None, validator=_days)  # private messages
    events_days: float | None = attrs.field(default=None, validator=_days)  # joins, leaves, media

    def rules(self) -> tuple[TableRetention, ...]:
        """One rule per table with a retention."""
        # imported here: reading a config (`daz-actors config check`) needs no chat code
        from daz_actors.cytube.chat_log import ChannelEventRow, ChatLine, LogRow, PrivateLine

        given: list[tuple[type[LogRow], float | None]] = [
            (ChatLine, self.chat_days),
            (PrivateLine, self.private_days),
            (ChannelEventRow, self.events_days),
        ]
        return tuple(
            TableRetention(table=row.table, column=row.received_column, days=days)
            for row, days in given
            if days is not None
        )


@attrs.frozen(kw_only=True)
class SupervisorConfig:
    """A supervisor node of the tree."""

    children: tuple[str, ...]  # names from [supervisors] or [actors], in start order
    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = attrs.field(default=5, validator=non_negative)
    within_seconds: float = attrs.field(default=60.0, validator=positive)
    reset_after: float = attrs.field(default=30.0, validator=non_negative)
    backoff: BackoffPolicy = BackoffPolicy()
    restart: Restart = Restart.PERMANENT  # as a child of its own supervisor
    shutdown_timeout: float | None = attrs.field(default=None, validator=non_negative)
    # None: its parent waits until it has stopped its own children in order

    def policy(self) -> SupervisorPolicy:
        """The runtime policy this node describes."""
        return SupervisorPolicy(
            strategy=self.strategy,
            max_restarts=self.max_restarts,
            within_seconds=self.within_seconds,
            backoff=self.backoff,
            reset_after=self.reset_after,
        )


@attrs.frozen(kw_only=True)
class ActorConfig:
    """A leaf of the tree: an actor of a registered kind."""

    kind: str  # a name registered in ActorKinds
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float | None = attrs.field(default=5.0, validator=non_negative)
    mailbox_size: int = attrs.field(default=100, validator=[positive, at_most(1_000_000)])
    # see ChildSpec.redeliver
    redeliver: int = attrs.field(default=0, validator=[non_negative, at_most(100)])
    params: dict[str, Any] = attrs.field(factory=dict)  # read into the kind's params class


@attrs.frozen(kw_only=True)
class _TreeSection:
    root: str  # name of the root supervisor


@attrs.frozen(kw_only=True)
class _RawConfig:
    tree: _TreeSection
    data_dir: str | None = None
    database: DatabaseConfig = DatabaseConfig()
    http: HttpConfig = HttpConfig()
    supervisors: dict[str, SupervisorConfig] = attrs.field(factory=dict)
    actors: dict[str, ActorConfig] = attrs.field(factory=dict)
    retry_policies: dict[str, Any] = attrs.field(factory=dict)
    retention: RetentionConfig = RetentionConfig()
    cluster: ClusterSettings = ClusterSettings()
    plugins: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Config:
    """A validated configuration."""

    source: str  # the file it came from, or "<default>"
    data_dir: Path  # where the embedded database, spool and state live
    database: DatabaseConfig
    http: HttpConfig  # the health and metrics endpoints
    root: str  # the root supervisor's name
    supervisors: Mapping[str, SupervisorConfig]
    actors: Mapping[str, ActorConfig]
    actor_params: Mapping[str, Any]  # actor name -> its kind's params object
    retry_policies: Mapping[str, RetryPolicy]
    retention: RetentionConfig = RetentionConfig()  # chat and event rows kept (all: forever)
    cluster: ClusterSettings = ClusterSettings()  # several processes on one database
    # the enabled plugins, by name ([plugins.NAME]; docs/plugins.md)
    plugins: Mapping[str, PluginSettings] = attrs.field(factory=dict)

    @property
    def table_retention(self) -> tuple[TableRetention, ...]:
        """The tables the periodic cleanup prunes by age (none by default)."""
        return self.retention.rules()

    def retry_policy(self, operation: str) -> RetryPolicy:
        """The policy for `operation`, or the ``default`` one."""
        return self.retry_policies.get(operation) or self.retry_policies["default"]


def default_config_text() -> str:
    """The config that ships inside the package."""
    return importlib.resources.files("daz_actors.app").joinpath("default_config.toml").read_text()


def load_config(
    path: str | os.PathLike[str] | None,
    kinds: ActorKinds,
    *,
    installed: Mapping[str, InstalledPlugin] | None = None,
) -> Config:
    """Read and validate a config file (the shipped default when `path` is None)."""
    if path is None:
        return parse_config(default_config_text(), kinds, source="<default>", installed=installed)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            "", f"cannot read config file {os.fspath(path)!r}: {exc.strerror or exc}"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "",
            f"config file {os.fspath(path)!r} is not UTF-8 text: {exc.reason} at byte {exc.start}",
        ) from None
    return parse_config(text, kinds, source=os.fspath(path), installed=installed)


def parse_config(
    text: str,
    kinds: ActorKinds,
    *,
    source: str = "<string>",
    installed: Mapping[str, InstalledPlugin] | None = None,
) -> Config:
    """Validate config `text`; a `ConfigError` names the first key path that is wrong.

    `installed`: the plugins to choose from (default: the installed ones, found through
    their entry points when the config places the ``plugins`` actor or has ``[plugins]``).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{source} is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of nested arrays or tables
        raise ConfigError("", f"{source} nests arrays or tables too deeply") from None
    raw = read_attrs(data, _RawConfig, "")
    _check_tree(raw)
    params = {}
    for name, actor in raw.actors.items():
        kind = kinds.get(actor.kind, path=f"actors.{name}.kind")
        params[name] = kind.read_params(actor.params, f"actors.{name}.params")
    policies = {}
    for name, table in {**DEFAULT_RETRY_POLICIES, **raw.retry_policies}.items():
        merged = {**DEFAULT_RETRY_POLICIES.get(name, {}), **_table(table, f"retry_policies.{name}")}
        policies[name] = read_attrs(merged, RetryPolicy, f"retry_policies.{name}")
    _check_attempts_fit_locks(params, policies)
    placed = any(actor.kind == PLUGINS_KIND for actor in raw.actors.values())
    plugins: dict[str, PluginSettings] = {}
    if placed or raw.plugins:
        plugins = read_plugin_settings(
            raw.plugins, installed if installed is not None else installed_plugins(),
            placed=placed,
        )  # fmt: skip
    url = os.environ.get(DATABASE_URL_ENV) or raw.database.url
    return Config(
        source=source,
        data_dir=_data_dir(raw.data_dir),
        database=DatabaseConfig(url=url or None),
        http=raw.http,
        root=raw.tree.root,
        supervisors=raw.supervisors,
        actors=raw.actors,
        actor_params=params,
        retry_policies=policies,
        retention=raw.retention,
        cluster=raw.cluster,
        plugins=plugins,
    )


def _data_dir(configured: str | None) -> Path:
    """$DAZ_DATA_DIR wins (like $DAZ_DATABASE_URL), then the file's value, then the default."""
    if configured and not os.environ.get(DATA_DIR_ENV):
        return Path(configured).expanduser()
    return default_data_dir()


def _table(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(path, "expected a table")
    return value


def _check_tree(raw: _RawConfig) -> None:
    """Names unique, every child defined, no cycles, everything reachable from the root."""
    for name in raw.supervisors:
        if name in raw.actors:
            raise ConfigError(f"actors.{name}", f"name {name!r} is also a supervisor")
    for section, names in (("supervisors", raw.supervisors), ("actors", raw.actors)):
        for name in names:
            if not name or any(c.isspace() for c in name) or "/" in name:
                raise ConfigError(
                    f"{section}.{name}", "names must be non-empty, without spaces or '/'"
                )
    if raw.tree.root not in raw.supervisors:
        raise ConfigError("tree.root", f"{raw.tree.root!r} is not defined in [supervisors]")
    parent: dict[str, str] = {}
    for sup_name, sup in raw.supervisors.items():
        for i, child in enumerate(sup.children):
            path = f"supervisors.{sup_name}.children[{i}]"
            if child not in raw.supervisors and child not in raw.actors:
                raise ConfigError(path, f"{child!r} is not defined in [supervisors] or [actors]")
            if child in parent:
                raise ConfigError(
                    path, f"duplicate name: {child!r} is already a child of {parent[child]!r}"
                )
            parent[child] = sup_name
    # cycles: follow parents upward from every node
    for start in parent:
        seen = [start]
        node = start
        while node in parent:
            node = parent[node]
            if node in seen:
                # `seen` runs child -> parent: print it parent -> child from `node`, whose
                # children list (the key path) holds the next name in the loop
                loop = [node, *reversed(seen[seen.index(node) + 1 :]), node]
                cycle = " -> ".join(loop)
                raise ConfigError(f"supervisors.{node}.children", f"cycle in the tree: {cycle}")
            seen.append(node)
    if raw.tree.root in parent:
        raise ConfigError(
            f"supervisors.{parent[raw.tree.root]}.children",
            f"the root {raw.tree.root!r} cannot be a child",
        )
    for section, names in (("supervisors", raw.supervisors), ("actors", raw.actors)):
        for name in names:
            if name != raw.tree.root and name not in parent:
                raise ConfigError(
                    f"{section}.{name}",
                    "defined but not placed in the tree (no supervisor lists it)",
                )


def _check_attempts_fit_locks(params: dict[str, Any], policies: dict[str, RetryPolicy]) -> None:
    """Every retry policy's attempt must end before a worker's lock on the item expires.

    A worker runs the items of a batch one after another and hands back those whose
    attempt could outlive the lock; an attempt_timeout at or above lock_timeout makes every
    batch one item long, and the rest is released and fetched again, over and over.
    """
    for actor, actor_params in params.items():
        if not isinstance(actor_params, RetryParams):
            continue
        lock = actor_params.lock_timeout
        for name, policy in sorted(policies.items()):
            if policy.attempt_timeout >= lock:
                raise ConfigError(
                    f"retry_policies.{name}.attempt_timeout",
                    f"{policy.attempt_timeout:g} s is not below actors.{actor}.params."
                    f"lock_timeout ({lock:g} s): an attempt could outlive the worker's lock, and"
                    " every batch would shrink to one item",
                )
