"""Prometheus metrics read from the running system at scrape time.

A scrape first gathers an async `Snapshot` of the sources (`await snapshot(sources)`: the
tree, the SQL gateway's status, the queue stats, the rooms' connections), then renders it
with `Metrics.render` through a `CollectorRegistry` of its own (never the global default
registry, so two runtimes in one process, or in one test run, never share metrics).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Protocol

import attrs
import trio
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daz_actors.cluster.node import ClusterNode
from daz_actors.cytube.connection import CytubeConnection
from daz_actors.cytube.events import ConnectionStatus
from daz_actors.cytube.router import routers_in
from daz_actors.retry.worker import RetryWorker, WorkerStats
from daz_actors.runtime.breaker import BreakerState
from daz_actors.runtime.supervisor import ChildInfo, ChildState, Supervisor
from daz_actors.storage.queue_types import QueueStats, RetryStatus
from daz_actors.storage.sql_messages import GatewayStatus

__all__ = [
    "CONTENT_TYPE",
    "ActorSnapshot",
    "ChatLogSnapshot",
    "ClusterSnapshot",
    "ConnectionSnapshot",
    "Metrics",
    "Snapshot",
    "Sources",
    "connections_in",
    "snapshot",
]

log = logging.getLogger("daz_actors.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@attrs.frozen(kw_only=True)
class Sources:
    """Where a scrape or a probe reads the system's state from; every source is optional."""

    tree: TreeView | None = None
    gateway_status: Callable[[], Awaitable[GatewayStatus]] | None = None  # SqlClient.status
    queue_stats: Callable[[], Awaitable[Sequence[QueueStats]]] | None = None
    # the rooms' connections; None finds them in the tree (`connections_in(tree.root)`)
    connections: Callable[[], Sequence[CytubeConnection]] | None = None
    probe_timeout: float = 2.0  # seconds each async source may take before it counts as down
    cluster: ClusterNode | None = None  # this process as a cluster node, if it is one


@attrs.frozen(kw_only=True)
class ActorSnapshot:
    """One child of the tree; `path` joins the names from the root's child down with '/'."""

    path: str
    state: ChildState
    restarts: int
    last_error: str | None
    mailbox_depth: int = 0
    mailbox_full: int = 0
    mailbox_capacity: int = 0
    mailbox_depth_max: int = 0
    mailbox_blocked_sends: int = 0
    mailbox_blocked_seconds: float = 0.0
    mailbox_senders_waiting: int = 0
    # (reason, count) pairs: see `ChildInfo.restarts_by_reason`
    restarts_by_reason: tuple[tuple[str, int], ...] = ()
    backoff_waits: int = 0
    backoff_seconds: float = 0.0
    asks_timed_out: int = 0
    redelivered: int = 0
    poison_dropped: int = 0
    poison_skipped: int = 0


class TreeView(Protocol):
    """What the snapshot reads of a running tree (`Tree` is one)."""

    @property
    def root(self) -> Supervisor: ...

    @property
    def stopping(self) -> bool: ...

    def which_children(self) -> list[ChildInfo]: ...


@attrs.frozen(kw_only=True)
class ConnectionSnapshot:
    """One room's connection."""

    channel: str
    status: ConnectionStatus
    reason: str  # why it is in that status
    reconnects: int
    received: int
    sent: int
    last_media_update: float | None
    # ((event, reason), count): events dropped at the protocol boundary
    rejected: tuple[tuple[tuple[str, str], int], ...] = ()
    # ((event, flag), count): events stored changed (text replaced or cut, time replaced)
    flagged: tuple[tuple[tuple[str, str], int], ...] = ()


@attrs.frozen(kw_only=True)
class ChatLogSnapshot:
    """One room's chat log buffer (`cytube/log_writer.py`), across router incarnations."""

    channel: str
    pending: int  # rows waiting to be written now
    stored: int  # rows written
    handed_over: int  # rows handed to the retry queue
    refused: int  # rows PostgreSQL refused for good
    full_waits: int  # rows that waited for room in the full buffer


