"""Run asyncio coroutines from trio on a dedicated asyncio event loop in its own thread.

The storage layer's bridge to asyncpg (which runs only on asyncio). trio-asyncio hosts an
asyncio loop inside trio's own; each call through it costs several passes of that loop
(issue 15 measured about 560 us of client CPU per retry batch more than plain asyncio, see
bench/README.md "The bridge"). Here the asyncio loop runs in a thread of its own: a call
is one ``call_soon_threadsafe`` into that loop and one ``run_sync_soon`` back into trio,
and asyncpg's I/O runs on asyncio's ordinary loop.

    async with open_asyncio_thread(name="sql-gateway") as bridge:
        rows = await bridge.run(pool.fetch, "SELECT 1")

Guarantees:
- the result or exception of the coroutine comes back to the trio caller as is (its type,
  its traceback);
- a trio cancellation cancels the asyncio task and waits for it to end (at most
  `cancel_grace` seconds, shielded) before the caller sees `trio.Cancelled`, so nothing
  the task holds (an asyncpg connection mid-statement) is left running behind the caller;
  a task that outlives the grace (a hung loop) is abandoned with an error logged;
- the thread starts with the context manager and stops at its exit, after the tasks still
  running there are cancelled and waited for (again at most `cancel_grace`); a loop that
  does not stop within `stop_timeout` is left to end on its own (a daemon thread, logged)
  so trio's shutdown is never held by it beyond those bounds.

Everything a coroutine run here touches runs in the loop's thread: it must not touch trio
objects (events, channels, the nursery); plain Python values it only reads are fine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import outcome
import trio

__all__ = ["AsyncioThread", "open_asyncio_thread"]

log = logging.getLogger("daz_actors.storage")

T = TypeVar("T")

CANCEL_GRACE = 5.0  # seconds a cancelled call waits for its asyncio task to end
STOP_TIMEOUT = 5.0  # seconds the exit waits for the loop's thread to end


class _Call:
    """One coroutine in flight: where its outcome goes."""

    __slots__ = ("args", "fn", "result", "task", "waiter")

    def __init__(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.task: asyncio.Task[outcome.Outcome[Any]] | None = None  # on the loop's thread
        self.result: outcome.Outcome[Any] | None = None  # set on trio's thread
        self.waiter: Any = None  # the trio task waiting for `result`, if any


class AsyncioThread:
    """A running asyncio loop in its own thread; `run` calls into it from trio."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
        *,
        cancel_grace: float = CANCEL_GRACE,
    ) -> None:
        self.loop = loop
        self.thread = thread
        self.cancel_grace = cancel_grace
        self.calls = 0  # calls made
        self.abandoned = 0  # cancelled calls whose task did not end within the grace
        self._token = trio.lowlevel.current_trio_token()
        self._closed = False

    def tasks(self) -> int:
        """Tasks on the loop now (0 once it is closed)."""
        if self.loop.is_closed():
            return 0
        return len(asyncio.all_tasks(self.loop))

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` on the loop's thread; its result, or its exception raised."""
        if self._closed:
            raise RuntimeError("the asyncio thread is stopped")
        call = _Call(fn, args)
        self.calls += 1
        self.loop.call_soon_threadsafe(self._start, call)
        try:
            await self._wait(call)
        except BaseException:  # cancelled (or interrupted): end the task before going on
            if call.result is None:
                self.loop.call_soon_threadsafe(self._cancel, call)
                with trio.CancelScope(shield=True), trio.move_on_after(self.cancel_grace):
                    await self._wait(call)
                if call.result is None:
                    self.abandoned += 1
                    log.error(
                        "an asyncio call (%s) did not end within %g s of its cancellation;"
                        " abandoned (is the asyncio loop blocked?)",
                        getattr(fn, "__qualname__", fn),
                        self.cancel_grace,
                    )
            raise
        assert call.result is not None
        result: T = call.result.unwrap()
        return result

    async def _wait(self, call: _Call) -> None:
        """Until `call` has its outcome; cancellable (the call runs on)."""
        if call.result is not None:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        call.waiter = trio.lowlevel.current_task()

        def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
            call.waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    # ---- on the loop's thread ---------------------------------------------------------

    def _start(self, call: _Call) -> None:
        call.task = self.loop.create_task(self._body(call))
        # the outcome goes back once the task has ended (not from inside it), so a caller
        # that has its outcome never sees the task still among the loop's tasks
        call.task.add_done_callback(functools.partial(self._finished, call))

    async def _body(self, call: _Call) -> outcome.Outcome[Any]:
        """The task: await the call's coroutine; its outcome."""
        try:
            return outcome.Value(await call.fn(*call.args))
        except BaseException as exc:  # incl. CancelledError: the trio side decides
            return outcome.Error(exc)

    def _finished(self, call: _Call, task: asyncio.Task[outcome.Outcome[Any]]) -> None:
        """The task ended: send its outcome to trio (cancelled before its first step, its
        body never ran: a CancelledError)."""
        if task.cancelled():
            self._send(call, outcome.Error(asyncio.CancelledError()))
        else:
            self._send(call, task.result())

    def _cancel(self, call: _Call) -> None:
        assert call.task is not None  # `_start` ran first: the loop keeps their order
        call.task.cancel()

    def _send(self, call: _Call, result: outcome.Outcome[Any]) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # trio is gone: nobody waits
            self._token.run_sync_soon(self._deliver, call, result)

    # ---- back on trio's thread --------------------------------------------------------

    @staticmethod
    def _deliver(call: _Call, result: outcome.Outcome[Any]) -> None:
        call.result = result
        waiter, call.waiter = call.waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """The thread: run `loop` until stopped, then close it."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


async def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    """On the loop: cancel every other task and wait for them to end."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


@asynccontextmanager
async def open_asyncio_thread(
    *,
    name: str = "asyncio",
    cancel_grace: float = CANCEL_GRACE,
    stop_timeout: float = STOP_TIMEOUT,
) -> AsyncIterator[AsyncioThread]:
    """Start an asyncio loop in a new thread (named ``asyncio:<name>``); stop it at exit.

    At exit the tasks still on the loop are cancelled and waited for (at most
    `cancel_grace` seconds), then the loop stops and its thread is joined (at most
    `stop_timeout` seconds; a thread still running then is left, logged, as a daemon).
    """
    # not `asyncio.new_event_loop()`: trio-asyncio, when imported, replaces it with one
    # that refuses to run inside trio; this loop runs in another thread
    loop = asyncio.SelectorEventLoop()
    thread = threading.Thread(target=_serve, args=(loop,), name=f"asyncio:{name}", daemon=True)
    thread.start()
    bridge = AsyncioThread(loop, thread, cancel_grace=cancel_grace)
    try:
        yield bridge
    finally:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(cancel_grace):
                await bridge.run(_cancel_all, loop)
            bridge._closed = True
            loop.call_soon_threadsafe(loop.stop)
            with trio.move_on_after(stop_timeout):
                await trio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
            if thread.is_alive():
                log.error(
                    "the asyncio loop's thread %s did not stop within %g s; left running",
                    thread.name,
                    stop_timeout,
                )
