"""Utilities beside the core API, as ``ray.util`` is: ``ember.util.state`` (what is running),
``ember.util.metrics`` (your own Prometheus metrics). Submodules load on first use."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["metrics", "state"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        module = importlib.import_module(f"ember.util.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'ember.util' has no attribute {name!r}")
