"""The ``sql-gateway`` kind's parameters and registered name, apart from the gateway
itself so that reading a config imports no database driver."""

from __future__ import annotations

import attrs

from daz_actors.runtime.backoff import BackoffPolicy, Jitter
from daz_actors.runtime.breaker import BreakerPolicy
from daz_actors.storage.error_classes import ErrorRules

__all__ = ["GATEWAY_NAME", "SqlGatewayParams"]

GATEWAY_NAME = "sql-gateway"  # its registered name unless a config says otherwise


@attrs.frozen(kw_only=True)
class SqlGatewayParams(ErrorRules):
    """Parameters of the ``sql-gateway`` kind."""

    pool_min_size: int = 1  # connections kept open
    pool_max_size: int = 10  # connections at most
    call_timeout: float = 15.0  # seconds, when a request gives none
    connect_timeout: float = 10.0  # seconds for one connection attempt
    max_concurrent_calls: int = 64  # requests served at once; more wait in the mailbox
    reconnect_initial: float = 0.5  # seconds before the second connection attempt
    reconnect_max: float = 30.0  # cap of the reconnect backoff
    breaker_window: int = 20  # outcomes the breaker remembers
    breaker_min_calls: int = 5  # outcomes before it may open
    breaker_failure_ratio: float = 0.5  # failure ratio that opens it
    breaker_open_seconds: float = 5.0  # how long it stays open before a probe

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.pool_min_size <= self.pool_max_size or self.pool_max_size < 1:
            raise ValueError(
                f"pool sizes must satisfy 0 <= pool_min_size <= pool_max_size, pool_max_size "
                f">= 1; got {self.pool_min_size} and {self.pool_max_size}"
            )
        for name in ("call_timeout", "connect_timeout", "reconnect_initial", "reconnect_max"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_concurrent_calls < 1:
            raise ValueError(f"max_concurrent_calls must be >= 1, got {self.max_concurrent_calls}")
        self.breaker_policy()
        self.classifier()
        self.reconnect_backoff()

    def breaker_policy(self) -> BreakerPolicy:
        return BreakerPolicy(
            window=self.breaker_window,
            min_calls=self.breaker_min_calls,
            failure_ratio=self.breaker_failure_ratio,
            open_seconds=self.breaker_open_seconds,
        )

    def reconnect_backoff(self) -> BackoffPolicy:
        return BackoffPolicy(
            initial=self.reconnect_initial,
            multiplier=2.0,
            max_delay=max(self.reconnect_max, self.reconnect_initial),
            jitter=Jitter.PROPORTIONAL,
        )
