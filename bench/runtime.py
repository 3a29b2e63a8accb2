"""Runtime benchmarks: daz_actors against bare trio, measured in the same run.

Run from the project root::

    python -m bench.runtime            # about 30-45 s on a 2-core machine
    python -m bench.runtime --quick    # a smoke run, a few seconds

Three measures, each against a baseline measured in the same process, interleaved with it
(project, baseline, project, baseline, ...) so that both see the same machine noise:

1. tell throughput: one task doing ``await ref.send(msg)`` into one class actor whose
   ``handle`` counts, against one task doing ``await send_channel.send(msg)`` into a bare
   ``trio.open_memory_channel`` of the same capacity read by a counting task.
   Best of the repetitions. Target: ratio >= 0.6.
2. ask round trips: ``await ref.ask(msg)`` against an actor that returns the message,
   against the fastest bare trio request/reply: the request travels on a memory channel
   with a one-shot slot; the replier wakes the parked asker with
   ``trio.lowlevel.reschedule`` (asker parked in ``trio.lowlevel.wait_task_rescheduled``).
   Two baseline variants are measured (request queued with ``await send`` or with
   ``send_nowait``); the faster one is the baseline. Best of the repetitions.
   Target: ratio >= 0.5.
3. restart latency with zero backoff: from the moment the actor raises while handling a
   crash message to the moment the new incarnation starts handling its next message
   (both stamped with ``time.perf_counter`` inside the actor), under a one_for_one
   `Supervisor` with ``BackoffPolicy(initial=0, max_delay=0, jitter=NONE)`` and
   ``max_restarts=10**9``; against a minimal hand-written trio restart loop (a wrapper
   task catches the worker's exception and reports it on a channel; a loop receives it
   and starts a fresh worker task on the same mailbox channel), stamped the same way.
   The driver queues the crash and a probe together with ``try_send``/``send_nowait``;
   handling the probe wakes the driver through the same bare one-shot slot on both sides.
   Median and p99 over the restarts of each repetition (1,000 each); the repetition with
   the lowest median is kept, and every repetition is printed. Target: median ratio <= 3.

The supervisor logs a warning per crash; the "daz_actors" logger is set to CRITICAL for
the whole run so that the restart measure times restarts, not log formatting.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import outcome
import trio
import trio.testing

from daz_actors import (
    Actor,
    ActorRef,
    BackoffPolicy,
    ChildSpec,
    EventBus,
    Jitter,
    Registry,
    Supervisor,
    SupervisorPolicy,
    Tree,
    actor_factory,
    run_tree,
)

MAILBOX = 100  # the mailbox capacity, also the bare channel's buffer

perf = time.perf_counter
T = TypeVar("T")


@attrs.frozen
class Ping:
    """The message moved by the tell and ask measures (messages are frozen attrs classes)."""

    n: int = 0


class _Slot:
    """A bare one-shot reply slot: the parked asker, or the result if it came first."""

    __slots__ = ("result", "task")

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.result: outcome.Outcome[Any] | None = None

    def set(self, result: outcome.Outcome[Any]) -> None:
        task = self.task
        if task is None:
            self.result = result
        else:
            self.task = None
            trio.lowlevel.reschedule(task, result)

    async def wait(self) -> Any:
        if self.result is not None:
            return self.result.unwrap()
        self.task = trio.lowlevel.current_task()
        return await trio.lowlevel.wait_task_rescheduled(_abort)


def _abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.SUCCEEDED


@attrs.frozen
class Crash:
    """Makes the restart actor raise."""


@attrs.frozen
class Probe:
    """The first message the new incarnation handles after a crash; wakes the driver."""

    slot: _Slot


PING = Ping()
CRASH = Crash()


class Boom(Exception):
    """The crash the restart measure injects."""


class _Marks:
    """Time stamps taken inside the actors (shared by project and baseline)."""

    crashed_at = 0.0
    handled_at = 0.0


MARKS = _Marks()


# --------------------------------------------------------------------------- helpers


async def _with_actor(
    factory: Callable[[], Actor],
    body: Callable[[ActorRef], Awaitable[T]],
    *,
    policy: SupervisorPolicy | None = None,
) -> T:
    """Run `body(ref)` against one actor under a root supervisor, then stop the tree."""
    sup = Supervisor(
        "bench",
        [ChildSpec(name="actor", start=actor_factory(factory), mailbox_size=MAILBOX)],
        policy=policy,
        registry=Registry(),
        bus=EventBus(),
    )
    async with trio.open_nursery() as nursery:
        tree: Tree = await nursery.start(run_tree, sup)
        try:
            return await body(sup.ref("actor"))
        finally:
            tree.stop()


def _run(fn: Callable[[], Awaitable[Any]]) -> Any:
    """One measurement in its own trio.run, after a full collection."""
    gc.collect()
    return trio.run(fn)


# --------------------------------------------------------------------------- 1. tell


class Counter(Actor):
    def __init__(self, target: int, done: trio.Event) -> None:
        self.count = 0
        self.target = target
        self.done = done

    async def handle(self, message: Any) -> None:
        self.count += 1
        if self.count == self.target:
            self.done.set()


async def tell_project(n: int) -> float:
    """Messages/s through `ActorRef.send` into a counting class actor."""
    done = trio.Event()

    async def body(ref: ActorRef) -> float:
        send = ref.send
        msg = PING
        start = perf()
        for _ in range(n):
            await send(msg)
        await done.wait()
        return n / (perf() - start)

    return await _with_actor(lambda: Counter(n, done), body)


async def tell_baseline(n: int) -> float:
    """Messages/s through a bare memory channel between two tasks."""
    done = trio.Event()
    send_ch, recv_ch = trio.open_memory_channel[Any](MAILBOX)

    async def receiver() -> None:
        count = 0
        receive = recv_ch.receive
        while True:
            await receive()
            count += 1
            if count == n:
                done.set()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        send = send_ch.send
        msg = PING
        start = perf()
        for _ in range(n):
            await send(msg)
        await done.wait()
        return n / (perf() - start)


# --------------------------------------------------------------------------- 2. ask


class Echo(Actor):
    async def handle(self, message: Any) -> Any:
        return message


async def ask_project(n: int) -> float:
    """Round trips/s through `ActorRef.ask` against an actor that replies."""

    async def body(ref: ActorRef) -> float:
        ask = ref.ask
        msg = PING
        start = perf()
        for _ in range(n):
            await ask(msg)
        return n / (perf() - start)

    return await _with_actor(Echo, body)


async def _replier(recv_ch: trio.MemoryReceiveChannel[Any]) -> None:
    receive = recv_ch.receive
    value = outcome.Value
    while True:
        msg, slot = await receive()
        slot.set(value(msg))


async def ask_baseline(n: int, *, nowait: bool) -> float:
    """Round trips/s of the bare one-shot-slot request/reply."""
    send_ch, recv_ch = trio.open_memory_channel[Any](MAILBOX)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_replier, recv_ch)
        await trio.testing.wait_all_tasks_blocked()
        msg = PING
        start = perf()
        if nowait:
            send_nowait = send_ch.send_nowait
            for _ in range(n):
                slot = _Slot()
                send_nowait((msg, slot))
                await slot.wait()
        else:
            send = send_ch.send
            for _ in range(n):
                slot = _Slot()
                await send((msg, slot))
                await slot.wait()
        rate = n / (perf() - start)
        nursery.cancel_scope.cancel()
    return rate


# --------------------------------------------------------------------------- 3. restart


class Crasher(Actor):
    async def handle(self, message: Any) -> None:
        if type(message) is Crash:
            MARKS.crashed_at = perf()
            raise Boom("injected")
        MARKS.handled_at = perf()
        message.slot.set(outcome.Value(None))


ZERO_BACKOFF = SupervisorPolicy(
    max_restarts=10**9,
    within_seconds=3600.0,
    backoff=BackoffPolicy(initial=0, max_delay=0, jitter=Jitter.NONE),
)


async def restart_project(n: int) -> list[float]:
    """Seconds from each crash to the new incarnation handling its next message."""

    async def body(ref: ActorRef) -> list[float]:
        samples = []
        for _ in range(n):
            # both queued before the actor runs (no yield in between): the probe waits in
            # the mailbox, which belongs to the child slot and so survives the restart;
            # handling it wakes this task through a bare slot, exactly as in the baseline
            slot = _Slot()
            ref.try_send(CRASH)
            ref.try_send(Probe(slot))
            await slot.wait()
            samples.append(MARKS.handled_at - MARKS.crashed_at)
        return samples

    return await _with_actor(Crasher, body, policy=ZERO_BACKOFF)


async def _bare_worker(recv_ch: trio.MemoryReceiveChannel[Any]) -> None:
    """The baseline's actor: the same handling as `Crasher`."""
    receive = recv_ch.receive
    while True:
        message = await receive()
        if type(message) is Crash:
            MARKS.crashed_at = perf()
            raise Boom("injected")
        MARKS.handled_at = perf()
        message.slot.set(outcome.Value(None))


