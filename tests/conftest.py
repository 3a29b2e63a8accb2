"""Settings shared by every test: hypothesis profiles, and the PostgreSQL fixtures."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None)
settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("thorough", deadline=None, max_examples=1000)
settings.load_profile(
    "ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "default")
)

# Real PostgreSQL for the tests that ask for it (``pg``, ``pg_empty``, ...): see database.py.
from database import own_server, pg, pg_empty, pg_server, pg_template  # noqa: E402, F401