@attrs.frozen(kw_only=True)
class ClusterSnapshot:
    """This node's counters and its last view of the cluster (from its last heartbeat)."""

    node_id: str
    held: tuple[str, ...]  # channels this node holds now
    singletons: tuple[str, ...]  # once-per-database jobs this node runs now
    renewals: int
    claims: int
    losses: int
    releases: int
    ticks_failed: int
    retry_handed_over: int = 0  # retry items this node's workers handed to a holder
    retry_hand_over_wakes: int = 0  # its workers woken for items handed to it
    # (node id, heartbeat age in seconds at the view, channels held, live) per node
    nodes: tuple[tuple[str, float, tuple[str, ...], bool], ...]
    view_age: float | None  # seconds since that view was read


def cluster_snapshot(node: ClusterNode) -> ClusterSnapshot:
    """What /metrics shows of the cluster, read from `node` (no I/O)."""
    view = node.view
    rows: list[tuple[str, float, tuple[str, ...], bool]] = []
    if view is not None:
        ttl = node.settings.ttl
        for n in view.nodes:
            held = tuple(view.held_by(n.node_id))
            rows.append((n.node_id, n.heartbeat_age, held, n.live(ttl)))
    return ClusterSnapshot(
        node_id=node.node_id,
        held=tuple(node.held_channels()),
        singletons=tuple(sorted(j for j in node.singletons if node.may_run(j))),
        renewals=node.renewals,
        claims=node.claims,
        losses=node.losses,
        releases=node.releases,
        ticks_failed=node.ticks_failed,
        retry_handed_over=node.retry_handed_over,
        retry_hand_over_wakes=node.retry_hand_over_wakes,
        nodes=tuple(rows),
        view_age=None if node.view_at is None else trio.current_time() - node.view_at,
    )


@attrs.frozen(kw_only=True)
class Snapshot:
    """The state of everything at one moment; rendering and probes only read this."""

    tree_configured: bool
    root_running: bool
    tree_stopping: bool
    actors: tuple[ActorSnapshot, ...]
    gateway_configured: bool
    gateway: GatewayStatus | None  # None if not configured or it did not answer
    gateway_error: str | None  # why it did not answer
    queue: tuple[QueueStats, ...] | None  # None if not configured or it failed
    queue_error: str | None
    connections: tuple[ConnectionSnapshot, ...]
    retry: WorkerStats | None = None  # the retry workers' counters, added up
    chat_logs: tuple[ChatLogSnapshot, ...] = ()  # the rooms' chat log buffers
    cluster: ClusterSnapshot | None = None  # this process as a cluster node, if it is one


def workers_in(root: Supervisor) -> list[RetryWorker]:
    """Every `RetryWorker` anywhere below `root` (their counters outlive restarts)."""
    return [s for s in root.startables() if isinstance(s, RetryWorker)]


def _retry_totals(workers: Sequence[RetryWorker]) -> WorkerStats | None:
    if not workers:
        return None
    total = WorkerStats()
    for worker in workers:
        for field in attrs.fields(WorkerStats):
            setattr(
                total, field.name, getattr(total, field.name) + getattr(worker.stats, field.name)
            )
    return total


def connections_in(root: Supervisor) -> list[CytubeConnection]:
    """Every `CytubeConnection` child anywhere below `root` (the objects outlive restarts)."""
    return [s for s in root.startables() if isinstance(s, CytubeConnection)]


