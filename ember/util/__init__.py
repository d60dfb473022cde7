"""Utilities beside the core API that libraries and users share: placement groups, gangs of
actors, and the worker group that ``ember.train`` and ``ember.rl`` both run on.

The names follow Ray's ``ray.util``: ``placement_group``, ``remove_placement_group``,
``PlacementGroup``, and ``ember.util.scheduling_strategies`` for
``PlacementGroupSchedulingStrategy`` and ``NodeAffinitySchedulingStrategy``. ::

    from ember.util import placement_group
    from ember.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="SPREAD")
    pg.wait(60)
    actor = Worker.options(num_cpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(
        pg, placement_group_bundle_index=0)).remote()
"""

from ember.core._placement import PlacementGroup, placement_group, remove_placement_group
from ember.util._gang import Gang, create_gang
from ember.util._worker_group import WorkerGroup, WorkerInfo

__all__ = [
    "Gang",
    "PlacementGroup",
    "WorkerGroup",
    "WorkerInfo",
    "create_gang",
    "placement_group",
    "remove_placement_group",
]
