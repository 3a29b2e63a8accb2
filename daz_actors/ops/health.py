"""The health monitor actor: periodic checks, UP / DEGRADED / DOWN, and recovery actions.

Every `interval` seconds it takes a snapshot of the tree, the SQL gateway, the queue and
the rooms (the same snapshot `/readyz` and `/metrics` use) and judges each component:

- ``database``: DOWN when not connected or the breaker is open; DEGRADED when a
  ``SELECT 1`` round trip takes longer than `db_latency_degraded`.
- ``room:<channel>``: DOWN when not joined, or when no ``mediaUpdate`` came for
  `media_stuck_after` seconds after one did (a stuck connection); DEGRADED when it
  reconnected more than `max_reconnects_per_check` times since the previous check.
- ``queue``: DEGRADED while there are dead letters.
- ``supervision``: DEGRADED when more than `max_restarts_per_check` restarts happened since
  the previous check.

A component DOWN for longer than `grace_period` is restarted through its supervisor (a
room, or the SQL gateway; not a room that waits on purpose: a login or channel password
refused, a duplicate login): logged as a recovery action and counted, never by killing the
process. Each check's `HealthReport` is published on the bus topic ``health.report``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

import attrs
import trio

from daz_actors.cytube.events import ON_PURPOSE, ConnectionStatus
from daz_actors.cytube.names import room_name
from daz_actors.ops.health_params import HealthParams as HealthParams
from daz_actors.ops.metrics import Snapshot, Sources, snapshot
from daz_actors.ops.readiness import readiness
from daz_actors.runtime.actor import ActorContext, Startable
from daz_actors.runtime.errors import DazActorsError
from daz_actors.runtime.kinds import BuildContext
from daz_actors.runtime.mailbox import Ask
from daz_actors.runtime.supervisor import ChildInfo, Supervisor
from daz_actors.storage import queue
from daz_actors.storage.queue_types import QueueStats, RetryStatus
from daz_actors.storage.sql_messages import SqlClient

__all__ = [
    "CheckNow",
    "Health",
    "HealthMonitor",
    "HealthParams",
    "HealthReport",
    "build_health_monitor",
]

log = logging.getLogger("daz_actors.health")

REPORT_TOPIC = "health.report"


class Health(enum.Enum):
    """How a component is doing."""

    UP = "UP"
    DEGRADED = "DEGRADED"
    DOWN = "DOWN"


@attrs.frozen(kw_only=True)
class ComponentHealth:
    """One component's verdict."""

    name: str
    health: Health
    reason: str
    since: float  # trio time it entered this state


@attrs.frozen
class CheckNow:
    """Ask the health monitor to check now; the reply is the fresh `HealthReport`."""


@attrs.frozen(kw_only=True)
class HealthReport:
    """One check of every component."""

    components: tuple[ComponentHealth, ...]
    recoveries: int  # recovery actions so far


class _RootView:
    """A running root as the snapshot reads it."""

    def __init__(self, root: Supervisor) -> None:
        self.root = root
        self.stopping = False

    def which_children(self) -> list[ChildInfo]:
        return self.root.which_children()


