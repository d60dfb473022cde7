# compat: topic doc/source/ray-core/patterns/nested-tasks.rst
"""A tree of tasks: quicksort that sorts large partitions in nested remote tasks and small
ones locally."""

import random

import ray

ray.init(num_cpus=2)

LOCAL_BELOW = 5_000


def partition(values):
    pivot = values[len(values) // 2]
    return ([v for v in values if v < pivot], [v for v in values if v == pivot],
            [v for v in values if v > pivot])


def sort_locally(values):
    if len(values) <= 1:
        return values
    lesser, equal, greater = partition(values)
    return sort_locally(lesser) + equal + sort_locally(greater)


@ray.remote
def sort_remotely(values):
    if len(values) < LOCAL_BELOW:
        return sort_locally(values), 1
    lesser, equal, greater = partition(values)
    # Both halves are sorted by child tasks, in parallel; a parent waiting on its
    # children gives its CPU back meanwhile, so the tree cannot starve itself.
    (low, low_tasks), (high, high_tasks) = ray.get(
        [sort_remotely.remote(lesser), sort_remotely.remote(greater)])
    return low + equal + high, 1 + low_tasks + high_tasks


random.seed(7)
values = [random.randrange(1_000_000) for _ in range(60_000)]
result, tasks = ray.get(sort_remotely.remote(values))
assert result == sorted(values)
print(f"sorted {len(values)} numbers with {tasks} tasks")
assert tasks > 3, tasks
ray.shutdown()
