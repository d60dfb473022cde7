# compat: topic doc/source/ray-core/actors/actor-utils.rst (message passing using Ray Queue)
"""ray.util.queue.Queue between a producer and consumers, with its blocking and
non-blocking calls."""

import ray
from ray.util.queue import Empty, Full, Queue

ray.init(num_cpus=2)

queue = Queue(maxsize=100)


@ray.remote
def consume(consumer_id, queue):
    seen = []
    while True:
        item = queue.get(block=True)
        if item is None:
            return consumer_id, seen
        seen.append(item)


consumers = [consume.remote(i, queue) for i in range(2)]
for item in range(20):
    queue.put(item)
for _ in consumers:
    queue.put(None)  # one stop signal per consumer
results = ray.get(consumers)
everything = sorted(x for _, seen in results for x in seen)
assert everything == list(range(20)), everything
print("consumed", {cid: len(seen) for cid, seen in results})

# A small queue: put_nowait on a full one raises Full, get_nowait on an empty one Empty.
small = Queue(maxsize=2)
small.put_nowait("a")
small.put_nowait("b")
assert small.full() and small.qsize() == 2
try:
    small.put_nowait("c")
except Full:
    print("full")
assert small.get_nowait() == "a"
assert small.get(timeout=1) == "b"
assert small.empty()
try:
    small.get(timeout=0.2)
except Empty:
    print("empty")

# Batches at once.
small.put_nowait_batch([1, 2])
assert small.get_nowait_batch(2) == [1, 2]
print("queue ok")
ray.shutdown()
