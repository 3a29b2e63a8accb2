"""The operators' web dashboard: the queue (counts, items, an item's attempts), actions on
dead letters and finished items, and the live supervision tree and rooms.

Served by `daz_actors.ops.http.serve_http` beside ``/healthz``, ``/readyz`` and
``/metrics``; see docs/dashboard.md.
"""

from daz_actors.ops.dashboard.routes import dashboard_routes as dashboard_routes
from daz_actors.ops.dashboard.settings import Dashboard as Dashboard
from daz_actors.ops.dashboard.settings import DashboardRefused as DashboardRefused
from daz_actors.ops.dashboard.settings import DashboardSettings as DashboardSettings
from daz_actors.ops.dashboard.settings import Database as Database
from daz_actors.ops.dashboard.settings import check_exposure as check_exposure

__all__ = [
    "Dashboard",
    "DashboardRefused",
    "DashboardSettings",
    "Database",
    "check_exposure",
    "dashboard_routes",
]
