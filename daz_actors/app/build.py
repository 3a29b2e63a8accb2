"""Turning a validated `Config` into a tree of supervisors and actors, and printing it."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from daz_actors.app.config import Config, SupervisorConfig
from daz_actors.runtime.backoff import BackoffPolicy, Jitter
from daz_actors.runtime.bus import EventBus
from daz_actors.runtime.kinds import ActorKinds, BuildContext
from daz_actors.runtime.registry import Registry
from daz_actors.runtime.supervisor import ChildSpec, Supervisor

__all__ = ["build_tree", "format_tree"]


def build_tree(
    config: Config,
    kinds: ActorKinds,
    *,
    registry: Registry,
    bus: EventBus,
    resources: Mapping[str, Any] | None = None,
    rng: random.Random | None = None,
) -> Supervisor:
    """Build the root `Supervisor` that `config` describes (nothing starts yet)."""
    res = dict(resources or {})

    def supervisor(name: str) -> Supervisor:
        node = config.supervisors[name]
        return Supervisor(
            name,
            [spec(child) for child in node.children],
            policy=node.policy(),
            registry=registry,
            bus=bus,
            rng=rng,
        )

    def spec(name: str) -> ChildSpec:
        if name in config.supervisors:
            node = config.supervisors[name]
            return ChildSpec(
                name=name,
                start=supervisor(name),
                restart=node.restart,
                shutdown_timeout=node.shutdown_timeout,
            )
        actor = config.actors[name]
        kind = kinds.get(actor.kind, path=f"actors.{name}.kind")
        ctx = BuildContext(name=name, config=config, registry=registry, bus=bus, resources=res)
        return ChildSpec(
            name=name,
            start=kind.build(config.actor_params[name], ctx),
            restart=actor.restart,
            shutdown_timeout=actor.shutdown_timeout,
            mailbox_size=actor.mailbox_size,
            redeliver=actor.redeliver,
        )

    return supervisor(config.root)


def _seconds(value: float | None) -> str:
    return "no limit" if value is None else f"{value:g} s"


def describe_backoff(policy: BackoffPolicy) -> str:
    """One line: ``0.1 s x2 up to 30 s, jitter proportional ±25%``."""
    jitter = policy.jitter.value
    if policy.jitter is Jitter.PROPORTIONAL:
        jitter += f" ±{policy.jitter_ratio * 100:.4g}%"  # 0.125 is ±12.5%, not a rounded ±12%
    return (
        f"backoff {policy.initial:g} s x{policy.multiplier:g} up to {policy.max_delay:g} s, "
        f"jitter {jitter}"
    )


def _describe_supervisor(node: SupervisorConfig) -> str:
    return (
        f"supervisor {node.strategy.value}, {node.restart.value}, "
        f"max {node.max_restarts} restarts in {node.within_seconds:g} s, "
        f"{describe_backoff(node.backoff)}, reset after {node.reset_after:g} s, "
        f"shutdown {_seconds(node.shutdown_timeout)}"
    )


def format_tree(config: Config) -> str:
    """The tree as text, each node with its policy (what `daz-actors tree` prints)."""
    lines = [f"{config.root} ({_describe_supervisor(config.supervisors[config.root])})"]

    def walk(name: str, indent: str) -> None:
        children = config.supervisors[name].children
        for i, child in enumerate(children):
            last = i == len(children) - 1
            branch, more = ("└── ", "    ") if last else ("├── ", "│   ")
            if child in config.supervisors:
                text = _describe_supervisor(config.supervisors[child])
                lines.append(f"{indent}{branch}{child} ({text})")
                walk(child, indent + more)
            else:
                actor = config.actors[child]
                lines.append(
                    f"{indent}{branch}{child} (actor {actor.kind}, {actor.restart.value}, "
                    f"shutdown {_seconds(actor.shutdown_timeout)}, mailbox {actor.mailbox_size})"
                )

    walk(config.root, "")
    return "\n".join(lines)
