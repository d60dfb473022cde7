# compat: topic doc/source/ray-core/patterns/ray-get-submission-order.rst
"""Process results as they finish with ray.wait, instead of in submission order."""

import random
import time

import ray

ray.init(num_cpus=2)


@ray.remote
def work(index, seconds):
    time.sleep(seconds)
    return index


durations = [0.9, 0.1, 0.5, 0.2, 0.05, 0.4]
pending = [work.remote(i, d) for i, d in enumerate(durations)]
finished_order = []
while pending:
    ready, pending = ray.wait(pending, num_returns=1)
    finished_order.append(ray.get(ready[0]))
print("finished in order", finished_order)
assert sorted(finished_order) == list(range(len(durations)))
# The longest task (index 0) cannot be among the first ones to come back.
assert finished_order.index(0) >= 2, finished_order

# Wait for several at once, with a timeout.
refs = [work.remote(i, 0.05 if i < 3 else 5) for i in range(5)]
ready, not_ready = ray.wait(refs, num_returns=5, timeout=2)
assert len(ready) == 3 and len(not_ready) == 2
assert sorted(ray.get(ready)) == [0, 1, 2]
for ref in not_ready:
    ray.cancel(ref)

# fetch_local=False only waits for the object to exist, wherever it is.
refs = [work.remote(i, random.random() / 10) for i in range(4)]
ready, _ = ray.wait(refs, num_returns=4, fetch_local=False)
assert set(ray.get(ready)) == {0, 1, 2, 3}
print("wait ok")
ray.shutdown()
