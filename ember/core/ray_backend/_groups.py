"""The ray backend's placement groups: Ray's own, behind ember's ``PlacementGroup`` (its
``_backend_group``). A mixin of ``RayBackend``, whose ``_check_open``, ``_closed`` and nodes it
uses."""

# Methods declare `self: RayBackend` so that mypy checks them against the whole class; mypy
# reports such self types on a mixin under "misc", which is therefore off for this module only
# (as in ember/core/local/_worker_client.py).
# mypy: disable-error-code="misc"

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ember.core._refs import ObjectRef
from ember.core.ray_backend._mapping import client_limit, placement_infeasible_reason
from ember.errors import ResourceError

if TYPE_CHECKING:
    from ember.core.ray_backend._backend import RayBackend


class PlacementGroupsMixin:
    def create_placement_group(self: RayBackend, bundles: list[dict[str, float]], strategy: str,
                               name: str, lifetime: str | None) -> Any:
        """A Ray placement group of ``bundles``; ``ResourceError`` at once when no set of alive
        nodes can ever hold it (unless ``reject_infeasible=False``)."""
        self._check_open()
        from ray.util.placement_group import placement_group

        from ember.core._placement import PlacementGroup

        if self._reject_infeasible:
            nodes = self._nodes = self._alive_nodes()
            reason = placement_infeasible_reason(bundles, strategy, nodes)
            if reason is not None:
                raise ResourceError(
                    f"a placement group of {len(bundles)} x {_bundle_text(bundles)} can never be "
                    f"placed: {reason}. Ask for fewer or smaller bundles, use strategy='PACK', "
                    "or add nodes"
                )
        try:
            group = placement_group([dict(b) for b in bundles], strategy=strategy, name=name,
                                    lifetime=lifetime)
        except RuntimeError as exc:
            raise client_limit(exc) from exc
        return PlacementGroup(group.id.hex(), bundles, strategy, group)

    def placement_group_ready(self: RayBackend, group: Any) -> ObjectRef:
        self._check_open()
        return ObjectRef(group._backend_group.ready(), self, add_ref=False)

    def remove_placement_group(self: RayBackend, group: Any) -> None:
        from ray.util.placement_group import remove_placement_group

        if not self._closed and group._backend_group is not None:
            remove_placement_group(group._backend_group)

    def current_placement_group(self: RayBackend) -> Any:
        from ray.util.placement_group import get_current_placement_group

        return _ember_group(get_current_placement_group())

    def get_placement_group(self: RayBackend, name: str) -> Any:
        from ray.util.placement_group import get_placement_group

        self._check_open()
        try:
            group = get_placement_group(name)
        except ValueError:
            return None
        return _ember_group(group)

    def placement_group_table(self: RayBackend, group: Any) -> dict[str, Any]:
        from ray.util.placement_group import placement_group_table

        self._check_open()
        if group is not None and group._backend_group is None:
            raise ValueError(f"{group!r} was made by the local backend, not on this Ray cluster")
        table: dict[str, Any] = placement_group_table(
            None if group is None else group._backend_group)
        return table


def _ember_group(group: Any) -> Any:
    """An ember ``PlacementGroup`` for Ray's ``group`` (None stays None)."""
    if group is None:
        return None
    from ray.util.placement_group import placement_group_table

    from ember.core._placement import PlacementGroup

    row = placement_group_table(group)
    bundles = [dict(row["bundles"][i]) for i in sorted(row.get("bundles", {}))]
    return PlacementGroup(group.id.hex(), bundles, row.get("strategy", "PACK"), group)


def _bundle_text(bundles: list[dict[str, float]]) -> str:
    first = bundles[0]
    if all(b == first for b in bundles):
        return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(first.items())) + "}"
    return "bundles " + repr(bundles)
