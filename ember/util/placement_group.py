"""Placement groups under Ray's module name, ``ray.util.placement_group``::

    from ember.util.placement_group import (PlacementGroup, get_current_placement_group,
        get_placement_group, placement_group, placement_group_table, remove_placement_group)

As in Ray, ``ember.util.placement_group`` is also the function that makes a group: this module
can be called as it, so ``ember.util.placement_group([{"CPU": 1}])`` works whether or not the
module was imported by name first.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from ember.core._placement import (
    PlacementGroup,
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)

__all__ = [
    "PlacementGroup",
    "get_current_placement_group",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]


class _CallableModule(types.ModuleType):
    """Importing ``ember.util.placement_group`` by name makes the attribute of ``ember.util``
    this module: calling it still makes a group."""

    def __call__(self, *args: Any, **kwargs: Any) -> PlacementGroup:
        return placement_group(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
