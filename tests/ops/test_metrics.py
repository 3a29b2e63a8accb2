"""Per-actor metrics rendered from a snapshot: restarts by reason, backoff waits, ask timeouts."""

from __future__ import annotations

import pytest
import trio
from probes import Journal, Sleep, spec, supervisor
from prometheus_client.parser import text_string_to_metric_families

from daz_actors import AskTimeout, BackoffPolicy, ChildState, Jitter
from daz_actors.ops.metrics import ActorSnapshot, Metrics, Snapshot, Sources, snapshot
from daz_actors.runtime.tree import Tree
from daz_actors.testing import fast_policy, open_tree, wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a Prometheus exposition, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def of(found: Samples, name: str, actor: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of `name` for `actor`, by their other labels."""
    return {
        tuple(kv for kv in labels if kv[0] != "actor"): value
        for (n, labels), value in found.items()
        if n == name and ("actor", actor) in labels
    }


async def scrape(tree: Tree) -> Samples:
    return samples(Metrics().render(await snapshot(Sources(tree=tree))).decode())


def actors_only(*actors: ActorSnapshot) -> Snapshot:
    return Snapshot(
        tree_configured=True,
        root_running=True,
        tree_stopping=False,
        actors=actors,
        gateway_configured=False,
        gateway=None,
        gateway_error=None,
        queue=None,
        queue_error=None,
        connections=(),
    )


def test_render_shows_each_field_of_the_snapshot():
    """Each new per-actor field becomes its own counter family; the old names stay as they were."""
    snap = actors_only(
        ActorSnapshot(
            path="rooms/room:lobby",
            state=ChildState.RUNNING,
            restarts=4,
            last_error="Boom()",
            restarts_by_reason=(("Boom", 3), ("sibling", 1)),
            backoff_waits=2,
            backoff_seconds=1.5,
            asks_timed_out=7,
            redelivered=5,
            poison_dropped=1,
        ),
        ActorSnapshot(path="quiet", state=ChildState.RUNNING, restarts=0, last_error=None),
    )
    found = samples(Metrics().render(snap).decode())
    lobby = "rooms/room:lobby"
    assert of(found, "daz_actor_restarts_by_reason_total", lobby) == {
        (("reason", "Boom"),): 3,
        (("reason", "sibling"),): 1,
    }
    assert of(found, "daz_actor_restarts_by_reason_total", "quiet") == {}
    assert found[("daz_actor_restarts_total", (("actor", lobby),))] == 4
    assert found[("daz_actor_backoff_waits_total", (("actor", lobby),))] == 2
    assert found[("daz_actor_backoff_seconds_total", (("actor", lobby),))] == 1.5
    assert found[("daz_actor_asks_timed_out_total", (("actor", lobby),))] == 7
    assert found[("daz_actor_redelivered_total", (("actor", lobby),))] == 5
    assert found[("daz_actor_poison_dropped_total", (("actor", lobby),))] == 1
    for name in (
        "daz_actor_backoff_waits_total",
        "daz_actor_backoff_seconds_total",
        "daz_actor_asks_timed_out_total",
        "daz_actor_redelivered_total",
        "daz_actor_poison_dropped_total",
    ):
        assert found[(name, (("actor", "quiet"),))] == 0


async def test_restarts_by_reason_move_with_crashes_kills_exits_and_requests():
    """Each way a child comes back is counted under its own reason, for that child only."""
    journal = Journal()
    root = supervisor("root", [spec(journal, "a"), spec(journal, "b")], fast_policy())
    by_reason = "daz_actor_restarts_by_reason_total"

    def running() -> bool:
        return all(c.state is ChildState.RUNNING for c in root.which_children())

    async with open_tree(root) as tree:
        before = await scrape(tree)
        assert of(before, by_reason, "a") == {}
        with pytest.raises(Exception, match="crashed"):
            await root.ref("a").ask("crash")
        await wait_until(lambda: journal.of("start").count("a") == 2 and running())
        root.kill_child("a", "fault injection")
        await wait_until(lambda: journal.of("start").count("a") == 3 and running())
        assert await root.ref("a").ask("exit") == "bye"
        await wait_until(lambda: journal.of("start").count("a") == 4 and running())
        await root.restart_child("a")
        after = await scrape(tree)
    assert of(after, by_reason, "a") == {
        (("reason", "Boom"),): 1,
        (("reason", "Killed"),): 1,
        (("reason", "exit"),): 1,
        (("reason", "request"),): 1,
    }
    assert (
        sum(of(after, by_reason, "a").values())
        == after[("daz_actor_restarts_total", (("actor", "a"),))]
    )
    assert of(after, by_reason, "b") == {}


async def test_backoff_waits_and_seconds_move_when_a_restart_waits(autojump_clock):
    """A restart after a backoff delay adds one wait and the delay's seconds."""
    journal = Journal()
    backoff = BackoffPolicy(initial=2.0, multiplier=3.0, max_delay=60.0, jitter=Jitter.NONE)
    root = supervisor(
        "root", [spec(journal, "a"), spec(journal, "b")], fast_policy(backoff=backoff)
    )
    waits = ("daz_actor_backoff_waits_total", (("actor", "a"),))
    seconds = ("daz_actor_backoff_seconds_total", (("actor", "a"),))
    async with open_tree(root) as tree:
        before = await scrape(tree)
        assert (before[waits], before[seconds]) == (0, 0)
        for starts in (2, 3):
            with pytest.raises(Exception, match="crashed"):
                await root.ref("a").ask("crash")
            await wait_until(lambda n=starts: journal.of("start").count("a") == n)
        after = await scrape(tree)
    assert after[waits] == 2
    assert after[seconds] == pytest.approx(2.0 + 6.0)
    assert after[("daz_actor_backoff_waits_total", (("actor", "b"),))] == 0


async def test_asks_timed_out_move_for_the_asked_actor(autojump_clock):
    """An ask that gets no reply in time is counted on the actor that was asked."""
    journal = Journal()
    root = supervisor("root", [spec(journal, "a"), spec(journal, "b")], fast_policy())
    timed_out = ("daz_actor_asks_timed_out_total", (("actor", "a"),))
    async with open_tree(root) as tree:
        assert (await scrape(tree))[timed_out] == 0
        with pytest.raises(AskTimeout):
            await root.ref("a").ask(Sleep(5), timeout=0.05)
        after = await scrape(tree)
    assert after[timed_out] == 1
    assert after[("daz_actor_asks_timed_out_total", (("actor", "b"),))] == 0


def test_two_gateways_on_one_registry_share_their_metrics():
    """A second SQL gateway (a second storage subtree) on the same registry does not fail
    as a duplicate registration; both feed the same histogram and counter."""
    from prometheus_client import CollectorRegistry

    from daz_actors.storage.sql_gateway import SqlGateway, SqlGatewayParams

    registry = CollectorRegistry()
    first = SqlGateway(SqlGatewayParams(), "postgresql://a@/x", metrics=registry)
    second = SqlGateway(SqlGatewayParams(), "postgresql://b@/y", metrics=registry)
    assert first._latency is second._latency is not None
    assert first._errors is second._errors is not None
    other = SqlGateway(SqlGatewayParams(), "postgresql://a@/x", metrics=CollectorRegistry())
    assert other._latency is not first._latency


async def test_backpressure_shows_as_blocked_sends_seconds_and_a_high_water_mark(
    autojump_clock,
):
    """Issue 13, item 12: senders waiting on a full mailbox (not try_send refusals) show up:
    a sender blocked now, the sends that waited and their seconds, the depth's high-water
    mark and the capacity; daz_mailbox_full_total stays 0 (nothing was refused)."""
    journal = Journal()
    root = supervisor(
        "root", [spec(journal, "slow", mailbox_size=2), spec(journal, "b")], fast_policy()
    )

    def metric(found: Samples, name: str, actor: str = "slow") -> float:
        return found[(name, (("actor", actor),))]

    async with open_tree(root) as tree:
        ref = root.ref("slow")
        async with trio.open_nursery() as nursery:

            async def flood() -> None:
                for _ in range(6):
                    await ref.send(Sleep(1))  # one second each in trio's clock

            nursery.start_soon(flood)
            await wait_until(lambda: root.which_children()[0].mailbox_senders_waiting == 1)
            during = await scrape(tree)
        after = await scrape(tree)
    assert metric(during, "daz_mailbox_senders_waiting") == 1
    assert metric(during, "daz_mailbox_depth") == 2
    assert metric(after, "daz_mailbox_senders_waiting") == 0
    assert metric(after, "daz_mailbox_capacity") == 2
    assert metric(after, "daz_mailbox_depth_max") == 2
    assert metric(after, "daz_mailbox_blocked_sends_total") >= 3
    assert metric(after, "daz_mailbox_blocked_seconds_total") > 0
    assert metric(after, "daz_mailbox_full_total") == 0  # the old signal saw nothing
    assert metric(after, "daz_mailbox_blocked_sends_total", "b") == 0
    assert metric(after, "daz_mailbox_depth_max", "b") == 0


def test_the_process_figures_are_exported():
    """/metrics carries the process's memory, CPU, open file descriptors and start time,
    with this process's own values."""
    import time

    from prometheus_client.parser import text_string_to_metric_families

    text = Metrics().render(actors_only()).decode()
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert values["process_resident_memory_bytes"] > 1_000_000
    assert values["process_open_fds"] >= 3  # stdin, stdout, stderr at least
    assert 0 < values["process_start_time_seconds"] <= time.time()
    assert values["process_cpu_seconds_total"] > 0
