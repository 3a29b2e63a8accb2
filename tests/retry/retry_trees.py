"""A retry subtree on a real database for tests: the SQL gateway, capture, dispatcher and
workers, with fast policies; and helpers to read the queue from the test's connection."""

from __future__ import annotations

from typing import Any

import attrs

from daz_actors import EventBus, Registry, Strategy, Supervisor
from daz_actors.app.builtin_kinds import default_kinds
from daz_actors.app.config import load_config
from daz_actors.retry.handlers import HandlerRegistry
from daz_actors.retry.kind import RetryParams, build_retry
from daz_actors.retry.policies import RetryPolicy
from daz_actors.runtime.kinds import BuildContext
from daz_actors.runtime.supervisor import ChildSpec
from daz_actors.storage import queue
from daz_actors.storage.queue_types import QueueItem, RetryStatus
from daz_actors.storage.sql_gateway import SqlGateway, SqlGatewayParams
from daz_actors.testing import fast_policy, poll

FAST = RetryPolicy(max_retries=2, initial=0.05, max_delay=0.2, multiplier=2.0, attempt_timeout=2)


@attrs.define
class Tree:
    sup: Supervisor
    bus: EventBus
    registry: Registry
    gateway: SqlGateway
    retry: Supervisor


def retry_tree(
    dsn: str, handlers: HandlerRegistry, policies: dict[str, Any] | None = None, **params: Any
) -> Tree:
    """The subtree with `handlers`; `policies` replace the fast ones given by default;
    ``retention=RetentionConfig(...)`` gives the config's [retention] section."""
    config = load_config(None, default_kinds())
    config = attrs.evolve(
        config,
        retry_policies=policies or {"default": FAST, "sql_operation": FAST},
        retention=params.pop("retention", config.retention),  # a RetentionConfig
    )
    registry, bus = Registry(), EventBus()
    gateway = SqlGateway(SqlGatewayParams(), dsn)
    resources = {"database_url": params.pop("listen_dsn", dsn), "retry_handlers": handlers}
    if (metrics := params.pop("metrics_registry", None)) is not None:
        resources["metrics_registry"] = metrics
    if (gate := params.pop("singleton_gate", None)) is not None:
        resources["singleton_gate"] = gate
    context = BuildContext(
        name="retry",
        config=config,
        registry=registry,
        bus=bus,
        resources=resources,
    )
    settings = {"worker_count": 2, "poll_interval": 0.2, **params}
    retry = build_retry(RetryParams(**settings), context)
    sup = Supervisor(
        "storage",
        [
            ChildSpec(name="sql-gateway", start=gateway),
            ChildSpec(name="retry", start=retry, shutdown_timeout=None),
        ],
        policy=fast_policy(Strategy.REST_FOR_ONE),
        registry=registry,
        bus=bus,
    )
    return Tree(sup=sup, bus=bus, registry=registry, gateway=gateway, retry=retry)


async def fetchval(db: Any, sql: str, *args: Any) -> Any:
    """One value from the test's own connection (asyncpg on the trio-asyncio loop)."""
    return await db.call(lambda conn: conn.fetchval(sql, *args))


async def item(db: Any, event_id: str) -> QueueItem | None:
    return await db.call(queue.get_by_event_id, event_id)


async def gone(db: Any, event_id: str) -> bool:
    return await item(db, event_id) is None


async def item_in(db: Any, event_id: str, status: RetryStatus) -> QueueItem:
    """Poll the queue (with a deadline) until the item has `status`; the item."""

    async def reached() -> QueueItem | None:
        row = await item(db, event_id)
        return row if row is not None and row.status is status else None

    return await poll(reached, timeout=30)