def _flatten(children: Iterable[ChildInfo], prefix: str = "") -> Iterator[ActorSnapshot]:
    for child in children:
        path = f"{prefix}{child.name}"
        yield ActorSnapshot(
            path=path,
            state=child.state,
            restarts=child.restarts,
            last_error=child.last_error,
            mailbox_depth=child.mailbox_depth,
            mailbox_full=child.mailbox_full,
            mailbox_capacity=child.mailbox_capacity,
            mailbox_depth_max=child.mailbox_depth_max,
            mailbox_blocked_sends=child.mailbox_blocked_sends,
            mailbox_blocked_seconds=child.mailbox_blocked_seconds,
            mailbox_senders_waiting=child.mailbox_senders_waiting,
            restarts_by_reason=child.restarts_by_reason,
            backoff_waits=child.backoff_waits,
            backoff_seconds=child.backoff_seconds,
            asks_timed_out=child.asks_timed_out,
            redelivered=child.redelivered,
            poison_dropped=child.poison_dropped,
            poison_skipped=child.poison_skipped,
        )
        if child.children is not None:
            yield from _flatten(child.children, f"{path}/")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def snapshot(sources: Sources) -> Snapshot:
    """Read every configured source; a source that fails or is slow is recorded, not raised."""
    gateway: GatewayStatus | None = None
    gateway_error: str | None = None
    if sources.gateway_status is not None:
        try:
            with trio.fail_after(sources.probe_timeout):
                gateway = await sources.gateway_status()
        except trio.TooSlowError:
            gateway_error = f"no answer within {sources.probe_timeout} s"
        except Exception as exc:  # a probe reports any failure as a reason
            log.debug("gateway status failed", exc_info=True)
            gateway_error = _describe(exc)

    queue: tuple[QueueStats, ...] | None = None
    queue_error: str | None = None
    if sources.queue_stats is not None:
        try:
            with trio.fail_after(sources.probe_timeout):
                queue = tuple(await sources.queue_stats())
        except trio.TooSlowError:
            queue_error = f"no answer within {sources.probe_timeout} s"
        except Exception as exc:
            log.debug("queue stats failed", exc_info=True)
            queue_error = _describe(exc)

    tree = sources.tree
    if sources.connections is not None:
        conns: Sequence[CytubeConnection] = sources.connections()
    elif tree is not None:
        conns = connections_in(tree.root)
    else:
        conns = ()
    return Snapshot(
        tree_configured=tree is not None,
        root_running=tree is not None and tree.root.running,
        tree_stopping=tree is not None and tree.stopping,
        actors=tuple(_flatten(tree.which_children())) if tree is not None else (),
        gateway_configured=sources.gateway_status is not None,
        gateway=gateway,
        gateway_error=gateway_error,
        queue=queue,
        queue_error=queue_error,
        connections=tuple(
            ConnectionSnapshot(
                channel=c.params.channel,
                status=c.status,
                reason=c.status_reason,
                reconnects=c.reconnects,
                received=c.received,
                sent=c.sent,
                last_media_update=c.last_media_update,
                rejected=tuple(sorted(c.rejected.items())),
                flagged=tuple(sorted(c.flagged.items())),
            )
            for c in conns
        ),
        retry=_retry_totals(workers_in(tree.root)) if tree is not None else None,
        chat_logs=tuple(
            ChatLogSnapshot(
                channel=r.params.channel,
                pending=len(r.log_buffer),
                stored=r.log_buffer.stored,
                handed_over=r.log_buffer.handed_over,
                refused=r.log_buffer.refused,
                full_waits=r.log_buffer.full_waits,
            )
            for r in (routers_in(tree.root) if tree is not None else ())
        ),
        cluster=None if sources.cluster is None else cluster_snapshot(sources.cluster),
    )


