"""Placement groups: resources reserved as bundles, all of them or none, and the scheduling
strategies that put tasks and actors into them (or onto one node).

The names and shapes are Ray's (``ray.util.placement_group``, ``PlacementGroupSchedulingStrategy``,
``NodeAffinitySchedulingStrategy``), so code written for Ray ports by changing the import. On the
``ray`` backend a group is a Ray placement group. The local backend is one node with nothing to
reserve ahead: a group there is the same up-front check (it raises ``ResourceError`` when the
machine can never hold the bundles) and is ready at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ember.errors import ResourceError

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PlacementGroup:
    """A reservation of ``bundle_specs``: every bundle is placed, or none is.

    Put work in it with ``.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg,
    placement_group_bundle_index=i))``. ``ready()`` is an ``ObjectRef`` that resolves once the
    bundles are reserved; ``wait(timeout_seconds)`` says whether they are.
    """

    def __init__(self, group_id: str, bundles: Sequence[Mapping[str, float]], strategy: str,
                 backend_group: Any = None) -> None:
        self.id = group_id
        self._bundles = [dict(b) for b in bundles]
        self.strategy = strategy
        self._backend_group = backend_group  # Ray's PlacementGroup on the ray backend

    @property
    def bundle_specs(self) -> list[dict[str, float]]:
        """The bundles asked for, one dict of resources each (Ray's ``PlacementGroup.bundle_specs``)."""
        return [dict(b) for b in self._bundles]

    @property
    def bundle_count(self) -> int:
        """How many bundles the group has."""
        return len(self._bundles)

    def ready(self) -> Any:
        """An ``ObjectRef`` to this group, ready once every bundle is reserved."""
        from ember.core._api import current_backend

        backend = current_backend()
        if self._backend_group is None:
            return backend.put(self)
        return backend.placement_group_ready(self)  # type: ignore[attr-defined]

    def wait(self, timeout_seconds: float = 30) -> bool:
        """Wait up to ``timeout_seconds`` for the reservation; True once it is made."""
        if self._backend_group is None:
            return True
        return bool(self._backend_group.wait(timeout_seconds=timeout_seconds))

    def __repr__(self) -> str:
        return f"PlacementGroup({self.id}, {self.strategy}, {self._bundles})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


@dataclass(frozen=True)
class PlacementGroupSchedulingStrategy:
    """Run a task or actor in bundle ``placement_group_bundle_index`` of ``placement_group``
    (-1: any bundle with room). Its request must fit within the bundle."""

    placement_group: PlacementGroup
    placement_group_bundle_index: int = -1
    placement_group_capture_child_tasks: bool | None = None


@dataclass(frozen=True)
class NodeAffinitySchedulingStrategy:
    """Run a task or actor on the node ``node_id`` (``ember.nodes()[i]["NodeID"]``). With
    ``soft=True`` it may run elsewhere when that node is gone or can never hold it."""

    node_id: str
    soft: bool


def _check_bundles(bundles: Any, strategy: str) -> list[dict[str, float]]:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} must be one of {', '.join(STRATEGIES)}")
    if not isinstance(bundles, (list, tuple)) or not bundles:
        raise ValueError(f"bundles={bundles!r} must be a non-empty list of dicts such as "
                         "[{'CPU': 1}, {'CPU': 1, 'GPU': 1}]")
    checked = []
    for i, bundle in enumerate(bundles):
        if not isinstance(bundle, Mapping):
            raise ValueError(f"bundle {i} is {bundle!r}: each bundle is a dict of resource -> "
                             "amount")
        for name, amount in bundle.items():
            if not isinstance(name, str) or isinstance(amount, bool) or not isinstance(
                    amount, (int, float)) or amount < 0:
                raise ValueError(f"bundle {i}: {name!r}={amount!r} must be a resource name and "
                                 "an amount >= 0")
        kept = {name: float(amount) for name, amount in bundle.items() if amount > 0}
        if not kept:
            raise ValueError(f"bundle {i} is {dict(bundle)!r}: a bundle must ask for some "
                             "resource (e.g. {'CPU': 1})")
        checked.append(kept)
    return checked


def placement_group(bundles: Sequence[Mapping[str, float]], strategy: str = "PACK",
                    name: str = "", lifetime: str | None = None) -> PlacementGroup:
    """Reserve ``bundles`` (each a dict such as ``{"CPU": 1, "GPU": 1}``) with ``strategy``:
    ``PACK`` (as few nodes as possible), ``SPREAD`` (over distinct nodes where it can),
    ``STRICT_PACK`` (one node) or ``STRICT_SPREAD`` (one node per bundle).

    Raises ``ResourceError`` at once when the cluster's nodes can never hold the bundles (on
    the ray backend unless it was started with ``reject_infeasible=False``). The reservation
    itself is asynchronous: wait for ``ready()`` or ``wait(timeout_seconds)``. ::

        pg = placement_group([{"CPU": 1}] * 2, strategy="SPREAD")
        pg.wait(60)
        actor = Worker.options(num_cpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(
            pg, placement_group_bundle_index=0)).remote()
        remove_placement_group(pg)
    """
    from ember.core._api import current_backend

    checked = _check_bundles(bundles, strategy)
    if lifetime not in (None, "detached"):
        raise ValueError(f"lifetime={lifetime!r} must be None or 'detached'")
    backend = current_backend()
    create = getattr(backend, "create_placement_group", None)
    if create is not None:
        group: PlacementGroup = create(checked, strategy, name, lifetime)
        return group
    # The local backend: one node, whose resources are the cluster's.
    from ember.core.ray_backend._mapping import placement_infeasible_reason

    reason = placement_infeasible_reason(checked, strategy, [backend.cluster_resources()])
    if reason is not None:
        raise ResourceError(f"the placement group can never be placed on this machine: {reason}."
                            " Ask for less, or run on a cluster with more nodes (backend='ray')")
    return PlacementGroup(os.urandom(9).hex(), checked, strategy)


def remove_placement_group(group: PlacementGroup) -> None:
    """Give the group's reservation back; actors still in it are stopped (on Ray)."""
    if not isinstance(group, PlacementGroup):
        raise TypeError(f"remove_placement_group() takes a PlacementGroup, got {group!r}")
    from ember.core import _api

    backend = _api._backend
    if group._backend_group is None or backend is None:  # nothing reserved, or runtime gone
        return
    backend.remove_placement_group(group)  # type: ignore[attr-defined]
