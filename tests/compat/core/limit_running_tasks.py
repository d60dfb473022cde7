# compat: topic doc/source/ray-core/patterns/limit-running-tasks.rst
"""Limit how many tasks of a kind run at once with resources: a custom resource the
machine has two of, each task asking for one."""

import itertools
import time

import ray

ray.init(num_cpus=2, resources={"disk_bandwidth": 2})


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


@ray.remote(num_cpus=0, resources={"disk_bandwidth": 1})
def copy_file(index, gauge):
    ray.get(gauge.enter.remote())
    time.sleep(0.1)
    ray.get(gauge.leave.remote())
    return index


assert ray.cluster_resources()["disk_bandwidth"] == 2
gauge = Gauge.remote()
done = ray.get([copy_file.remote(i, gauge) for i in range(10)])
assert done == list(range(10))
peak = ray.get(gauge.get_peak.remote())
print("at most", peak, "copies at once")
assert peak <= 2

# num_cpus works the same way: tasks asking for 2 of the 2 CPUs run one at a time.
@ray.remote(num_cpus=2)
def exclusive():
    start = time.monotonic()
    time.sleep(0.2)
    return start, time.monotonic()


spans = sorted(ray.get([exclusive.remote() for _ in range(3)]))
assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans)), spans
print("limits ok")
ray.shutdown()
