"""The ``health-monitor`` kind's parameters, apart from the monitor so that reading a
config imports none of it."""

from __future__ import annotations

import attrs

from daz_actors.runtime.validators import positive
from daz_actors.storage.gateway_params import GATEWAY_NAME

__all__ = ["HealthParams"]


@attrs.frozen(kw_only=True)
class HealthParams:
    """Parameters of the ``health-monitor`` kind."""

    interval: float = attrs.field(default=5.0, validator=positive)  # seconds between checks
    grace_period: float = attrs.field(default=60.0, validator=positive)  # DOWN this long: act
    media_stuck_after: float = attrs.field(default=300.0, validator=positive)  # seconds
    db_latency_degraded: float = attrs.field(default=0.5, validator=positive)  # seconds
    max_restarts_per_check: int = attrs.field(default=3, validator=positive)
    max_reconnects_per_check: int = attrs.field(default=1, validator=positive)
    gateway: str = GATEWAY_NAME  # the SQL gateway's registered name
