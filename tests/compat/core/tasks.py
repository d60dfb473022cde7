# compat: topic doc/source/ray-core/tasks.rst
"""Remote functions: submit, pass results on, ask for resources, several returns, cancel."""

import time

import ray

ray.init(num_cpus=2)


@ray.remote
def square(x):
    return x * x


@ray.remote
def add(a, b):
    return a + b


# Calls return at once with a reference; ray.get waits for the values.
refs = [square.remote(i) for i in range(8)]
assert ray.get(refs) == [i * i for i in range(8)]

# A reference passed as an argument is replaced by its value before the task runs.
total = add.remote(square.remote(3), square.remote(4))
assert ray.get(total) == 25


@ray.remote(num_cpus=2)
def uses_both_cores():
    return ray.get_runtime_context().get_assigned_resources()["CPU"]


assert ray.get(uses_both_cores.remote()) == 2
# options() overrides what the decorator asked for, for one call.
assert ray.get(uses_both_cores.options(num_cpus=1).remote()) == 1


@ray.remote(num_returns=3)
def stats(values):
    return min(values), max(values), sum(values) / len(values)


low_ref, high_ref, mean_ref = stats.remote([4, 8, 15, 16, 23, 42])
assert ray.get([low_ref, high_ref, mean_ref]) == [4, 42, 18.0]


@ray.remote
def sleepy(seconds):
    time.sleep(seconds)
    return seconds


# Two one-second tasks on two CPUs finish together, not one after the other.
start = time.monotonic()
ray.get([sleepy.remote(1), sleepy.remote(1)])
elapsed = time.monotonic() - start
assert elapsed < 1.9, elapsed

# A task that is no longer wanted can be cancelled; get then raises TaskCancelledError.
forever = sleepy.remote(600)
ray.cancel(forever)
try:
    ray.get(forever, timeout=30)
except ray.exceptions.TaskCancelledError:
    print("cancelled as asked")
else:
    raise AssertionError("the cancelled task returned a value")

# force=True ends a task that is already running by ending its worker process.
running = sleepy.remote(600)
time.sleep(1)
ray.cancel(running, force=True)
try:
    ray.get(running, timeout=30)
except ray.exceptions.TaskCancelledError:
    print("running task cancelled")
else:
    raise AssertionError("the cancelled task returned a value")

# ray.wait splits references into the finished ones and the others.
quick, slow = sleepy.remote(0), sleepy.remote(3)
ready, not_ready = ray.wait([quick, slow], num_returns=1, timeout=2.5)
assert ready == [quick] and not_ready == [slow]
ray.cancel(slow)
print("tasks ok")
ray.shutdown()