class _SnapshotCollector(Collector):
    """Yields the metric families of the snapshot it was last given."""

    def __init__(self) -> None:
        self.current: Snapshot | None = None

    def collect(self) -> Iterable[Metric]:
        snap = self.current
        if snap is None:
            return

        restarts = CounterMetricFamily(
            "daz_actor_restarts", "Restarts of each actor by its supervisor.", labels=["actor"]
        )
        state = GaugeMetricFamily(
            "daz_actor_state", "1 for each actor's current state.", labels=["actor", "state"]
        )
        depth = GaugeMetricFamily(
            "daz_mailbox_depth", "Messages waiting in each actor's mailbox.", labels=["actor"]
        )
        full = CounterMetricFamily(
            "daz_mailbox_full",
            "try_send calls refused because the actor's mailbox was full.",
            labels=["actor"],
        )
        capacity = GaugeMetricFamily(
            "daz_mailbox_capacity", "The size of each actor's mailbox.", labels=["actor"]
        )
        depth_max = GaugeMetricFamily(
            "daz_mailbox_depth_max",
            "The most messages ever waiting at once in each actor's mailbox (high-water mark"
            " since the process started).",
            labels=["actor"],
        )
        blocked = CounterMetricFamily(
            "daz_mailbox_blocked_sends",
            "Sends (tell, ask) that waited for room in each actor's full mailbox.",
            labels=["actor"],
        )
        blocked_seconds = CounterMetricFamily(
            "daz_mailbox_blocked_seconds",
            "Seconds senders spent waiting for room in each actor's full mailbox, added when"
            " each wait ends (see daz_mailbox_senders_waiting for waits still going on).",
            labels=["actor"],
        )
        waiting = GaugeMetricFamily(
            "daz_mailbox_senders_waiting",
            "Senders blocked on each actor's full mailbox right now.",
            labels=["actor"],
        )
        by_reason = CounterMetricFamily(
            "daz_actor_restarts_by_reason",
            "Restarts of each actor by reason: the exception type of a crash or failed start,"
            " 'exit', 'sibling' or 'request'.",
            labels=["actor", "reason"],
        )
        backoff_waits = CounterMetricFamily(
            "daz_actor_backoff_waits",
            "Restarts of each actor that waited out a backoff delay.",
            labels=["actor"],
        )
        backoff_seconds = CounterMetricFamily(
            "daz_actor_backoff_seconds",
            "Seconds of backoff delay before each actor's restarts.",
            labels=["actor"],
        )
        asks_timed_out = CounterMetricFamily(
            "daz_actor_asks_timed_out",
            "Asks to each actor that got no reply in time.",
            labels=["actor"],
        )
        redelivered = CounterMetricFamily(
            "daz_actor_redelivered",
            "Messages given again to an actor's next incarnation after it crashed on them.",
            labels=["actor"],
        )
        poison_dropped = CounterMetricFamily(
            "daz_actor_poison_dropped",
            "Messages dropped after crashing an actor on every redelivery (see the log).",
            labels=["actor"],
        )
        poison_skipped = CounterMetricFamily(
            "daz_actor_poison_skipped",
            "Copies of a message dropped as poison (a replay) skipped unhandled.",
            labels=["actor"],
        )
        for actor in snap.actors:
            restarts.add_metric([actor.path], actor.restarts)
            redelivered.add_metric([actor.path], actor.redelivered)
            poison_dropped.add_metric([actor.path], actor.poison_dropped)
            poison_skipped.add_metric([actor.path], actor.poison_skipped)
            for s in ChildState:
                state.add_metric([actor.path, s.value], 1.0 if s is actor.state else 0.0)
            depth.add_metric([actor.path], actor.mailbox_depth)
            full.add_metric([actor.path], actor.mailbox_full)
            capacity.add_metric([actor.path], actor.mailbox_capacity)
            depth_max.add_metric([actor.path], actor.mailbox_depth_max)
            blocked.add_metric([actor.path], actor.mailbox_blocked_sends)
            blocked_seconds.add_metric([actor.path], actor.mailbox_blocked_seconds)
            waiting.add_metric([actor.path], actor.mailbox_senders_waiting)
            for reason, count in actor.restarts_by_reason:
                by_reason.add_metric([actor.path, reason], count)
            backoff_waits.add_metric([actor.path], actor.backoff_waits)
            backoff_seconds.add_metric([actor.path], actor.backoff_seconds)
            asks_timed_out.add_metric([actor.path], actor.asks_timed_out)
        yield restarts
        yield state
        yield depth
        yield full
        yield capacity
        yield depth_max
        yield blocked
        yield blocked_seconds
        yield waiting
        yield by_reason
        yield backoff_waits
        yield backoff_seconds
        yield asks_timed_out
        yield redelivered
        yield poison_dropped
        yield poison_skipped
        if snap.retry is not None:
            for name, help_text, value in (
                ("daz_retry_attempts", "Retry attempts started.", snap.retry.attempts),
                ("daz_retry_succeeded", "Retry attempts that succeeded.", snap.retry.completed),
                ("daz_retry_failed", "Failed attempts scheduled again.", snap.retry.failed),
                (
                    "daz_retry_dead_lettered",
                    "Items moved to dead letter.",
                    snap.retry.dead_lettered,
                ),
                (
                    "daz_retry_handed_back",
                    "Items handed back unfinished (a stop, a lease about to expire, or"
                    " released by their handler).",
                    snap.retry.handed_back,
                ),
            ):
                yield CounterMetricFamily(name, help_text, value=value)

        if snap.gateway_configured:
            connected = GaugeMetricFamily(
                "daz_sql_connected", "1 when the SQL gateway has a connection pool."
            )
            connected.add_metric([], 1.0 if snap.gateway and snap.gateway.connected else 0.0)
            yield connected
        if snap.gateway is not None:
            gw = snap.gateway
            breaker = GaugeMetricFamily(
                "daz_sql_breaker_state", "1 for the breaker's current state.", labels=["state"]
            )
            for b in BreakerState:
                breaker.add_metric([b.value], 1.0 if b is gw.breaker else 0.0)
            yield breaker
            yield CounterMetricFamily(
                "daz_sql_calls", "SQL calls handled by the gateway.", value=gw.calls
            )
            yield CounterMetricFamily(
                "daz_sql_failures", "SQL calls that failed.", value=gw.failures
            )
            yield CounterMetricFamily(
                "daz_sql_breaker_transitions",
                "Breaker state changes.",
                value=gw.breaker_transitions,
            )
            yield GaugeMetricFamily(
                "daz_sql_in_flight", "SQL calls running now.", value=gw.in_flight
            )

        if snap.queue is not None:
            items = GaugeMetricFamily(
                "daz_queue_items", "Retry queue items by status.", labels=["status"]
            )
            counts = dict.fromkeys(RetryStatus, 0)
            for row in snap.queue:
                counts[row.status] += row.item_count
            for status, count in counts.items():
                items.add_metric([status.value], count)
            yield items

        if snap.connections:
            up = GaugeMetricFamily(
                "daz_cytube_connected",
                "1 when the room's connection is joined.",
                labels=["channel"],
            )
            reconnects = CounterMetricFamily(
                "daz_cytube_reconnects", "Sessions started after the first.", labels=["channel"]
            )
            received = CounterMetricFamily(
                "daz_chat_events_received", "Typed events received.", labels=["channel"]
            )
            sent = CounterMetricFamily(
                "daz_chat_messages_sent", "Chat message parts delivered.", labels=["channel"]
            )
            rejected = CounterMetricFamily(
                "daz_chat_events_rejected",
                "Events dropped at the protocol boundary: a required field missing or of the"
                " wrong type.",
                labels=["channel", "event", "reason"],
            )
            flagged = CounterMetricFamily(
                "daz_chat_events_flagged",
                "Events kept with a change: text replaced or cut, time replaced.",
                labels=["channel", "event", "flag"],
            )
            for c in snap.connections:
                up.add_metric([c.channel], 1.0 if c.status is ConnectionStatus.JOINED else 0.0)
                reconnects.add_metric([c.channel], c.reconnects)
                received.add_metric([c.channel], c.received)
                sent.add_metric([c.channel], c.sent)
                for (event, reason), count in c.rejected:
                    rejected.add_metric([c.channel, event, reason], count)
                for (event, flag), count in c.flagged:
                    flagged.add_metric([c.channel, event, flag], count)
            yield up
            yield reconnects
            yield received
            yield sent
            yield rejected
            yield flagged
        if snap.chat_logs:
            pending = GaugeMetricFamily(
                "daz_chat_log_pending",
                "Chat log rows waiting in the room's buffer to be written.",
                labels=["channel"],
            )
            rows = CounterMetricFamily(
                "daz_chat_log_rows",
                "Chat log rows by how they left the buffer: stored (written), queued (handed"
                " to the retry queue), refused (by PostgreSQL, for good).",
                labels=["channel", "outcome"],
            )
            full = CounterMetricFamily(
                "daz_chat_log_buffer_full_waits",
                "Chat log rows the router had to wait to buffer (the buffer was full).",
                labels=["channel"],
            )
            for log_ in snap.chat_logs:
                pending.add_metric([log_.channel], log_.pending)
                rows.add_metric([log_.channel, "stored"], log_.stored)
                rows.add_metric([log_.channel, "queued"], log_.handed_over)
                rows.add_metric([log_.channel, "refused"], log_.refused)
                full.add_metric([log_.channel], log_.full_waits)
            yield pending
            yield rows
            yield full
        if snap.cluster is not None:
            yield from _cluster_metrics(snap.cluster)