class HealthMonitor:
    """A `Startable`: checks every `interval` and recovers what stays DOWN."""

    def __init__(self, params: HealthParams, root: Callable[[], Supervisor | None]) -> None:
        self.params = params
        self._root = root
        self.recoveries = 0
        self.latest: HealthReport | None = None
        self._since: dict[str, tuple[Health, float]] = {}
        self._restarts_seen: int | None = None
        self._reconnects_seen: dict[str, int] = {}  # per channel, at the previous check

    async def __call__(
        self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        asked: Ask | None = None
        while True:
            report = await self.check(ctx)
            self.latest = report
            if asked is not None:
                asked.reply(report)
            await ctx.bus.publish(REPORT_TOPIC, report)
            asked = None
            with trio.move_on_after(self.params.interval):  # or sooner, when asked
                item = await ctx.mailbox.get()
                message = item.message if isinstance(item, Ask) else item
                if not isinstance(message, CheckNow):
                    if isinstance(item, Ask):
                        item.fail(TypeError(f"the health monitor takes CheckNow, not {message!r}"))
                elif isinstance(item, Ask):
                    asked = item

    async def check(self, ctx: ActorContext) -> HealthReport:
        """Judge every component now, and act on those DOWN past the grace period."""
        root = self._root()
        gateway = ctx.registry.get(self.params.gateway)
        db = SqlClient(gateway, default_timeout=2.0) if gateway is not None else None

        async def queue_stats() -> list[QueueStats]:
            assert db is not None
            stats: list[QueueStats] = await db.run(queue.stats, name="health.queue_stats")
            return stats

        sources = Sources(
            tree=_RootView(root) if root is not None else None,
            gateway_status=db.status if db is not None else None,
            queue_stats=queue_stats if db is not None else None,
        )
        snap = await snapshot(sources)
        verdicts = await self._judge(snap, db)
        # rooms DOWN on purpose (a refused login or password, a duplicate login) wait on
        # their own timer: a restart would change nothing, or undo the wait
        waiting = {room_name(c.channel) for c in snap.connections if c.status in ON_PURPOSE}
        now = trio.current_time()
        components = []
        for name, (health, reason) in sorted(verdicts.items()):
            previous = self._since.get(name)
            since = previous[1] if previous is not None and previous[0] is health else now
            self._since[name] = (health, since)
            components.append(ComponentHealth(name=name, health=health, reason=reason, since=since))
        if root is not None:
            for component in components:
                if (
                    component.health is Health.DOWN
                    and now - component.since >= self.params.grace_period
                    and component.name not in waiting
                ):
                    await self._recover(root, component)
        return HealthReport(components=tuple(components), recoveries=self.recoveries)

    async def _judge(self, snap: Snapshot, db: SqlClient | None) -> dict[str, tuple[Health, str]]:
        verdicts: dict[str, tuple[Health, str]] = {}
        for name, component in readiness(snap).items():
            verdicts[name] = (Health(component.status), component.reason)
        if db is not None and verdicts.get("database", (Health.DOWN, ""))[0] is Health.UP:
            started = trio.current_time()
            try:
                # DOWN only past a timeout well above the DEGRADED threshold (at least 2 s)
                timeout = max(self.params.db_latency_degraded * 4, 2.0)
                await db.query_value("SELECT 1", timeout=timeout)
            except DazActorsError as exc:
                verdicts["database"] = (Health.DOWN, f"SELECT 1 failed: {exc}")
            else:
                latency = trio.current_time() - started
                if latency > self.params.db_latency_degraded:
                    verdicts["database"] = (Health.DEGRADED, f"round trip {latency:.3f} s")
        now = trio.current_time()
        for conn in snap.connections:
            last = conn.last_media_update
            name = room_name(conn.channel)
            if conn.status is ConnectionStatus.JOINED and last is not None:
                quiet = now - last
                if quiet > self.params.media_stuck_after:
                    verdicts[name] = (Health.DOWN, f"stuck: no mediaUpdate for {quiet:.0f} s")
            seen = self._reconnects_seen.get(conn.channel)
            self._reconnects_seen[conn.channel] = conn.reconnects
            flapping = conn.reconnects - seen if seen is not None else 0
            if flapping > self.params.max_reconnects_per_check and (
                verdicts.get(name, (Health.UP, ""))[0] is Health.UP
            ):
                verdicts[name] = (Health.DEGRADED, f"{flapping} reconnects since the last check")
        if snap.queue is not None:
            dead = sum(s.item_count for s in snap.queue if s.status is RetryStatus.DEAD_LETTER)
            verdicts["queue"] = (
                (Health.DEGRADED, f"{dead} dead letters") if dead else (Health.UP, "")
            )
        elif snap.queue_error is not None:
            verdicts["queue"] = (Health.DOWN, snap.queue_error)
        restarts = sum(a.restarts for a in snap.actors)
        if self._restarts_seen is not None:
            recent = restarts - self._restarts_seen
            verdicts["supervision"] = (
                (Health.DEGRADED, f"{recent} restarts since the last check")
                if recent > self.params.max_restarts_per_check
                else (Health.UP, "")
            )
        self._restarts_seen = restarts
        return verdicts

    async def _recover(self, root: Supervisor, component: ComponentHealth) -> None:
        target = self.params.gateway if component.name == "database" else component.name
        owner = root.owner_of(target)
        if owner is None:
            return
        self.recoveries += 1
        log.warning(
            "recovery: restarting %r (%s for %.0f s: %s)",
            target,
            component.health.value,
            trio.current_time() - component.since,
            component.reason,
        )
        self._since.pop(component.name, None)  # give it a fresh grace period
        try:
            await owner.restart_child(target)
        except DazActorsError as exc:
            log.error("recovery of %r failed: %s", target, exc)


def build_health_monitor(params: HealthParams, ctx: BuildContext) -> Startable:
    """Factory of the ``health-monitor`` kind: uses the ``root_supervisor`` resource."""
    root = ctx.resources.get("root_supervisor")
    return HealthMonitor(params, root if callable(root) else (lambda: None))
