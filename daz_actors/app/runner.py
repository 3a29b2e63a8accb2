"""The main job: resolve the database, migrate it, build the tree, run it until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import asyncpg
import attrs
import trio

from daz_actors.app.allocator import TRIM_INTERVAL, trim_malloc_every, tune_malloc
from daz_actors.app.build import build_tree
from daz_actors.app.builtin_kinds import CLUSTER_NODE
from daz_actors.app.config import Config, HttpConfig
from daz_actors.app.handlers import default_handlers
from daz_actors.cluster.hand_over import ClusterElsewhere
from daz_actors.cluster.node import ClusterNode
from daz_actors.cytube.commands import CommandRegistry
from daz_actors.cytube.elsewhere import Elsewhere
from daz_actors.cytube.room_params import RoomsParams
from daz_actors.ops.dashboard import Dashboard, DashboardRefused, DashboardSettings, check_exposure
from daz_actors.ops.http import serve_http
from daz_actors.ops.logging import register_dsn_password, register_secret
from daz_actors.ops.metrics import Metrics, Sources
from daz_actors.plugins.declaration import Plugin
from daz_actors.plugins.host import PluginHost
from daz_actors.plugins.migrations import migrate_plugins
from daz_actors.plugins.names import PLUGIN_HOST_RESOURCE
from daz_actors.runtime.bus import EventBus
from daz_actors.runtime.errors import DazActorsError, StopForced, SupervisorGaveUp
from daz_actors.runtime.kinds import ActorKinds
from daz_actors.runtime.registry import Registry
from daz_actors.runtime.supervisor import Supervisor
from daz_actors.runtime.tree import Tree, run_tree
from daz_actors.storage import queue
from daz_actors.storage.data_dir_lock import DataDirInUse, lock_data_dir
from daz_actors.storage.embedded_pg import open_database
from daz_actors.storage.migrations import migrate, migration_lock
from daz_actors.storage.queue_types import QueueStats
from daz_actors.storage.sql_gateway import GATEWAY_NAME
from daz_actors.storage.sql_messages import SqlClient

__all__ = [
    "EXIT_DASHBOARD_REFUSED",
    "EXIT_DATA_DIR_IN_USE",
    "EXIT_FORCED",
    "EXIT_GAVE_UP",
    "EXIT_HTTP_UNAVAILABLE",
    "EXIT_STARTUP_FAILED",
    "Alongside",
    "HttpUnavailable",
    "RunningSystem",
    "run_config",
]

log = logging.getLogger("daz_actors.run")

EXIT_GAVE_UP = 1  # the root supervisor exceeded its restart intensity
EXIT_STARTUP_FAILED = 2  # the database could not be prepared
EXIT_DASHBOARD_REFUSED = 3  # the dashboard would be exposed off loopback without a token
EXIT_HTTP_UNAVAILABLE = 4  # the HTTP address could not be bound (in use, not allowed)
EXIT_DATA_DIR_IN_USE = 5  # another process runs on the same data directory
EXIT_FORCED = 6  # a second signal cancelled what had not stopped in order


class HttpUnavailable(DazActorsError, OSError):
    """The health and metrics endpoints cannot listen on the configured address."""


async def _apply_migrations(url: str, plugins: Iterable[Plugin[Any]] = ()) -> list[str]:
    """The core migrations, then each enabled plugin's; the files applied."""
    conn: Any = await asyncpg.connect(url)
    try:
        async with migration_lock(conn):  # the core's and the plugins' as one run
            applied = [m.up_file for m in await migrate(conn)]
            applied += [f"{name}/{m.up_file}" for name, m in await migrate_plugins(conn, plugins)]
        return applied
    finally:
        await conn.close()


def _bot_names(config: Config) -> dict[str, str]:
    """Channel -> the bot's account there, from the config's ``rooms`` actors."""
    names: dict[str, str] = {}
    for params in config.actor_params.values():
        if isinstance(params, RoomsParams):
            names.update(dict.fromkeys(params.channels, params.name))
    return names


def _plugin_resources(
    config: Config,
    registry: Registry,
    bus: EventBus,
    extra: Mapping[str, Any],
    elsewhere: Elsewhere | None = None,
) -> dict[str, Any]:
    """The plugin host and what it adds: its commands per channel, its retry handlers."""
    host = PluginHost(
        config.plugins,
        registry=registry,
        bus=bus,
        bot_names=_bot_names(config),
        retry_policies=config.retry_policies,
        elsewhere=elsewhere,
    )
    handlers = extra.get("retry_handlers") or default_handlers(elsewhere=elsewhere)
    resources: dict[str, Any] = {
        PLUGIN_HOST_RESOURCE: host,
        "retry_handlers": host.register_handlers(handlers),
    }
    if host.plugins:
        own = extra.get("commands")
        if own is not None and not isinstance(own, CommandRegistry):
            raise TypeError(f"the 'commands' resource must be a CommandRegistry, got {own!r}")
        resources["commands"] = partial(host.commands_for, extra=own)
    return resources


