# compat: topic doc/source/ray-core/actors.rst
"""Actors: state kept between calls, calls run in order, handles passed to tasks, kill."""

import time

import ray

ray.init(num_cpus=2)


@ray.remote
class Counter:
    def __init__(self, start=0):
        self.value = start

    def increment(self, by=1):
        self.value += by
        return self.value

    def get(self):
        return self.value


counter = Counter.remote(start=10)
# Calls from one caller run one after the other, in the order they were made.
results = ray.get([counter.increment.remote() for _ in range(5)])
assert results == [11, 12, 13, 14, 15], results


@ray.remote
def bump(counter_handle, times):
    for _ in range(times):
        ray.get(counter_handle.increment.remote())
    return "done"


# The handle can be passed to tasks, which then call the same actor.
assert ray.get([bump.remote(counter, 3) for _ in range(4)]) == ["done"] * 4
assert ray.get(counter.get.remote()) == 15 + 12

# Each actor is its own process with its own state.
other = Counter.remote()
assert ray.get(other.increment.remote(by=5)) == 5
assert ray.get(counter.get.remote()) == 27

# Resources for an actor: it holds them while it lives.
Heavy = Counter.options(num_cpus=1)
heavy = Heavy.remote()
assert ray.get(heavy.increment.remote()) == 1

# ray.kill ends an actor; it does not wait for it to exit, and calls raise RayActorError
# once it is gone.
ray.kill(other)
deadline = time.monotonic() + 30
while True:
    try:
        ray.get(other.get.remote())
    except ray.exceptions.RayActorError:
        print("actor is gone")
        break
    assert time.monotonic() < deadline, "a killed actor kept answering"
    time.sleep(0.1)

# An actor method that raises gives the exception to the caller; the actor keeps running.


@ray.remote
class Strict:
    def check(self, x):
        if x < 0:
            raise ValueError(f"negative: {x}")
        return x


strict = Strict.remote()
try:
    ray.get(strict.check.remote(-1))
except ValueError as error:
    assert "negative: -1" in str(error)
assert ray.get(strict.check.remote(3)) == 3
print("actors ok")
ray.shutdown()
