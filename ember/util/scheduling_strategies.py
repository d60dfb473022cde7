"""Where a task or actor runs, as Ray's ``ray.util.scheduling_strategies`` says it: pass one as
``.options(scheduling_strategy=...)``.

- ``PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)``: in bundle ``i`` of a
  placement group (-1: any bundle with room);
- ``NodeAffinitySchedulingStrategy(node_id, soft=False)``: on that node (``ember.nodes()`` lists
  them); with ``soft=True`` elsewhere when the node is gone or can never hold it.

The strings ``"DEFAULT"`` and ``"SPREAD"`` are accepted as well, as on Ray.
"""

from ember.core._placement import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

__all__ = ["NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy"]
