# compat: topic doc/source/ray-core/actors/actor-utils.rst (actor synchronization)
"""Synchronising tasks through an actor: a signal actor with an asyncio.Event lets many
tasks wait until the driver says go."""

import asyncio
import time

import ray

ray.init(num_cpus=2)


@ray.remote(num_cpus=0)
class Signal:
    def __init__(self):
        self.event = asyncio.Event()

    def send(self, clear=False):
        self.event.set()
        if clear:
            self.event.clear()

    async def wait(self, should_wait=True):
        if should_wait:
            await self.event.wait()


@ray.remote(num_cpus=0)
def waiter(signal, index):
    ray.get(signal.wait.remote())
    return index, time.time()


signal = Signal.remote()
tasks = [waiter.remote(signal, i) for i in range(4)]
ready, not_ready = ray.wait(tasks, num_returns=len(tasks), timeout=1)
assert ready == [], "a task went on before the signal"

sent_at = time.time()
signal.send.remote()
results = ray.get(tasks)
assert sorted(i for i, _ in results) == [0, 1, 2, 3]
assert all(t >= sent_at - 0.5 for _, t in results)
print("all tasks released by the signal")
ray.shutdown()