async def restart_baseline(n: int) -> list[float]:
    """The same measure with a minimal hand-written restart loop."""
    mail_send, mail_recv = trio.open_memory_channel[Any](MAILBOX)
    exit_send, exit_recv = trio.open_memory_channel[BaseException](math.inf)

    async def guarded() -> None:
        try:
            await _bare_worker(mail_recv)
        except Exception as exc:
            exit_send.send_nowait(exc)

    async def restart_loop(nursery: trio.Nursery) -> None:
        nursery.start_soon(guarded)
        async for _exc in exit_recv:
            nursery.start_soon(guarded)  # a fresh task on the same mailbox

    async with trio.open_nursery() as nursery:
        nursery.start_soon(restart_loop, nursery)
        await trio.testing.wait_all_tasks_blocked()
        samples = []
        for _ in range(n):
            slot = _Slot()
            mail_send.send_nowait(CRASH)
            mail_send.send_nowait(Probe(slot))
            await slot.wait()
            samples.append(MARKS.handled_at - MARKS.crashed_at)
        nursery.cancel_scope.cancel()
    return samples


# --------------------------------------------------------------------------- driver


@attrs.define
class Row:
    measure: str
    unit: str
    project: float
    baseline: float
    target: str
    met: bool | None  # None: informational

    @property
    def ratio(self) -> float:
        return self.project / self.baseline


