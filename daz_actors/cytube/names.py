"""The registered names of a room's actors: written here once, read everywhere else."""

from __future__ import annotations

__all__ = ["CONNECTION", "ROUTER", "connection_name", "room_name", "router_name"]

CONNECTION = "connection"  # the connection's child name in its room
ROUTER = "event-router"  # the event router's child name in its room


def room_name(channel: str) -> str:
    """The room supervisor of `channel` (also its health component's name)."""
    return f"room:{channel}"


def connection_name(channel: str) -> str:
    """The connection actor of `channel`'s room, as registered."""
    return f"{room_name(channel)}/{CONNECTION}"


def router_name(channel: str) -> str:
    """The event router of `channel`'s room, as registered."""
    return f"{room_name(channel)}/{ROUTER}"
