"""The lease fence (daz_actors/cluster/node.py) on trio's clock."""

from __future__ import annotations

import trio

from daz_actors.cluster.node import LeaseFence


async def test_a_fence_closes_at_its_deadline_and_never_opens_again(autojump_clock):
    """Open until its deadline; a renewal before it moves the deadline; once past it, it
    stays closed (a late renewal is refused) and says why."""
    fence = LeaseFence(7, deadline=trio.current_time() + 2)
    assert fence.is_open()
    assert fence.token == 7
    await trio.sleep(1)
    assert fence.extend(trio.current_time() + 2)
    await trio.sleep(1.5)
    assert fence.is_open()
    with trio.fail_after(10):
        await fence.wait_closed()
    assert not fence.is_open()
    assert trio.current_time() >= fence.deadline
    assert not fence.extend(trio.current_time() + 100)
    assert not fence.is_open()
    assert fence.reason == "not renewed in time"


async def test_closing_wakes_the_waiters_and_keeps_the_first_reason(autojump_clock):
    """`close` ends `wait_closed` at once, before the deadline; the first reason stays."""
    fence = LeaseFence(1, deadline=trio.current_time() + 100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fence.wait_closed)
        await trio.sleep(1)
        fence.close("given away")
        fence.close("again")
    assert trio.current_time() < 10
    assert fence.reason == "given away"