def _interleaved(reps: int, *measures: Callable[[], Any]) -> list[list[Any]]:
    """Run each measure `reps` times, interleaved, rotating which one goes first."""
    results: list[list[Any]] = [[] for _ in measures]
    for i in range(reps):
        for k in range(len(measures)):
            j = (i + k) % len(measures)
            results[j].append(_run(measures[j]))
    return results


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, math.ceil(q * len(s)) - 1)]


def measure(reps: int, tell_n: int, ask_n: int, restart_n: int) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    notes: list[str] = []

    # warm-up: import paths, code objects, allocator
    _run(lambda: tell_project(2000))
    _run(lambda: tell_baseline(2000))
    _run(lambda: ask_project(1000))
    _run(lambda: ask_baseline(1000, nowait=True))
    _run(lambda: restart_project(50))
    _run(lambda: restart_baseline(50))

    p, b = _interleaved(reps, lambda: tell_project(tell_n), lambda: tell_baseline(tell_n))
    rows.append(Row("tell throughput", "msg/s", max(p), max(b), ">= 0.6", max(p) / max(b) >= 0.6))
    notes.append(
        f"tell: {tell_n:,} messages x {reps} reps, best; daz_actors "
        + ", ".join(f"{x / 1e3:.0f}k" for x in p)
        + "; bare channel "
        + ", ".join(f"{x / 1e3:.0f}k" for x in b)
    )

    p, b_wait, b_nowait = _interleaved(
        reps,
        lambda: ask_project(ask_n),
        lambda: ask_baseline(ask_n, nowait=False),
        lambda: ask_baseline(ask_n, nowait=True),
    )
    best_b = max(max(b_wait), max(b_nowait))
    rows.append(Row("ask round trips", "rt/s", max(p), best_b, ">= 0.5", max(p) / best_b >= 0.5))
    notes.append(
        f"ask: {ask_n:,} round trips x {reps} reps, best; daz_actors "
        + ", ".join(f"{x / 1e3:.0f}k" for x in p)
        + f"; bare variants: request by `await send` {max(b_wait) / 1e3:.0f}k, "
        f"by `send_nowait` {max(b_nowait) / 1e3:.0f}k (the faster is the baseline)"
    )

    p, b = _interleaved(
        reps, lambda: restart_project(restart_n), lambda: restart_baseline(restart_n)
    )
    # each rep's median and p99 over its restarts; the rep with the lowest median is kept
    p_stats = sorted((statistics.median(r), _pct(r, 0.99)) for r in p)
    b_stats = sorted((statistics.median(r), _pct(r, 0.99)) for r in b)
    (p_med, p_99), (b_med, b_99) = p_stats[0], b_stats[0]
    rows.append(Row("restart median", "us", p_med * 1e6, b_med * 1e6, "<= 3x", p_med / b_med <= 3))
    rows.append(Row("restart p99", "us", p_99 * 1e6, b_99 * 1e6, "(info)", None))

    def reps_text(stats: list[tuple[float, float]]) -> str:
        return ", ".join(f"{m * 1e6:.0f}/{q * 1e6:.0f}" for m, q in stats)

    notes.append(
        f"restart: {restart_n:,} restarts per rep x {reps} reps, the rep with the lowest "
        f"median; all reps (median/p99 us) daz_actors {reps_text(p_stats)}; "
        f"bare loop {reps_text(b_stats)}"
    )
    return rows, notes


