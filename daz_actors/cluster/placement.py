"""Placement: which live node should hold each channel (pure, no I/O).

Every node computes the same answer from the same snapshot of the database (nodes,
leases), and acts only on its own part of it: it claims the free channels placed on it,
and gives back the channels it holds that are placed elsewhere. Rules:

* a channel goes only to a node whose config lists it; a pinned channel goes to a node of
  the pinned name whenever one is live (elsewhere only while none is);
* a channel stays with its live holder (no move without a reason), unless the holder has
  at least two channels' weight more than another node's share allows: then one channel
  moves to the least loaded node at a time (a difference of one is tolerated: damping);
* a node takes channels away from others only once it has run `settle` seconds, so a node
  that flaps (starts and dies again) never pulls channels back and forth; free channels
  (whose holder died or left) go at once to the least loaded live node;
* loads are weighted: a channel's weight (default 1) over the node's weight (default 1).

Ties are broken by a hash of (channel, node), so that equal nodes get a spread that
does not depend on the order of anything.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping

import attrs

__all__ = ["NodeView", "PlacementRules", "place"]


@attrs.frozen(kw_only=True)
class NodeView:
    """A live node as placement sees it."""

    node_id: str  # unique per process
    name: str  # what pins refer to
    weight: float = 1.0  # its capacity relative to the others
    age: float = 0.0  # seconds since it started (by the database's clock)
    channels: frozenset[str] = frozenset()  # the channels it may serve


@attrs.frozen(kw_only=True)
class PlacementRules:
    """The placement settings every node shares."""

    pins: Mapping[str, str] = attrs.field(factory=dict)  # channel -> node name
    channel_weights: Mapping[str, float] = attrs.field(factory=dict)  # default 1
    settle: float = 30.0  # seconds a node runs before channels are moved to it

    def weight(self, channel: str) -> float:
        return self.channel_weights.get(channel, 1.0)


@functools.lru_cache(maxsize=65536)
def _rank(channel: str, node_id: str) -> int:
    digest = hashlib.blake2b(f"{channel}\0{node_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def place(
    channels: Iterable[str],
    nodes: Iterable[NodeView],
    holders: Mapping[str, str],
    rules: PlacementRules,
) -> dict[str, str]:
    """Channel -> node id for every channel some live node may serve.

    `holders` maps a channel to the node holding its valid lease now (channels absent are
    free). Holders that are not among `nodes` (dead, stopped) count as free.
    """
    live = {node.node_id: node for node in nodes}
    load = dict.fromkeys(live, 0.0)

    def candidates(channel: str) -> list[NodeView]:
        able = [n for n in live.values() if channel in n.channels]
        pinned = rules.pins.get(channel)
        if pinned is not None:
            named = [n for n in able if n.name == pinned]
            if named:
                return named
        return able

    def share(node: NodeView, extra: float) -> float:
        return (load[node.node_id] + extra) / node.weight

    placed: dict[str, str] = {}
    free: list[str] = []
    for channel in sorted(set(channels)):
        if not candidates(channel):
            continue
        holder = holders.get(channel)
        if holder in live and channel in live[holder].channels:
            placed[channel] = holder
            load[holder] += rules.weight(channel)
        else:
            free.append(channel)
    # free channels: heaviest first, each to the least loaded node able to serve it
    for channel in sorted(free, key=lambda c: (-rules.weight(c), c)):
        w = rules.weight(channel)
        best = min(candidates(channel), key=lambda n: (share(n, w), _rank(channel, n.node_id)))
        placed[channel] = best.node_id
        load[best.node_id] += w
    # rebalance toward settled nodes, one channel at a time, while it clearly helps
    for _ in range(len(placed) + 1):
        move = _best_move(placed, live, load, rules)
        if move is None:
            break
        channel, target = move
        w = rules.weight(channel)
        load[placed[channel]] -= w
        load[target] += w
        placed[channel] = target
    return placed


def _best_move(
    placed: Mapping[str, str],
    live: Mapping[str, NodeView],
    load: Mapping[str, float],
    rules: PlacementRules,
) -> tuple[str, str] | None:
    """One move: a pinned channel to its settled pinned node, else a channel from the most
    loaded node to the least loaded settled one, if that clearly helps."""
    settled = [n for n in live.values() if n.age >= rules.settle]  # damping
    for channel in sorted(placed):
        pinned = rules.pins.get(channel)
        if pinned is None or live[placed[channel]].name == pinned:
            continue
        homes = [n for n in settled if n.name == pinned and channel in n.channels]
        if homes:
            home = min(homes, key=lambda n: (load[n.node_id] / n.weight, _rank(channel, n.node_id)))
            return channel, home.node_id
    if not settled:
        return None

    def share(node: NodeView) -> float:
        return load[node.node_id] / node.weight

    by_holder: dict[str, list[str]] = {}
    for channel, node_id in placed.items():
        by_holder.setdefault(node_id, []).append(channel)
    targets = sorted(settled, key=lambda n: (share(n), n.node_id))
    for holder in sorted(live.values(), key=lambda n: (-share(n), n.node_id)):
        before = share(holder)
        # a pinned channel never leaves its pinned node for another
        mine = [c for c in by_holder.get(holder.node_id, ()) if rules.pins.get(c) != holder.name]
        for target in targets:
            if share(target) >= before:
                break  # the targets only get heavier from here
            if target.node_id == holder.node_id:
                continue
            movable = []
            for channel in mine:
                w = rules.weight(channel)
                after_target = (load[target.node_id] + w) / target.weight
                after_holder = (load[holder.node_id] - w) / holder.weight
                # the target must end lighter than the holder was, by a whole channel of
                # its own, and the holder no lighter than the target was: no ping-pong
                if channel not in target.channels or before - after_target < w / target.weight:
                    continue
                if after_holder < share(target):
                    continue
                movable.append(channel)
            if movable:
                channel = min(movable, key=lambda c: (_rank(c, target.node_id), c))
                return channel, target.node_id
    return None