@attrs.frozen(kw_only=True)
class RunningSystem:
    """What a task run alongside the tree (`run_config`'s ``alongside``) can reach."""

    tree: Tree
    registry: Registry
    sources: Sources  # what /readyz and /metrics read: `await snapshot(sources)`
    metrics: Metrics
    http_port: int | None  # where /healthz /readyz /metrics are served, if they are
    dashboard_url: str | None = None  # the dashboard's address, if it is served


Alongside = Callable[[RunningSystem], Awaitable[None]]


class _ReadyTree:
    """The tree's ``task_status``: keeps the `Tree` handle once every child is ready."""

    def __init__(self) -> None:
        self.tree: Tree | None = None
        self.event = trio.Event()

    def started(self, value: Tree | None = None) -> None:
        self.tree = value
        self.event.set()


async def _run(
    root: Supervisor,
    registry: Registry,
    http: HttpConfig,
    metrics: Metrics,
    *,
    handle_signals: bool,
    alongside: Alongside | None = None,
    cluster: ClusterNode | None = None,
    trim_every: float | None = None,
) -> None:
    """The tree, the health and metrics endpoints while it runs, and `alongside`; with
    `trim_every`, glibc's free heap given back that often (`allocator.trim_malloc_every`)."""
    gave_up: list[SupervisorGaveUp | StopForced] = []
    failed: list[Exception] = []  # what `alongside` raised
    ready = _ReadyTree()
    async with trio.open_nursery() as nursery:

        async def tree_task() -> None:
            try:
                await run_tree(root, handle_signals=handle_signals, task_status=ready)
            except (SupervisorGaveUp, StopForced) as exc:  # out of the nursery's exception group
                gave_up.append(exc)
            finally:
                ready.event.set()
                nursery.cancel_scope.cancel()  # the endpoints end with the tree

        nursery.start_soon(tree_task)
        if trim_every is not None:
            nursery.start_soon(trim_malloc_every, trim_every)
        await ready.event.wait()
        if ready.tree is not None:  # None: the root gave up before it was ready
            await _serve_alongside(
                nursery, ready.tree, registry, http, metrics, alongside, failed, cluster
            )
    if gave_up:
        raise gave_up[0]
    if failed:
        raise failed[0]


async def _serve_alongside(
    nursery: trio.Nursery,
    tree: Tree,
    registry: Registry,
    http: HttpConfig,
    metrics: Metrics,
    alongside: Alongside | None,
    failed: list[Exception],
    cluster: ClusterNode | None = None,
) -> None:
    """Start the endpoints and `alongside` in `nursery`, beside the running tree."""
    sources = _sources(tree, registry, cluster)
    if cluster is not None:  # a node leaves its channels as soon as the shutdown begins

        async def leave_when_stopping() -> None:
            await tree.wait_stopping()
            cluster.stopping.set()

        nursery.start_soon(leave_when_stopping)
    port: int | None = None
    if http.enabled:
        try:
            port = await nursery.start(
                partial(
                    serve_http,
                    sources,
                    host=http.host,
                    port=http.port,
                    metrics=metrics,
                    dashboard=_dashboard(http, registry),
                )
            )
        except* OSError as group:  # the address is taken or not ours: stop the tree in order
            failed.append(_http_unavailable(http, group))
        if failed:
            tree.stop()
            return
    if alongside is not None:
        system = RunningSystem(
            tree=tree,
            registry=registry,
            sources=sources,
            metrics=metrics,
            http_port=port,
            dashboard_url=dashboard_url(http, port),
        )

        scope = trio.CancelScope()  # a signal's shutdown cancels the task first

        async def cancel_when_stopping() -> None:
            await tree.wait_stopping()
            scope.cancel()

        async def alongside_then_stop() -> None:
            try:
                with scope:
                    await alongside(system)
            except Exception as exc:  # kept out of the nursery's exception group
                failed.append(exc)
            finally:
                tree.stop()  # an orderly stop of the whole tree

        nursery.start_soon(cancel_when_stopping)
        nursery.start_soon(alongside_then_stop)


def _http_unavailable(http: HttpConfig, group: BaseExceptionGroup[OSError]) -> HttpUnavailable:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    reason = getattr(error, "strerror", None) or str(error)
    return HttpUnavailable(f"cannot serve HTTP on {http.host}:{http.port}: {reason}")


def dashboard_settings(http: HttpConfig) -> DashboardSettings:
    """The dashboard's settings: the config's, with the token read from its variable."""
    token = os.environ.get(http.token_env) or None
    register_secret(token)
    return DashboardSettings(read_only=http.read_only, token=token, token_env=http.token_env)


