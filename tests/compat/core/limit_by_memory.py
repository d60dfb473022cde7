# compat: topic doc/source/ray-core/patterns/limit-running-tasks.rst (memory as the limit)
# compat: expect memory limits ok
"""Limit how many memory-hungry tasks run at once by asking for ``memory=`` (bytes): the node's
memory resource is set at init, each task asks for a share of it, and no more tasks run at once
than the shares allow, even with CPUs to spare. Work pinned to a node the cluster does not have
fails with TaskUnschedulableError; pinned softly, it runs where it fits."""

import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

GIB = 1024**3
ray.init(num_cpus=2, _memory=4 * GIB)
assert ray.cluster_resources()["memory"] == 4 * GIB


@ray.remote(num_cpus=0)
class Gauge:
    def __init__(self):
        self.now = 0
        self.peak = 0

    def enter(self):
        self.now += 1
        self.peak = max(self.peak, self.now)

    def leave(self):
        self.now -= 1

    def get_peak(self):
        return self.peak


@ray.remote(num_cpus=0.25, memory=2 * GIB)
def process(part, gauge):
    ray.get(gauge.enter.remote())
    time.sleep(0.2)
    ray.get(gauge.leave.remote())
    return part * 10


gauge = Gauge.remote()
assert ray.get([process.remote(i, gauge) for i in range(6)]) == [i * 10 for i in range(6)]
peak = ray.get(gauge.get_peak.remote())
print("at most", peak, "tasks of 2 GiB at once on 4 GiB")
assert peak <= 2


@ray.remote
def where():
    return ray.get_runtime_context().get_node_id()


here = ray.get(where.remote())
elsewhere = "ab" * 28
assert ray.get(where.options(
    scheduling_strategy=NodeAffinitySchedulingStrategy(elsewhere, soft=True)).remote()) == here
try:
    ray.get(where.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(elsewhere, soft=False)).remote(),
        timeout=60)
except ray.exceptions.TaskUnschedulableError as exc:
    print("pinned to a missing node:", type(exc).__name__)
else:
    raise AssertionError("work pinned to a node that does not exist ran")
print("memory limits ok")
ray.shutdown()