def _cluster_metrics(c: ClusterSnapshot) -> Iterator[Metric]:
    """The cluster's series: every node as this node last saw it, and this node's counters."""
    age = GaugeMetricFamily(
        "daz_cluster_node_heartbeat_age_seconds",
        "Seconds since each node's last heartbeat, as of this node's last view of the"
        " cluster (add daz_cluster_view_age_seconds for now).",
        labels=["node"],
    )
    live = GaugeMetricFamily(
        "daz_cluster_node_live", "1 for a node heard from within the lease TTL.", labels=["node"]
    )
    channels = GaugeMetricFamily(
        "daz_cluster_node_channels", "Channels each node holds the lease of.", labels=["node"]
    )
    holder = GaugeMetricFamily(
        "daz_cluster_channel_held",
        "1 for each channel and the node holding its lease.",
        labels=["channel", "node"],
    )
    for node_id, heartbeat_age, held, is_live in c.nodes:
        age.add_metric([node_id], heartbeat_age)
        live.add_metric([node_id], 1.0 if is_live else 0.0)
        channels.add_metric([node_id], len(held))
        for channel in held:
            holder.add_metric([channel, node_id], 1.0)
    yield age
    yield live
    yield channels
    yield holder
    if c.view_age is not None:
        yield GaugeMetricFamily(
            "daz_cluster_view_age_seconds",
            "Seconds since this node last read the cluster (its last heartbeat).",
            value=c.view_age,
        )
    yield GaugeMetricFamily(
        "daz_cluster_leases_held", "Channel leases this node holds now.", value=len(c.held)
    )
    for name, help_text, value in (
        ("daz_cluster_lease_renewals", "Leases this node renewed.", c.renewals),
        ("daz_cluster_lease_claims", "Leases this node won.", c.claims),
        ("daz_cluster_lease_losses", "Leases this node lost while it held them.", c.losses),
        ("daz_cluster_lease_releases", "Leases this node gave back.", c.releases),
        ("daz_cluster_heartbeats_failed", "Heartbeats that did not reach the database.",
         c.ticks_failed),
        ("daz_cluster_retry_handed_over",
         "Retry items this node's workers handed to the node holding their channel.",
         c.retry_handed_over),
        ("daz_cluster_retry_hand_over_wakes",
         "Times this node woke its retry workers for items handed over to it.",
         c.retry_hand_over_wakes),
    ):  # fmt: skip
        counter = CounterMetricFamily(name, help_text, labels=["node"])
        counter.add_metric([c.node_id], value)
        yield counter


class Metrics:
    """A process's metrics registry; `render` turns a snapshot into Prometheus text.

    `registry` is a fresh `CollectorRegistry`; register further collectors or
    counters on it (``Counter(..., registry=metrics.registry)``) and they are rendered too.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = _SnapshotCollector()
        self.registry.register(self._collector)
        # memory, CPU, open file descriptors, start time (process_* series, on Linux)
        ProcessCollector(registry=self.registry)

    def render(self, snap: Snapshot) -> bytes:
        """The Prometheus text exposition of `snap` and every other registered collector."""
        # no await between setting and rendering, so concurrent scrapes cannot interleave
        self._collector.current = snap
        try:
            return generate_latest(self.registry)
        finally:
            self._collector.current = None