def dashboard_url(http: HttpConfig, port: int | None) -> str | None:
    """Where the dashboard answers (None when it is not served)."""
    if not (http.enabled and http.dashboard) or port is None:
        return None
    host = f"[{http.host}]" if ":" in http.host else http.host
    if host in ("0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}/"


def _dashboard(http: HttpConfig, registry: Registry) -> Dashboard | None:
    if not http.dashboard:
        return None
    gateway = registry.get(GATEWAY_NAME)
    database = None if gateway is None else SqlClient(gateway, default_timeout=15.0)
    return Dashboard(database=database, settings=dashboard_settings(http))


def _sources(tree: Tree, registry: Registry, cluster: ClusterNode | None = None) -> Sources:
    gateway = registry.get(GATEWAY_NAME)
    if gateway is None:
        return Sources(tree=tree, cluster=cluster)
    db = SqlClient(gateway, default_timeout=2.0)

    async def queue_stats() -> Sequence[QueueStats]:
        stats: Sequence[QueueStats] = await db.run(queue.stats, name="health.queue_stats")
        return stats

    return Sources(tree=tree, gateway_status=db.status, queue_stats=queue_stats, cluster=cluster)


def run_config(
    config: Config,
    kinds: ActorKinds,
    *,
    handle_signals: bool = True,
    extra_resources: Mapping[str, Any] | None = None,
    alongside: Alongside | None = None,
) -> int:
    """Run the tree of `config` until SIGINT/SIGTERM; the process exit code.

    `extra_resources` reach the kinds' factories (``retry_handlers``: your
    `HandlerRegistry`, ``commands``: your `CommandRegistry`). `alongside`, if given, runs
    once the tree is ready; when it returns the tree is stopped in order (what
    ``daz-actors demo`` uses); an exception from it stops the tree and propagates; a
    shutdown begun otherwise (a signal) cancels it first.
    """
    if config.http.enabled and config.http.dashboard:
        try:
            check_exposure(config.http.host, dashboard_settings(config.http))
        except DashboardRefused as exc:
            log.critical("%s", exc)
            return EXIT_DASHBOARD_REFUSED
    # a process that runs for months: freed buffers go back to the system
    trim_every = TRIM_INTERVAL if tune_malloc().tuned else None
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(lock_data_dir(config.data_dir))
        except DataDirInUse as exc:
            log.critical("%s", exc)
            return EXIT_DATA_DIR_IN_USE
        except OSError as exc:
            log.critical("cannot use the data directory %s: %s", config.data_dir, exc)
            return EXIT_STARTUP_FAILED
        return _run_locked(
            config,
            kinds,
            handle_signals=handle_signals,
            extra_resources=extra_resources,
            alongside=alongside,
            trim_every=trim_every,
        )


def _run_locked(
    config: Config,
    kinds: ActorKinds,
    *,
    handle_signals: bool,
    extra_resources: Mapping[str, Any] | None,
    alongside: Alongside | None,
    trim_every: float | None = None,
) -> int:
    """`run_config` once this process holds the data directory."""
    if config.database.url:
        register_dsn_password(config.database.url)
    with open_database(config.database.url, data_dir=config.data_dir) as database:
        register_dsn_password(database.url)
        plugins = [settings.plugin for settings in config.plugins.values()]
        try:
            applied = asyncio.run(_apply_migrations(database.url, plugins))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, DazActorsError) as exc:
            log.critical("cannot prepare the database %s: %s", database.redacted, exc)
            return EXIT_STARTUP_FAILED
        for name in applied:
            log.info("applied migration %s", name)
        tree: list[Any] = []  # the root, once built: `!debug` reports its state
        metrics = Metrics()
        node = ClusterNode(config.cluster) if config.cluster.enabled else None
        if node is not None:
            log.info("cluster node %s (lease ttl %g s)", node.node_id, config.cluster.ttl)
        cluster: Mapping[str, Any] = (
            {CLUSTER_NODE: node, "singleton_gate": node.may_run} if node is not None else {}
        )
        # a cluster node hands retry items for channels other nodes hold over to them
        elsewhere = ClusterElsewhere(node) if node is not None else None
        registry, bus = Registry(), EventBus()
        extra = dict(extra_resources or {})
        resources: Mapping[str, Any] = {
            "metrics_registry": metrics.registry,
            "database_url": database.url,
            "tree_state": lambda: tree[0].which_children() if tree else [],
            "root_supervisor": lambda: tree[0] if tree else None,
            # every layer's built-in handlers
            "retry_handlers": default_handlers(elsewhere=elsewhere),
            **cluster,
            **extra,
            # the plugins' commands and handlers beside the given ones
            **_plugin_resources(config, registry, bus, extra, elsewhere),
        }
        root = build_tree(config, kinds, registry=registry, bus=bus, resources=resources)
        tree.append(root)

        try:
            trio.run(
                partial(
                    _run,
                    root,
                    registry,
                    config.http,
                    metrics,
                    handle_signals=handle_signals,
                    alongside=alongside,
                    cluster=node,
                    trim_every=trim_every,
                )
            )
        except SupervisorGaveUp as exc:
            log.critical(
                "the root supervisor gave up, stopping: %s (last error: %r)", exc, exc.__cause__
            )
            return EXIT_GAVE_UP
        except HttpUnavailable as exc:
            log.critical("%s; stopped (set [http] port, or enabled = false)", exc)
            return EXIT_HTTP_UNAVAILABLE
        except StopForced as exc:
            log.error("stopped by force: %s", exc)
            return EXIT_FORCED
        log.info("stopped in order")
        return 0
