"""What the dashboard needs to run: its database, its mode, its access token; and the rule
that keeps it on loopback unless a token guards it."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import attrs

from daz_actors.runtime.errors import DazActorsError

__all__ = [
    "Dashboard",
    "DashboardRefused",
    "DashboardSettings",
    "Database",
    "check_exposure",
    "is_loopback",
]

T = TypeVar("T")


class DashboardRefused(DazActorsError, ValueError):
    """The dashboard would be reachable beyond loopback without an access token."""


class Database(Protocol):
    """Runs ``await fn(conn)`` on the database (`SqlClient.run` is one)."""

    async def run(self, fn: Callable[[Any], Awaitable[T]], *, name: str = ...) -> T: ...


def _token(value: str | None) -> str | None:
    if value is not None and len(value) < 16:
        raise DashboardRefused("the dashboard's access token must be at least 16 characters")
    return value


@attrs.frozen(kw_only=True)
class DashboardSettings:
    """How the dashboard is served."""

    read_only: bool = False  # hide and refuse every action (requeue, replay, purge)
    # required off loopback; sent as ``Authorization: Bearer ...`` or entered at /login
    token: str | None = attrs.field(default=None, converter=_token, repr=False)
    token_env: str = "DAZ_DASHBOARD_TOKEN"  # where the token came from (named in errors)
    refresh_seconds: float = 1.0  # how often the live pages are sent fresh state


@attrs.frozen(kw_only=True)
class Dashboard:
    """A dashboard to serve beside the health endpoints."""

    database: Database | None  # None: the queue pages say there is no database
    settings: DashboardSettings = DashboardSettings()
    query_timeout: float = 10.0  # seconds a page's queries may take


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def check_exposure(host: str, settings: DashboardSettings) -> None:
    """Raise `DashboardRefused` when `host` is not loopback and no token is configured."""
    if settings.token is None and not is_loopback(host):
        raise DashboardRefused(
            f"refusing to serve the dashboard on {host}: not a loopback address and no access"
            f" token (set ${settings.token_env}, or serve on 127.0.0.1, or disable the dashboard)"
        )