def _fmt(value: float, unit: str) -> str:
    if unit == "us":
        return f"{value:,.1f} us"
    return f"{value / 1e3:,.1f}k {unit}"


def print_table(rows: list[Row], notes: list[str], elapsed: float, cpu: float) -> None:
    header = ("measure", "daz_actors", "bare trio", "ratio", "target", "met")
    lines = [
        (
            r.measure,
            _fmt(r.project, r.unit),
            _fmt(r.baseline, r.unit),
            f"{r.ratio:.2f}",
            r.target,
            "-" if r.met is None else ("yes" if r.met else "NO"),
        )
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]

    def out(cells: tuple[str, ...]) -> None:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )

    out(header)
    print("  ".join("-" * w for w in widths))
    for line in lines:
        out(line)
    print()
    for note in notes:
        print("- " + note)
    print(
        "- ratio = daz_actors / bare trio; for throughput higher is better, for restart "
        "latency lower is better."
    )
    share = cpu / elapsed
    print(
        f"- total {elapsed:.1f} s; this process got {share:.0%} of one core over the run"
        + ("" if share > 0.9 else " (other load on the machine: expect noisy figures)")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.runtime", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--reps", type=int, default=6, help="repetitions per measure (6)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args(argv)
    reps = 2 if args.quick else args.reps
    scale = 0.1 if args.quick else 1.0
    tell_n, ask_n, restart_n = int(60_000 * scale), int(30_000 * scale), int(1_000 * scale)

    logging.getLogger("daz_actors").setLevel(logging.CRITICAL)
    print(
        f"daz_actors runtime benchmarks, {datetime.date.today().isoformat()}, "
        f"Python {platform.python_version()}, trio {trio.__version__}, "
        f"{os.cpu_count()} cores, {platform.machine()}"
    )
    print(
        "logging: the 'daz_actors' logger is set to CRITICAL for this run "
        "(the supervisor's per-crash warning is not formatted or emitted)"
    )
    print()
    start, cpu_start = perf(), time.process_time()
    rows, notes = measure(reps, tell_n, ask_n, restart_n)
    print_table(rows, notes, perf() - start, time.process_time() - cpu_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
