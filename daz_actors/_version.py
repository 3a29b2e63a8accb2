"""The package version: one place, read by the package, `!about` and the build."""

__version__ = "0.1.0"
