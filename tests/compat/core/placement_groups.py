# compat: topic doc/source/ray-core/scheduling/placement-group.rst
# compat: expect placement groups ok
"""Reserve bundles with a placement group, wait for it, put an actor and tasks in its bundles,
read its state from ``placement_group_table``, find it again by name, see it from inside with
``get_current_placement_group`` (children join it only when captured), then remove it."""

import time

import ray
from ray.util.placement_group import (
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

ray.init(num_cpus=2, include_dashboard=False)

pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK", name="workers")
ray.get(pg.ready(), timeout=30)
assert pg.wait(timeout_seconds=10)
assert pg.bundle_specs == [{"CPU": 1.0}, {"CPU": 1.0}] and pg.bundle_count == 2
ready, _ = ray.wait([pg.ready()], timeout=10)
assert ready

table = placement_group_table(pg)
assert table["name"] == "workers" and table["strategy"] == "PACK"
assert table["state"] == "CREATED" and sorted(table["bundles"]) == [0, 1]
assert pg.id.hex() in placement_group_table()
assert get_placement_group("workers") == pg


@ray.remote(num_cpus=1)
class Worker:
    def group_id(self):
        return ray.get_runtime_context().get_placement_group_id()


@ray.remote(num_cpus=1)
def current():
    return get_current_placement_group()


@ray.remote(num_cpus=0)
def spawner():
    return ray.get(current.options(num_cpus=0).remote())


worker = Worker.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
    placement_group=pg, placement_group_bundle_index=0)).remote()
assert ray.get(worker.group_id.remote()) == pg.id.hex()
in_bundle_1 = PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=1)
assert ray.get(current.options(scheduling_strategy=in_bundle_1).remote()) == pg
assert get_current_placement_group() is None  # the driver is in no group
assert ray.get(current.options(num_cpus=0).remote()) is None

capturing = PlacementGroupSchedulingStrategy(placement_group=pg,
                                             placement_group_capture_child_tasks=True)
assert ray.get(spawner.options(scheduling_strategy=capturing).remote()) == pg
not_capturing = PlacementGroupSchedulingStrategy(placement_group=pg)
assert ray.get(spawner.options(scheduling_strategy=not_capturing).remote()) is None
ray.kill(worker)

remove_placement_group(pg)
deadline = time.monotonic() + 30
while placement_group_table(pg)["state"] != "REMOVED":
    assert time.monotonic() < deadline, placement_group_table(pg)
    time.sleep(0.1)
try:
    get_placement_group("workers")
    raise AssertionError("a removed group is still found by name")
except ValueError:
    pass
print("placement groups ok")
ray.shutdown()
