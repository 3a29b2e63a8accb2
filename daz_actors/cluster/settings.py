"""The ``[cluster]`` settings: several processes (nodes) sharing one PostgreSQL."""

from __future__ import annotations

from typing import Any

import attrs

from daz_actors.cluster.placement import PlacementRules
from daz_actors.runtime.validators import at_most, positive

__all__ = ["ClusterSettings"]


def _name(_inst: object, _attr: attrs.Attribute[Any], value: str) -> None:
    if value and (not value.isprintable() or any(c.isspace() for c in value) or len(value) > 100):
        raise ValueError(
            f"name must be up to 100 printable characters without spaces, got {value!r}"
        )


def _weights(_inst: object, attr: attrs.Attribute[Any], value: dict[str, float]) -> None:
    for channel, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
            raise ValueError(f"{attr.name}.{channel} must be a number > 0, got {weight!r}")


@attrs.frozen(kw_only=True)
class ClusterSettings:
    """How this process takes part in a cluster (off by default: one process, all channels).

    Timing: a node renews its leases every `renew_interval` seconds for `ttl` seconds; it
    stops acting in a channel `leave_margin` seconds before the lease it last renewed could
    expire, counted from when that renewal was *sent*, so it has left before any other node
    can claim the channel, whatever its own clock says about the database's.
    """

    enabled: bool = False
    name: str = attrs.field(default="", validator=_name)  # default: the host name
    ttl: float = attrs.field(default=15.0, validator=[positive, at_most(3600)])  # seconds
    renew_interval: float = attrs.field(default=0.0)  # seconds; 0: ttl / 3
    leave_margin: float = attrs.field(default=0.0)  # seconds; 0: ttl / 3
    weight: float = attrs.field(default=1.0, validator=positive)  # this node's capacity
    settle: float = attrs.field(default=30.0, validator=at_most(86400))
    # seconds a new node runs before channels are moved to it from live nodes (damping)
    pins: dict[str, str] = attrs.field(factory=dict)  # channel -> node name
    channel_weights: dict[str, float] = attrs.field(factory=dict, validator=_weights)

    def __attrs_post_init__(self) -> None:
        if self.renew_interval < 0 or self.leave_margin < 0:
            raise ValueError("renew_interval and leave_margin must be >= 0 (0: ttl / 3)")
        if self.settle < 0:
            raise ValueError(f"settle must be >= 0, got {self.settle!r}")
        if self.renew_every + self.margin >= self.ttl:
            raise ValueError(
                f"renew_interval ({self.renew_every:g} s) + leave_margin ({self.margin:g} s) "
                f"must be below ttl ({self.ttl:g} s): a node would leave its channels "
                "between two renewals"
            )

    @property
    def renew_every(self) -> float:
        """Seconds between renewals."""
        return self.renew_interval or self.ttl / 3

    @property
    def margin(self) -> float:
        """Seconds before a lease's earliest possible expiry at which the node stops acting."""
        return self.leave_margin or self.ttl / 3

    def rules(self) -> PlacementRules:
        """The placement rules these settings give."""
        return PlacementRules(
            pins=dict(self.pins), channel_weights=dict(self.channel_weights), settle=self.settle
        )
