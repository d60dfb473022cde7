"""Helpers beside the core API, under Ray's ``ray.util`` names; each loads on first use.

- ``ActorPool``: spread calls over a fixed set of actors (``map``, ``map_unordered``,
  ``submit``/``get_next``).
- ``queue.Queue`` (with ``queue.Empty`` and ``queue.Full``): a FIFO queue held by an actor,
  which tasks and actors share by passing it along.
- ``get_node_ip_address()``: the address of the node this code runs on (``127.0.0.1`` with the
  local backend); ``{f"node:{ip}": 0.01}`` in ``resources=`` pins work to that node.
- ``state``: what is running (``list_actors``, ``list_tasks``, ``summarize_tasks``, ...).
- ``metrics``: your own Prometheus metrics (``Counter``, ``Gauge``, ``Histogram``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ember.util import metrics, queue, state
    from ember.util._actor_pool import ActorPool
    from ember.util._node import get_node_ip_address

__all__ = ["ActorPool", "get_node_ip_address", "metrics", "queue", "state"]

_SUBMODULES = ("metrics", "queue", "state")
_WHERE = {
    "ActorPool": "ember.util._actor_pool",
    "get_node_ip_address": "ember.util._node",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value: Any = importlib.import_module(f"ember.util.{name}")
    elif name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
    else:
        raise AttributeError(f"module 'ember.util' has no attribute {name!r}")
    globals()[name] = value
    return value
