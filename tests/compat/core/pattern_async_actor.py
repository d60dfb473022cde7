# compat: topic doc/source/ray-core/patterns/concurrent-operations-async-actor.rst
"""An async actor stays responsive while it waits on work: a job runner answers status
queries while its long call awaits results from a store actor it reaches as a global."""

import asyncio
import time

import ray

ray.init(num_cpus=2)


@ray.remote(num_cpus=0)
class ResultStore:
    def __init__(self):
        self.results = {}

    def put(self, key, value):
        self.results[key] = value

    async def wait_for(self, key):
        while key not in self.results:
            await asyncio.sleep(0.05)
        return self.results[key]


store = ResultStore.remote()


@ray.remote(num_cpus=0)
class JobRunner:
    def __init__(self):
        self.finished = 0

    async def run(self, keys):
        # `store` is the module-level handle: the class refers to it as a global.
        for key in keys:
            await store.wait_for.remote(key)
            self.finished += 1
        return self.finished

    async def progress(self):
        return self.finished


runner = JobRunner.remote()
job = runner.run.remote(["a", "b", "c"])

# While run() awaits, the runner still answers progress() at once.
assert ray.get(runner.progress.remote(), timeout=10) == 0
store.put.remote("a", 1)
store.put.remote("b", 2)
deadline = time.monotonic() + 20
while ray.get(runner.progress.remote(), timeout=10) < 2:
    assert time.monotonic() < deadline
    time.sleep(0.05)
ready, _ = ray.wait([job], timeout=0.5)
assert not ready, "the job finished before its last result arrived"
store.put.remote("c", 3)
assert ray.get(job, timeout=20) == 3
print("async actor pattern ok")
ray.shutdown()
