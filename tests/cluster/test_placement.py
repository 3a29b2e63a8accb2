"""Placement (daz_actors/cluster/placement.py): pure rules, checked on random clusters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from daz_actors.cluster.placement import NodeView, PlacementRules, place

CHANNELS = [f"c{n}" for n in range(12)]
SETTLED = 100.0  # an age past any settle time used here


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[str], list[NodeView], dict[str, str]]:
    channels = draw(st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=12, unique=True))
    count = draw(st.integers(1, 5))
    nodes = [
        NodeView(
            node_id=f"n{i}",
            name=f"host{i % 2}",
            age=draw(st.sampled_from([0.0, SETTLED])),
            channels=frozenset(draw(st.lists(st.sampled_from(channels), unique=True)))
            if draw(st.booleans())
            else frozenset(channels),
        )
        for i in range(count)
    ]
    ids = [n.node_id for n in nodes] + ["dead"]
    holders = draw(st.dictionaries(st.sampled_from(channels), st.sampled_from(ids)))
    return channels, nodes, holders


@given(clusters())
def test_every_servable_channel_goes_to_exactly_one_node_that_may_serve_it(cluster):
    """Each channel some live node lists is placed once, on a node that lists it; a channel
    no live node lists is not placed."""
    channels, nodes, holders = cluster
    placed = place(channels, nodes, holders, PlacementRules(settle=30))
    by_id = {n.node_id: n for n in nodes}
    for channel in channels:
        able = [n for n in nodes if channel in n.channels]
        if able:
            assert channel in placed
            assert channel in by_id[placed[channel]].channels
        else:
            assert channel not in placed


@given(clusters())
def test_placing_again_from_its_own_answer_moves_nothing(cluster):
    """Once the channels sit where placement put them, placement keeps them there (no
    channel goes back and forth between two ticks)."""
    channels, nodes, holders = cluster
    rules = PlacementRules(settle=30)
    first = place(channels, nodes, holders, rules)
    assert place(channels, nodes, first, rules) == first


@given(st.integers(1, 5), st.integers(0, 12), st.data())
def test_settled_equal_nodes_end_within_one_channel_of_each_other(count, n, data):
    """Equal, settled nodes that may all serve every channel: whatever holds what now,
    their loads end at most one channel apart."""
    channels = CHANNELS[:n]
    nodes = [
        NodeView(node_id=f"n{i}", name="h", age=SETTLED, channels=frozenset(channels))
        for i in range(count)
    ]
    holders = data.draw(
        st.dictionaries(st.sampled_from(channels or ["x"]), st.sampled_from(["n0", "n1"]))
    )
    placed = place(channels, nodes, holders, PlacementRules(settle=30))
    loads = [sum(1 for node in placed.values() if node == n.node_id) for n in nodes]
    assert max(loads) - min(loads) <= 1, loads


def test_a_node_that_has_not_settled_takes_free_channels_but_none_from_live_nodes():
    """Damping: a new node gets no channel moved to it until it has run `settle` seconds,
    but a channel whose holder is gone goes to it at once if it is the least loaded."""
    old = NodeView(node_id="old", name="h", age=SETTLED, channels=frozenset(CHANNELS[:4]))
    new = NodeView(node_id="new", name="h", age=1.0, channels=frozenset(CHANNELS[:4]))
    held = dict.fromkeys(CHANNELS[:4], "old")
    rules = PlacementRules(settle=30)
    assert place(CHANNELS[:4], [old, new], held, rules) == held
    settled = NodeView(node_id="new", name="h", age=31.0, channels=frozenset(CHANNELS[:4]))
    moved = place(CHANNELS[:4], [old, settled], held, rules)
    assert sorted(moved.values()) == ["new", "new", "old", "old"]
    freed = {"c0": "old", "c1": "old", "c2": "old"}  # c3's holder died
    assert place(CHANNELS[:4], [old, new], freed, rules)["c3"] == "new"


def test_pinned_channels_go_to_their_node_and_back_to_it_once_it_has_settled():
    """A pinned channel goes to a node of the pinned name while one lives; elsewhere while
    none does; back to it once it has settled."""
    a = NodeView(node_id="a1", name="alpha", age=SETTLED, channels=frozenset(CHANNELS[:3]))
    b = NodeView(node_id="b1", name="beta", age=SETTLED, channels=frozenset(CHANNELS[:3]))
    rules = PlacementRules(pins={"c0": "beta"}, settle=30)
    assert place(CHANNELS[:3], [a, b], {}, rules)["c0"] == "b1"
    assert place(CHANNELS[:3], [a], {}, rules)["c0"] == "a1"  # beta is gone: failover
    young_b = NodeView(node_id="b2", name="beta", age=1.0, channels=frozenset(CHANNELS[:3]))
    held = {"c0": "a1", "c1": "a1", "c2": "b2"}
    assert place(CHANNELS[:3], [a, young_b], held, rules)["c0"] == "a1"  # not settled yet
    old_b = NodeView(node_id="b2", name="beta", age=31.0, channels=frozenset(CHANNELS[:3]))
    assert place(CHANNELS[:3], [a, old_b], held, rules)["c0"] == "b2"


def test_weights_share_the_load_by_capacity_and_by_channel():
    """A node of weight 2 gets twice the channels; a channel of weight 3 counts thrice."""
    big = NodeView(
        node_id="big", name="h", weight=2.0, age=SETTLED, channels=frozenset(CHANNELS[:6])
    )
    small = NodeView(node_id="small", name="h", age=SETTLED, channels=frozenset(CHANNELS[:6]))
    placed = place(CHANNELS[:6], [big, small], {}, PlacementRules())
    assert sorted(placed.values()).count("big") == 4
    heavy = PlacementRules(channel_weights={"c0": 3.0})
    placed = place(
        CHANNELS[:4],
        [small, NodeView(node_id="other", name="h", age=SETTLED, channels=frozenset(CHANNELS[:4]))],
        {},
        heavy,
    )
    alone = placed["c0"]
    assert [c for c, n in placed.items() if n == alone] == ["c0"]


def test_a_difference_of_one_channel_is_tolerated_and_two_are_not():
    """Hysteresis: no move is proposed between settled equal nodes one channel apart (it
    would only swap their loads), and one is between nodes two apart."""
    from daz_actors.cluster.placement import _best_move

    nodes = {
        n: NodeView(node_id=n, name="h", age=SETTLED, channels=frozenset(CHANNELS[:4]))
        for n in ("a", "b")
    }
    rules = PlacementRules(settle=30)
    one_apart = {"c0": "a", "c1": "a", "c2": "b"}
    assert _best_move(one_apart, nodes, {"a": 2.0, "b": 1.0}, rules) is None
    two_apart = {"c0": "a", "c1": "a", "c2": "a", "c3": "b"}
    move = _best_move(two_apart, nodes, {"a": 3.0, "b": 1.0}, rules)
    assert move is not None
    assert move[1] == "b"
    assert two_apart[move[0]] == "a"
