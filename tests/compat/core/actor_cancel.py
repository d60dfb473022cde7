# compat: topic doc/source/ray-core/actors.rst (cancelling actor tasks)
"""Cancelling actor calls: queued calls, and running async calls, which see CancelledError."""

import asyncio
import time

import ray

ray.init(num_cpus=2)


@ray.remote
class AsyncWorker:
    def __init__(self):
        self.cancelled = 0

    async def long_call(self):
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return "finished"

    async def cancelled_count(self):
        return self.cancelled


worker = AsyncWorker.remote()
ref = worker.long_call.remote()
time.sleep(1)  # let it start
ray.cancel(ref)
try:
    ray.get(ref, timeout=30)
except ray.exceptions.TaskCancelledError:
    print("async call cancelled")
else:
    raise AssertionError("a cancelled call returned a value")
# The actor itself lives on, and the call saw the cancellation.
assert ray.get(worker.cancelled_count.remote()) == 1


@ray.remote
class SyncWorker:
    def busy(self, seconds):
        time.sleep(seconds)
        return seconds


sync_worker = SyncWorker.remote()
first = sync_worker.busy.remote(1)
queued = sync_worker.busy.remote(1)
# A call still waiting in the actor's queue is dropped when cancelled.
ray.cancel(queued)
assert ray.get(first) == 1
try:
    ray.get(queued, timeout=30)
except ray.exceptions.TaskCancelledError:
    print("queued call cancelled")
else:
    raise AssertionError("a cancelled call returned a value")
print("actor cancel ok")
ray.shutdown()
