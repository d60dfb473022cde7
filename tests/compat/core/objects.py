# compat: topic doc/source/ray-core/objects.rst
"""Objects: put and get, timeouts, references inside containers, references as arguments."""

import numpy as np
import ray

ray.init(num_cpus=2)

# ray.put stores a value in the object store and returns its reference.
weights = np.arange(1_000_000, dtype=np.float64)
weights_ref = ray.put(weights)
assert isinstance(weights_ref, ray.ObjectRef)
copy = ray.get(weights_ref)
assert np.array_equal(copy, weights)

# Many references at once: get keeps their order.
refs = [ray.put(f"item-{i}") for i in range(5)]
assert ray.get(refs) == [f"item-{i}" for i in range(5)]


@ray.remote
def total(array):
    # A top-level reference argument arrives as its value.
    return float(array.sum())


assert ray.get(total.remote(weights_ref)) == float(weights.sum())


@ray.remote
def count_refs(items):
    # References nested in a list stay references: the task decides when to fetch them.
    assert all(isinstance(item, ray.ObjectRef) for item in items)
    return sum(len(value) for value in ray.get(items))


assert ray.get(count_refs.remote(refs)) == 5 * len("item-0")


@ray.remote
def make_refs(n):
    # A task may return references to objects it created.
    return [ray.put(i * 10) for i in range(n)]


inner = ray.get(make_refs.remote(3))
assert ray.get(inner) == [0, 10, 20]


@ray.remote
def never_finishes():
    import time

    time.sleep(600)


slow = never_finishes.remote()
try:
    ray.get(slow, timeout=0.5)
except ray.exceptions.GetTimeoutError:
    print("get timed out as expected")
else:
    raise AssertionError("get returned before its timeout")
ray.cancel(slow, force=True)

# Values come back as copies: changing them does not change the stored object.
stored = ray.put({"a": 1})
value = ray.get(stored)
value["a"] = 2
assert ray.get(stored) == {"a": 1}
print("objects ok")
ray.shutdown()
