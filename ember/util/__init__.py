"""Helpers beside the core API, under Ray's ``ray.util`` names; each loads on first use.

- ``ActorPool``: spread calls over a fixed set of actors (``map``, ``map_unordered``,
  ``submit``/``get_next``).
- ``queue.Queue`` (with ``queue.Empty`` and ``queue.Full``): a FIFO queue held by an actor,
  which tasks and actors share by passing it along.
- ``get_node_ip_address()``: the address of the node this code runs on (``127.0.0.1`` with the
  local backend); ``{f"node:{ip}": 0.01}`` in ``resources=`` pins work to that node.
- ``placement_group``, ``remove_placement_group``, ``PlacementGroup`` and
  ``ember.util.scheduling_strategies`` (``PlacementGroupSchedulingStrategy``,
  ``NodeAffinitySchedulingStrategy``): place bundles of resources together or not at all;
  ``get_current_placement_group()``, ``get_placement_group(name)`` and
  ``placement_group_table()`` find them again (also as ``ember.util.placement_group``'s, Ray's
  module name).
- ``create_gang``/``Gang`` and ``WorkerGroup``/``WorkerInfo``: N actors placed together, the
  worker group that ``ember.train`` and ``ember.rl`` both run on.
- ``list_named_actors()``: the names of the live named actors (``all_namespaces=True``: with
  their namespaces).
- ``inspect_serializability(obj)``: whether ``obj`` pickles, and a tree of what in it does not.
- ``state``: what is running (``list_actors``, ``list_tasks``, ``summarize_tasks``, ...).
- ``metrics``: your own Prometheus metrics (``Counter``, ``Gauge``, ``Histogram``).
- ``multiprocessing.Pool``: the standard library's ``multiprocessing.Pool`` over actors.

::

    from ember.util import placement_group
    from ember.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="SPREAD")
    pg.wait(60)
    actor = Worker.options(num_cpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(
        pg, placement_group_bundle_index=0)).remote()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ember.core._placement import (
        PlacementGroup,
        get_current_placement_group,
        get_placement_group,
        placement_group,
        placement_group_table,
        remove_placement_group,
    )
    from ember.util import metrics, multiprocessing, queue, scheduling_strategies, state
    from ember.util._actor_pool import ActorPool
    from ember.util._gang import Gang, create_gang
    from ember.util._named import list_named_actors
    from ember.util._node import get_node_ip_address
    from ember.util._serializability import inspect_serializability
    from ember.util._worker_group import WorkerGroup, WorkerInfo

__all__ = [
    "ActorPool",
    "Gang",
    "PlacementGroup",
    "WorkerGroup",
    "WorkerInfo",
    "create_gang",
    "get_current_placement_group",
    "get_node_ip_address",
    "get_placement_group",
    "inspect_serializability",
    "list_named_actors",
    "metrics",
    "multiprocessing",
    "placement_group",
    "placement_group_table",
    "queue",
    "remove_placement_group",
    "scheduling_strategies",
    "state",
]

_SUBMODULES = ("metrics", "multiprocessing", "queue", "scheduling_strategies", "state")
_WHERE = {
    "ActorPool": "ember.util._actor_pool",
    "Gang": "ember.util._gang",
    "PlacementGroup": "ember.core._placement",
    "WorkerGroup": "ember.util._worker_group",
    "WorkerInfo": "ember.util._worker_group",
    "create_gang": "ember.util._gang",
    "get_current_placement_group": "ember.core._placement",
    "get_placement_group": "ember.core._placement",
    "get_node_ip_address": "ember.util._node",
    "inspect_serializability": "ember.util._serializability",
    "list_named_actors": "ember.util._named",
    "placement_group": "ember.core._placement",
    "placement_group_table": "ember.core._placement",
    "remove_placement_group": "ember.core._placement",
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
