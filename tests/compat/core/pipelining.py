# compat: topic doc/source/ray-core/patterns/pipelining.rst
"""Pipelining: a worker asks for its next work item before processing the current one, so
it never waits on the queue between items."""

import time

import ray

ray.init(num_cpus=2)


@ray.remote(num_cpus=0)
class WorkQueue:
    def __init__(self, items):
        self.items = list(items)

    def next_item(self):
        time.sleep(0.05)  # the queue takes a while to answer
        return self.items.pop(0) if self.items else None


def process(item):
    time.sleep(0.05)
    return item * 2


class Worker:
    def __init__(self, queue):
        self.queue = queue

    def ready(self):
        return True


@ray.remote
class NaiveWorker(Worker):
    def run(self):
        results = []
        while (item := ray.get(self.queue.next_item.remote())) is not None:
            results.append(process(item))
        return results


@ray.remote
class PipelinedWorker(Worker):
    def run(self):
        results = []
        upcoming = self.queue.next_item.remote()
        while True:
            item = ray.get(upcoming)
            if item is None:
                return results
            upcoming = self.queue.next_item.remote()  # fetch the next while processing
            results.append(process(item))


timings = {}
for name, worker_class in {"naive": NaiveWorker, "pipelined": PipelinedWorker}.items():
    worker = worker_class.remote(WorkQueue.remote(range(20)))
    ray.get(worker.ready.remote())
    start = time.monotonic()
    results = ray.get(worker.run.remote())
    timings[name] = time.monotonic() - start
    assert results == [2 * i for i in range(20)]
print({name: round(t, 2) for name, t in timings.items()})
assert timings["pipelined"] < timings["naive"] * 0.85, timings
ray.shutdown()
