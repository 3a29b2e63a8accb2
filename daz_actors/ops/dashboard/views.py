"""What the dashboard shows, as plain JSON-able values: the live tree, the rooms, and an
item's data with secrets redacted as in the logs."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import trio

from daz_actors.cytube.connection import CytubeConnection
from daz_actors.ops.metrics import Sources, connections_in
from daz_actors.runtime.redaction import redact
from daz_actors.runtime.supervisor import ChildInfo

__all__ = ["iso", "live_state", "pretty_json", "rooms_view", "tree_view"]

# keys whose values are secrets wherever they appear in an item's data
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|credential", re.IGNORECASE)


def _hide_secret_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: "***" if isinstance(k, str) and _SECRET_KEY.search(k) else _hide_secret_keys(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_hide_secret_keys(v) for v in value]
    return value


def pretty_json(value: Any) -> str:
    """`value` as indented JSON, secrets redacted: registered secrets and DSN passwords (as in
    the logs, `daz_actors.runtime.redaction`), and the values of password-like keys."""
    return redact(
        json.dumps(_hide_secret_keys(value), indent=2, sort_keys=True, ensure_ascii=False)
    )


def _child(info: ChildInfo, prefix: str, now: float) -> dict[str, Any]:
    path = f"{prefix}{info.name}"
    backoff = None if info.backoff_until is None else max(0.0, info.backoff_until - now)
    return {
        "name": info.name,
        "path": path,
        "state": info.state.value,
        "restart": info.restart.value,
        "restarts": info.restarts,
        "restarts_by_reason": [list(pair) for pair in info.restarts_by_reason],
        "incarnation": info.incarnation,
        "backoff_remaining": backoff,
        "last_error": None if info.last_error is None else redact(info.last_error),
        "mailbox": {
            "depth": info.mailbox_depth,
            "capacity": info.mailbox_capacity,
            "high_water": info.mailbox_depth_max,
            "full": info.mailbox_full,
            "senders_waiting": info.mailbox_senders_waiting,
        },
        "redelivered": info.redelivered,
        "poison_dropped": info.poison_dropped,
        "asks_timed_out": info.asks_timed_out,
        "children": (
            None if info.children is None else [_child(c, f"{path}/", now) for c in info.children]
        ),
    }


def tree_view(children: Iterable[ChildInfo]) -> list[dict[str, Any]]:
    """The tree below the root, each node with its state and counters (paths as in /metrics)."""
    now = trio.current_time()
    return [_child(c, "", now) for c in children]


def _room(conn: CytubeConnection, now: float) -> dict[str, Any]:
    sender = conn.sender
    params = sender.chat_params
    return {
        "channel": conn.params.channel,
        "status": conn.status.value,
        "reason": conn.status_reason,
        "since": conn.status_since,
        "last_event": conn.last_event_at,
        "reconnects": conn.reconnects,
        "received": conn.received,
        "sent": sender.sent,
        "limiter": {
            "can_speak": sender.can_speak,
            "reason": sender.reason,
            "burst": params.burst,
            "sustained": params.sustained,
            "count": sender.mirror.count,
            "wait": max(0.0, sender.mirror.wait(now, params)),
            "refused": sender.refused,
            "waiting": sender.waiting,
        },
    }


def rooms_view(sources: Sources) -> list[dict[str, Any]]:
    """Every room's connection: status and since when, last event, reconnects, rate limiter."""
    conns: Sequence[CytubeConnection]
    if sources.connections is not None:
        conns = sources.connections()
    elif sources.tree is not None:
        conns = connections_in(sources.tree.root)
    else:
        conns = ()
    now = trio.current_time()
    return [_room(c, now) for c in conns]


def live_state(sources: Sources) -> dict[str, Any]:
    """The tree and the rooms at this moment (what the tree page's event stream sends)."""
    tree = sources.tree
    return {
        "at": time.time(),
        "root": None
        if tree is None
        else {
            "name": tree.root.name,
            "running": tree.root.running,
            "stopping": tree.stopping,
        },
        "tree": tree_view(tree.which_children()) if tree is not None else [],
        "rooms": rooms_view(sources),
    }


def iso(value: datetime | None) -> str:
    """A timestamp for the pages, in UTC to the second; ``-`` for none."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
