# compat: topic doc/source/ray-core/tasks/generators.rst (num_returns="dynamic" and num_returns=n)
"""Generator tasks: a fixed number of returns from a generator, and a number decided at run
time with num_returns="dynamic"."""

import numpy as np
import ray

ray.init(num_cpus=2)


@ray.remote(num_returns=3)
def three_chunks(size):
    # A generator with num_returns=3 yields exactly three values, each its own object.
    for i in range(3):
        yield np.full(size, i)


refs = three_chunks.remote(4)
assert [ray.get(ref).tolist() for ref in refs] == [[0] * 4, [1] * 4, [2] * 4]


@ray.remote(num_returns="dynamic")
def split_into_parts(total, part_size):
    # How many parts there are is only known while the task runs.
    for start in range(0, total, part_size):
        yield list(range(start, min(start + part_size, total)))


generator_ref = split_into_parts.remote(10, 3)
generator = ray.get(generator_ref)
assert isinstance(generator, ray.DynamicObjectRefGenerator)
parts = [ray.get(ref) for ref in generator]
assert parts == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]], parts


@ray.remote
def total_length(generator):
    # The generator of refs can be passed to another task.
    return sum(len(ray.get(ref)) for ref in generator)


assert ray.get(total_length.remote(generator_ref)) == 10


@ray.remote(num_returns="dynamic")
def maybe_fail(n):
    for i in range(n):
        if i == 2:
            raise RuntimeError("part 2 is broken")
        yield i


try:
    ray.get(maybe_fail.remote(4))
except RuntimeError as error:
    print("error surfaced:", "part 2 is broken" in str(error))
print("dynamic generators ok")
ray.shutdown()
