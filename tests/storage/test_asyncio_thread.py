"""The dedicated asyncio loop in a thread that the SQL gateway runs its pool on."""

from __future__ import annotations

import asyncio
import threading

import pytest
import trio
import trio.testing

from daz_actors.storage.asyncio_thread import open_asyncio_thread


class Odd(ValueError):
    """An exception type of the test's own, to see that the type comes back."""


def bridge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("asyncio:test")]


async def test_results_and_exceptions_come_back_with_their_type():
    """A value comes back as is; an exception raised on the loop comes back with its type,
    its message and its traceback; the coroutine really ran on the loop's thread."""
    async with open_asyncio_thread(name="test") as bridge:

        async def where(x: int) -> tuple[int, str, bool]:
            await asyncio.sleep(0)
            loop = asyncio.get_running_loop()
            return x * 2, threading.current_thread().name, loop is bridge.loop

        assert await bridge.run(where, 21) == (42, "asyncio:test", True)

        async def fails() -> None:
            await asyncio.sleep(0)
            raise Odd("seven is odd")

        with pytest.raises(Odd, match="seven is odd") as caught:
            await bridge.run(fails)
        assert caught.traceback[-1].name == "fails"

        def not_a_coroutine_function() -> None:
            raise LookupError("raised before any coroutine existed")

        with pytest.raises(LookupError, match="before any coroutine"):
            await bridge.run(not_a_coroutine_function)  # type: ignore[arg-type]
        assert bridge.calls == 3


async def test_a_trio_cancel_ends_the_asyncio_task_before_the_caller_goes_on():
    """Cancelled from trio, the call cancels its asyncio task and waits until it has ended
    (its cleanup, which itself awaits, is over) before the caller sees the cancellation."""
    ended = threading.Event()
    started = threading.Event()

    async def holds_a_resource() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.05)  # as a connection's cleanup would: it takes a while
            ended.set()

    async with open_asyncio_thread(name="test", cancel_grace=30) as bridge:
        with trio.fail_after(20):
            with trio.move_on_after(0.1) as scope:
                await bridge.run(holds_a_resource)
            assert scope.cancelled_caught
            assert started.is_set()
            assert ended.is_set()  # already, when the caller goes on
            assert bridge.abandoned == 0
            assert bridge.tasks() == 0


async def test_a_call_cancelled_before_its_task_ran_comes_back_at_once():
    """Cancelled while the loop had not yet started its task (the loop busy), the call
    comes back as soon as the loop gets to it, not after the cancel grace, and its
    coroutine never runs."""
    blocking, release, ran = threading.Event(), threading.Event(), threading.Event()

    async def blocks_the_loop() -> None:
        blocking.set()
        release.wait(30)  # a blocking call on the loop: nothing else runs there meanwhile

    async def never_starts() -> None:
        ran.set()

    outcome: list[str] = []

    async def caller(scope: trio.CancelScope) -> None:
        with scope:
            await bridge.run(never_starts)
        outcome.append("cancelled" if scope.cancelled_caught else "returned")

    async with open_asyncio_thread(name="test", cancel_grace=15) as bridge:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(bridge.run, blocks_the_loop)
                while not blocking.is_set():  # noqa: ASYNC110 - a thread's event, deadline above
                    await trio.sleep(0.001)
                scope = trio.CancelScope()
                nursery.start_soon(caller, scope)
                await trio.testing.wait_all_tasks_blocked()  # its call is queued on the loop
                scope.cancel()
                await trio.testing.wait_all_tasks_blocked()  # it waits for the task to end
                assert outcome == []
                started = trio.current_time()
                release.set()
            assert outcome == ["cancelled"]
            assert trio.current_time() - started < 5  # not the 15 s grace
        assert not ran.is_set()
        assert bridge.abandoned == 0


async def test_a_blocked_loop_cannot_hold_a_cancelled_caller_or_the_exit():
    """A loop blocked in a synchronous call: a cancelled caller gives up waiting for its
    task after the cancel grace (counted, logged) and the context's exit returns after its
    stop timeout, leaving the stuck thread to end on its own."""
    release = threading.Event()

    async def blocks() -> None:
        release.wait(60)

    try:
        with trio.fail_after(20):
            async with open_asyncio_thread(
                name="test", cancel_grace=0.2, stop_timeout=0.3
            ) as bridge:
                with trio.move_on_after(0.1):
                    await bridge.run(blocks)
                assert bridge.abandoned == 1
            assert bridge.thread.is_alive()  # left behind, not waited for
    finally:
        release.set()
    with trio.fail_after(10):
        await trio.to_thread.run_sync(bridge.thread.join)
    assert bridge.loop.is_closed()


async def test_the_thread_stops_with_the_context_and_its_leftover_tasks_are_cancelled():
    """At exit, a task still on the loop is cancelled and waited for, the loop closed and
    its thread joined, also when the body raised; a stopped bridge refuses new calls."""
    for crash in (False, True):
        cleaned = threading.Event()

        async def lingers(cleaned: threading.Event = cleaned) -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                await asyncio.sleep(0.01)
                cleaned.set()

        with trio.fail_after(20):
            try:
                async with open_asyncio_thread(name="test") as bridge:
                    bridge.loop.call_soon_threadsafe(bridge.loop.create_task, lingers())
                    await bridge.run(asyncio.sleep, 0.01)  # the task has started
                    # the call's own task has ended before its result came back (it once
                    # had not, under load, when the task sent its result from inside)
                    assert bridge.tasks() == 1
                    if crash:
                        raise Odd("the body crashed")
            except Odd:
                assert crash
        assert cleaned.is_set()
        assert not bridge.thread.is_alive()
        assert bridge.loop.is_closed()
        assert bridge_threads() == []
        with pytest.raises(RuntimeError, match="stopped"):
            await bridge.run(asyncio.sleep, 0)
