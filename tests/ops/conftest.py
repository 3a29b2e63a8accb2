"""Fixtures of the ops tests: the headless browser of the dashboard's browser tests."""

from browser import browser  # noqa: F401
