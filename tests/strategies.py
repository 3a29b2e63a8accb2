"""Hypothesis strategies shared by the test suite, kept in one place (as attrs does).

Import them in a test module with ``from strategies import ...`` (``tests/`` is on the path
because ``tests/conftest.py`` lives there).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import attrs
from hypothesis import strategies as st

from daz_actors import BackoffPolicy, Jitter, Restart, Strategy

__all__ = [
    "TreeShape",
    "attempts",
    "backoff_policies",
    "chat_batches",
    "chat_lines",
    "huge_attempts",
    "jitters",
    "node_names",
    "previous_delays",
    "seeds",
    "topic_segments",
    "topics",
    "tree_shapes",
]

# ---------------------------------------------------------------------------- backoff

#: An initial delay: zero, or a realistic positive number of seconds.
initials = st.one_of(st.just(0.0), st.floats(min_value=1e-3, max_value=1e4))
#: A growth factor >= 1, float or int (an int multiplier must not build huge ints).
multipliers = st.one_of(
    st.just(1.0), st.floats(min_value=1.0, max_value=100.0), st.integers(min_value=1, max_value=10)
)
jitters = st.sampled_from(Jitter)
#: Retry numbers: mostly small, where the exponential part is visible.
attempts = st.integers(min_value=0, max_value=80)
#: Retry numbers far past any float range.
huge_attempts = st.integers(min_value=10**4, max_value=10**30)
#: The delay returned last time, as decorrelated jitter is fed (None: the first attempt).
previous_delays = st.none() | st.floats(min_value=0.0, max_value=1e6)
seeds = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def backoff_policies(draw: st.DrawFn, *, jitter: Jitter | None = None) -> BackoffPolicy:
    """A valid `BackoffPolicy`; `jitter` fixes the mode, otherwise any mode."""
    initial = draw(initials)
    max_delay = initial + draw(st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e5)))
    return BackoffPolicy(
        initial=initial,
        multiplier=draw(multipliers),
        max_delay=max_delay,
        jitter=jitter if jitter is not None else draw(jitters),
        jitter_ratio=draw(st.one_of(st.sampled_from([0.0, 0.25, 1.0]), st.floats(0.0, 1.0))),
    )


# ---------------------------------------------------------------------------- bus topics

#: One dotted-name segment, from the alphabet the bus accepts.
topic_segments = st.text(alphabet="abcxyzABZ019_:-", min_size=1, max_size=6)


def topics(*, min_segments: int = 1, max_segments: int = 4) -> st.SearchStrategy[str]:
    """A valid dotted topic such as ``sql.exec.failed``."""
    return st.lists(topic_segments, min_size=min_segments, max_size=max_segments).map(".".join)


# ---------------------------------------------------------------------------- config trees

#: A name the config accepts for a supervisor or an actor (TOML keys are quoted).
node_names = st.text(alphabet="abcdez019_-:.é", min_size=1, max_size=8)


@attrs.frozen(kw_only=True)
class TreeShape:
    """A valid tree for a config file: supervisors with ordered children, and actor leaves."""

    root: str  # the root supervisor
    supervisors: dict[str, tuple[str, ...]]  # supervisor -> its children in start order
    strategies: dict[str, Strategy]  # supervisor -> its strategy
    actors: dict[str, Restart]  # actor -> its restart type

    def parents(self) -> dict[str, str]:
        """Every non-root node mapped to the supervisor that lists it."""
        return {c: s for s, children in self.supervisors.items() for c in children}

    def depth(self, name: str) -> int:
        """How far `name` is below the root (the root is 0)."""
        parents = self.parents()
        depth = 0
        while name in parents:
            name = parents[name]
            depth += 1
        return depth

    def toml(self, *, kind: str, edit: Callable[[dict[str, list[str]]], None] | None = None) -> str:
        """The config text; every actor is of `kind`. `edit` may change the children lists."""
        children = {s: list(c) for s, c in self.supervisors.items()}
        if edit is not None:
            edit(children)
        lines = ["[tree]", f"root = {json.dumps(self.root)}", ""]
        for name, kids in children.items():
            lines += [
                f"[supervisors.{json.dumps(name)}]",
                f"strategy = {json.dumps(self.strategies[name].value)}",
                f"children = {json.dumps(kids)}",
                "",
            ]
        for name, restart in self.actors.items():
            lines += [
                f"[actors.{json.dumps(name)}]",
                f"kind = {json.dumps(kind)}",
                f"restart = {json.dumps(restart.value)}",
                "",
            ]
        return "\n".join(lines)


@st.composite
def tree_shapes(draw: st.DrawFn, *, max_depth: int = 3, max_children: int = 3) -> TreeShape:
    """A random valid tree: nested supervisors, actors as leaves, unique names."""
    pool = draw(st.lists(node_names, min_size=24, max_size=24, unique=True))
    supervisors: dict[str, tuple[str, ...]] = {}
    strategies: dict[str, Strategy] = {}
    actors: dict[str, Restart] = {}

    def build(name: str, depth: int) -> None:
        kids: list[str] = []
        supervisors[name] = ()  # keep start order: parents before their children
        strategies[name] = draw(st.sampled_from(Strategy))
        for _ in range(draw(st.integers(min_value=1 if depth == 0 else 0, max_value=max_children))):
            if not pool:  # the names ran out: the tree is big enough
                break
            child = pool.pop()
            if depth < max_depth and draw(st.booleans()):
                build(child, depth + 1)
            else:
                actors[child] = draw(st.sampled_from(Restart))
            kids.append(child)
        supervisors[name] = tuple(kids)

    root = pool.pop()
    build(root, 0)
    return TreeShape(root=root, supervisors=supervisors, strategies=strategies, actors=actors)


# ---------------------------------------------------------------------------- chat logs

#: One chat line as the core logs it: (channel, user name, minute from a fixed start, text);
#: few channels and names (in any case), so that counts add up per key.
chat_lines = st.tuples(
    st.sampled_from(["lobby", "den"]),
    st.sampled_from(["ann", "Ann", "bob", "bot", "cat"]),
    st.integers(min_value=0, max_value=3 * 24 * 60),
    st.sampled_from(["hi", "!cmd", "text"]),
)


@st.composite
def chat_batches(draw: st.DrawFn) -> list[list[tuple[int, str, str, int, str]]]:
    """Chat lines, each with its event id (an int), cut into INSERT statements of one or
    more rows, a few statements repeated (lines logged twice, as a retried write does)."""
    lines = [(i, *line) for i, line in enumerate(draw(st.lists(chat_lines, max_size=60)))]
    batches: list[list[tuple[int, str, str, int, str]]] = []
    i = 0
    while i < len(lines):
        size = draw(st.integers(min_value=1, max_value=8))
        batches.append(lines[i : i + size])
        i += size
    repeats = draw(st.lists(st.sampled_from(batches), max_size=3)) if batches else []
    return batches + repeats
