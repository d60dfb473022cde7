"""Placement groups: resources reserved as bundles, all of them or none, and the scheduling
strategies that put tasks and actors into them (or onto one node).

The names and shapes are Ray's (``ray.util.placement_group``, ``PlacementGroupSchedulingStrategy``,
``NodeAffinitySchedulingStrategy``), so code written for Ray ports by changing the import. On the
``ray`` backend a group is a Ray placement group. The local backend is one node with nothing to
reserve ahead: a group there is the same up-front check (it raises ``ResourceError`` when the
machine can never hold the bundles) and is ready at once; its work runs with the resources it
asks for itself. Either way the group is known by name (``get_placement_group``), listed with
its state (``placement_group_table``), and the work placed in it sees it
(``get_current_placement_group()``; with ``placement_group_capture_child_tasks=True`` the tasks
and actors it starts are in it too).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ember.core._context import ContextID
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
        self.id = ContextID(group_id)  # a str that answers .hex(), as Ray's PlacementGroupID
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

    @property
    def is_empty(self) -> bool:
        """True for a group with no bundles (Ray's stand-in for "no group")."""
        return not self._bundles

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
    if not isinstance(name, str):
        raise ValueError(f"name={name!r} must be a str ('' for no name)")
    group: PlacementGroup = current_backend().create_placement_group(  # type: ignore[attr-defined]
        checked, strategy, name, lifetime)
    return group


def new_local_group(bundles: list[dict[str, float]], strategy: str,
                    totals: Mapping[str, float]) -> PlacementGroup:
    """A group on the local backend's one node, whose resources (``totals``) are the
    cluster's; ``ResourceError`` when it can never hold the bundles."""
    from ember.core.ray_backend._mapping import placement_infeasible_reason

    reason = placement_infeasible_reason(bundles, strategy, [dict(totals)])
    if reason is not None:
        raise ResourceError(f"the placement group can never be placed on this machine: {reason}."
                            " Ask for less, or run on a cluster with more nodes (backend='ray')")
    return PlacementGroup(os.urandom(9).hex(), bundles, strategy)


def remove_placement_group(group: PlacementGroup) -> None:
    """Give the group's reservation back; actors still in it are stopped (on Ray)."""
    if not isinstance(group, PlacementGroup):
        raise TypeError(f"remove_placement_group() takes a PlacementGroup, got {group!r}")
    from ember.core import _api

    backend = _api._backend
    if backend is None:  # the runtime is gone, and its groups with it
        return
    backend.remove_placement_group(group)  # type: ignore[attr-defined]


def get_current_placement_group() -> PlacementGroup | None:
    """The placement group the calling task or actor runs in; ``None`` in the driver, in work
    placed outside any group, and when no runtime is running.

    Work runs in a group when it was started with ``PlacementGroupSchedulingStrategy(pg)``, or
    was started by work in a group whose strategy set ``placement_group_capture_child_tasks=True``
    (and named no strategy of its own). ::

        @ember.remote
        def where():
            return get_current_placement_group()

        pg = placement_group([{"CPU": 1}])
        assert ember.get(where.options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote()) == pg
    """
    from ember.core import _api

    backend = _api._backend
    if backend is None:
        return None
    current = getattr(backend, "current_placement_group", None)
    return None if current is None else current()


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The live placement group created with ``name=placement_group_name``; ``ValueError``
    when there is none (it was never made, or was removed)."""
    if not isinstance(placement_group_name, str) or not placement_group_name:
        raise ValueError("get_placement_group() needs the group's name, the non-empty name= it "
                         "was created with")
    from ember.core._api import current_backend

    group: PlacementGroup | None = current_backend().get_placement_group(  # type: ignore[attr-defined]
        placement_group_name)
    if group is None:
        raise ValueError(f"there is no placement group named {placement_group_name!r} (never "
                         "created with that name=, or removed)")
    return group


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict[str, Any]:
    """The state of ``placement_group`` as a dict (``placement_group_id``, ``name``,
    ``bundles`` by index, ``bundles_to_node_id``, ``strategy``, ``state``: ``CREATED``,
    ``PENDING`` or ``REMOVED``, ``stats``), or, with no argument, such a dict for every group
    by id, as Ray's ``placement_group_table``."""
    if placement_group is not None and not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"placement_group_table() takes a PlacementGroup or None, got "
                        f"{placement_group!r}")
    from ember.core._api import current_backend

    table: dict[str, Any] = current_backend().placement_group_table(  # type: ignore[attr-defined]
        placement_group)
    return table


# -- what a task's options say about its group (local backend) ---------------------------------
NOT_SET = "not set"  # no strategy named: a parent's group that captures its children applies


def group_of(options: Mapping[str, Any]) -> tuple[PlacementGroup, bool] | str | None:
    """``(group, capture_child_tasks)`` for work placed in a group by its options; ``None``
    for work placed elsewhere on purpose; ``NOT_SET`` when the options name no placement."""
    strategy = options.get("scheduling_strategy")
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        if strategy.placement_group is None:
            return None
        return strategy.placement_group, bool(strategy.placement_group_capture_child_tasks)
    legacy = options.get("placement_group")
    if isinstance(legacy, PlacementGroup):
        return legacy, bool(options.get("placement_group_capture_child_tasks"))
    if strategy is None and legacy in (None, "default"):
        return NOT_SET
    return None


class GroupRegistry:
    """The local backend's placement groups by id, for ``get_placement_group(name)`` and
    ``placement_group_table()``: pure bookkeeping."""

    def __init__(self, node_id: str) -> None:
        self._node_id = node_id
        self._entries: dict[str, tuple[PlacementGroup, str, bool]] = {}  # id -> (group, name, live)

    def add(self, group: PlacementGroup, name: str) -> None:
        self._entries[group.id] = (group, name or "", True)

    def remove(self, group_id: str) -> None:
        entry = self._entries.get(group_id)
        if entry is not None:
            self._entries[group_id] = (entry[0], entry[1], False)

    def named(self, name: str) -> PlacementGroup | None:
        """The newest live group of that name."""
        for group, group_name, live in reversed(self._entries.values()):
            if live and group_name == name:
                return group
        return None

    def table(self, group_id: str | None = None) -> dict[str, Any]:
        if group_id is not None:
            entry = self._entries.get(group_id)
            return {} if entry is None else self._row(*entry)
        return {gid: self._row(*entry) for gid, entry in self._entries.items()}

    def _row(self, group: PlacementGroup, name: str, live: bool) -> dict[str, Any]:
        return {
            "placement_group_id": group.id, "name": name,
            "bundles": dict(enumerate(group.bundle_specs)),
            "bundles_to_node_id": dict.fromkeys(range(group.bundle_count),
                                                self._node_id if live else ""),
            "strategy": group.strategy, "state": "CREATED" if live else "REMOVED",
            "stats": {"scheduling_state": "FINISHED" if live else "REMOVED"},
        }
