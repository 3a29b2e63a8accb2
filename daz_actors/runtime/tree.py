"""Running a supervision tree as the root of the process."""

from __future__ import annotations

import logging
import signal

import trio

from daz_actors.runtime.actor import ActorContext
from daz_actors.runtime.errors import StopForced
from daz_actors.runtime.mailbox import Mailbox
from daz_actors.runtime.ref import ActorRef
from daz_actors.runtime.supervisor import ChildInfo, Supervisor

__all__ = ["Tree", "run_tree"]

log = logging.getLogger("daz_actors.tree")


class Tree:
    """A handle on a running tree: introspect it, or ask for an orderly shutdown."""

    def __init__(self, root: Supervisor, ctx: ActorContext) -> None:
        self.root = root
        self._ctx = ctx

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called (or a signal asked for shutdown)."""
        return self._ctx.stop_requested.is_set()

    async def wait_stopping(self) -> None:
        """Return once the orderly shutdown has begun (`stop()` or a signal)."""
        await self._ctx.stop_requested.wait()

    def stop(self) -> None:
        """Begin the orderly shutdown: children stop in reverse start order."""
        self._ctx._request_stop()

    def which_children(self) -> list[ChildInfo]:
        """The root's children, each with its own children nested."""
        return self.root.which_children()


class _Forward:
    """The root's ``task_status``: reports the `Tree` handle when the root is ready."""

    def __init__(self, status: trio.TaskStatus[Tree], tree: Tree) -> None:
        self._status = status
        self._tree = tree

    def started(self, value: object = None) -> None:
        log.info("tree %r is ready", self._tree.root.name)
        self._status.started(self._tree)


async def _watch_signals(tree: Tree, cancel_scope: trio.CancelScope, forced: list[str]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not tree.stopping:
                log.warning("%s received: shutting down in order", name)
                tree.stop()
            else:
                log.error("second %s: cancelling everything now", name)
                forced.append(name)
                cancel_scope.cancel()


async def run_tree(
    root: Supervisor,
    *,
    handle_signals: bool = False,
    task_status: trio.TaskStatus[Tree] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `root` until it is stopped (returns) or gives up (raises `SupervisorGaveUp`).

    With `handle_signals`, SIGINT and SIGTERM begin the orderly shutdown; a second one
    cancels what has not stopped yet and raises `StopForced` once it is cancelled.
    ``await nursery.start(run_tree, root)`` returns the `Tree` handle once every child
    reported ready.
    """
    mailbox = Mailbox(root.name, 16)
    ctx = ActorContext(
        name=root.name,
        mailbox=mailbox,
        ref=ActorRef(mailbox),
        registry=root.registry,
        bus=root.bus,
        incarnation=1,
    )
    tree = Tree(root, ctx)
    failure: Exception | None = None
    forced: list[str] = []  # the signal that forced the stop
    try:
        async with trio.open_nursery() as nursery:
            if handle_signals:
                nursery.start_soon(_watch_signals, tree, nursery.cancel_scope, forced)
            try:
                await root(ctx, task_status=_Forward(task_status, tree))
            except Exception as exc:
                failure = exc
            finally:
                nursery.cancel_scope.cancel()
    finally:
        root.close()
    if failure is not None:
        raise failure
    if forced:
        raise StopForced(f"a second {forced[0]} cancelled what had not stopped in order")
