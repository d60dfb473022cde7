"""The embedded local backend: one driver process and worker processes on this machine."""

from ember.core.local._driver import LocalBackend

__all__ = ["LocalBackend"]
