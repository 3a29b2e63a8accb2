"""The ``retry`` actor kind: the retry subtree (capture, dispatcher, N workers) as one node."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry

from daz_actors.retry.capture import CAPTURE_NAME, capture_with_spool
from daz_actors.retry.cleanup import Cleanup
from daz_actors.retry.dispatcher import RetryDispatcher
from daz_actors.retry.handlers import HandlerRegistry
from daz_actors.retry.params import RetryParams as RetryParams
from daz_actors.retry.policies import RetryPolicy
from daz_actors.retry.worker import RetryWorker
from daz_actors.runtime.kinds import BuildContext
from daz_actors.runtime.supervision_policy import Strategy, SupervisorPolicy
from daz_actors.runtime.supervisor import ChildSpec, Supervisor
from daz_actors.storage.retention import TableRetention

__all__ = ["RetryParams", "build_retry"]


class RetrySettings(Protocol):
    """What the retry kind reads from the application's config (`BuildContext.config`)."""

    @property
    def data_dir(self) -> Path: ...  # the spool lives in ``<data_dir>/retry-spool``

    @property
    def retry_policies(self) -> Mapping[str, RetryPolicy]: ...  # operation type -> policy

    # optional: ``table_retention`` (a sequence of `TableRetention`), the tables the
    # periodic cleanup prunes by age; a config without it prunes only the queue


def _table_retention(settings: RetrySettings) -> tuple[TableRetention, ...]:
    rules = tuple(getattr(settings, "table_retention", ()))
    for rule in rules:
        if not isinstance(rule, TableRetention):
            raise TypeError(f"table_retention must hold TableRetention rules, got {rule!r}")
    return rules


def build_retry(params: RetryParams, ctx: BuildContext) -> Supervisor:
    """Factory of the ``retry`` kind: needs the ``database_url`` resource (for LISTEN).

    Handlers come from the ``retry_handlers`` resource (a `HandlerRegistry`; the runner
    gives every layer's built-in ones), else none (every item then dead-letters). With a
    ``metrics_registry`` resource (a `CollectorRegistry`) the workers observe each attempt's
    duration there, and the capture counts the items it schedules and drains from the spool.
    With a ``singleton_gate`` resource (``gate(job) -> bool``), the periodic cleanup runs only
    while the gate says this process may run ``retry.cleanup`` (one process per database).
    """
    try:
        dsn = ctx.resources["database_url"]
    except KeyError:
        raise RuntimeError("the retry actor needs the 'database_url' resource") from None
    handlers = ctx.resources.get("retry_handlers") or HandlerRegistry()
    if not isinstance(handlers, HandlerRegistry):
        raise TypeError("the 'retry_handlers' resource must be a HandlerRegistry")
    handlers.disable(params.disabled_handlers)
    metrics = ctx.resources.get("metrics_registry")
    if metrics is not None and not isinstance(metrics, CollectorRegistry):
        raise TypeError("the 'metrics_registry' resource must be a CollectorRegistry")
    gate = ctx.resources.get("singleton_gate")  # a cluster node: once-per-database jobs
    if gate is not None and not callable(gate):
        raise TypeError("the 'singleton_gate' resource must be a callable (job name) -> bool")
    settings: RetrySettings = ctx.config
    classifier = params.classifier()
    workers = [f"retry-worker-{n}" for n in range(1, params.worker_count + 1)]
    capture = capture_with_spool(
        spool_path=settings.data_dir / "retry-spool",
        spool_max_bytes=params.spool_max_bytes,
        gateway=params.gateway,
        patterns=params.capture_patterns,
        ignore_event_types=params.ignore_event_types,
        policies=settings.retry_policies,
        metrics=metrics,
        event_types=handlers.event_types(),  # their metric series exist from the start
    )
    children = [
        # redeliver: queueing is idempotent by event id, so a crash never loses an event
        ChildSpec(name=CAPTURE_NAME, start=capture, mailbox_size=1000, redeliver=3),
        *(
            ChildSpec(
                name=name,
                start=RetryWorker(
                    index=n,
                    handlers=handlers,
                    classifier=classifier,
                    gateway=params.gateway,
                    batch_size=params.batch_size,
                    lock_timeout=params.lock_timeout,
                    metrics=metrics,
                ),
                shutdown_timeout=params.worker_shutdown_timeout,
                mailbox_size=1,
            )
            for n, name in enumerate(workers, start=1)
        ),
        ChildSpec(
            name="retry-dispatcher",
            start=RetryDispatcher(
                dsn=dsn,
                workers=workers,
                gateway=params.gateway,
                poll_interval=params.poll_interval,
                cleanup_interval=params.cleanup_interval,
                cleanup=Cleanup(
                    retention_days=params.retention_days,
                    tables=_table_retention(settings),
                    batch_size=params.cleanup_batch_size,
                ),
                capture=CAPTURE_NAME,
                batch_size=params.batch_size,
                gate=gate,
            ),
        ),
    ]
    return Supervisor(
        ctx.name,
        children,
        policy=SupervisorPolicy(strategy=Strategy.ONE_FOR_ONE),
        registry=ctx.registry,
        bus=ctx.bus,
    )
