"""A real worker process for crash tests: runs the retry subtree with one test handler.

    python retry_worker.py DSN HOLD_SECONDS LOCK_TIMEOUT

The handler ``test.crash`` records the attempt, prints ``ATTEMPT <event_id>`` (flushed),
holds for HOLD_SECONDS (a process killed meanwhile leaves the item stranded), then writes
its effect. The effect is a plain insert on purpose: the test counts effects per item, so
an item run twice (two workers holding it at once) would show.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import attrs
import trio

from daz_actors import ChildSpec, EventBus, Registry, Strategy, Supervisor, run_tree
from daz_actors.app.builtin_kinds import default_kinds
from daz_actors.app.config import load_config
from daz_actors.retry.handlers import AttemptContext, HandlerRegistry
from daz_actors.retry.kind import RetryParams, build_retry
from daz_actors.retry.policies import RetryPolicy
from daz_actors.runtime.kinds import BuildContext
from daz_actors.storage.queue_types import QueueItem
from daz_actors.storage.sql_gateway import SqlGateway, SqlGatewayParams
from daz_actors.testing import fast_policy


def main(dsn: str, hold: float, lock_timeout: float) -> None:
    handlers = HandlerRegistry()

    @handlers.register("test.crash")
    async def crash(item: QueueItem, ctx: AttemptContext) -> None:
        await ctx.db.execute(
            "INSERT INTO attempts (event_id, pid) VALUES ($1, $2)", ctx.event_id, os.getpid()
        )
        print(f"ATTEMPT {ctx.event_id}", flush=True)
        await trio.sleep(hold)
        await ctx.db.execute(
            "INSERT INTO effects (event_id) VALUES ($1)", ctx.event_id
        )

    policy = RetryPolicy(max_retries=5, initial=0.05, max_delay=0.2, attempt_timeout=3600)
    config = attrs.evolve(load_config(None, default_kinds()), retry_policies={"default": policy})
    registry, bus = Registry(), EventBus()
    resources: dict[str, Any] = {"database_url": dsn, "retry_handlers": handlers}
    context = BuildContext(
        name="retry", config=config, registry=registry, bus=bus, resources=resources
    )
    params = RetryParams(worker_count=3, batch_size=5, lock_timeout=lock_timeout, poll_interval=0.2)
    root = Supervisor(
        "storage",
        [
            ChildSpec(name="sql-gateway", start=SqlGateway(SqlGatewayParams(), dsn)),
            ChildSpec(name="retry", start=build_retry(params, context), shutdown_timeout=None),
        ],
        policy=fast_policy(Strategy.REST_FOR_ONE),
        registry=registry,
        bus=bus,
    )
    print("READY", flush=True)
    trio.run(lambda: run_tree(root, handle_signals=True))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))
