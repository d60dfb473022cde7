# compat: topic doc/source/ray-core/actors/async_api.rst
"""Async actors: async def methods run concurrently on the actor's event loop; refs are
awaitable; max_concurrency bounds how many run at once."""

import asyncio
import time

import ray

ray.init(num_cpus=2)


@ray.remote
class AsyncServer:
    def __init__(self):
        self.running = 0
        self.peak = 0

    async def handle(self, seconds):
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(seconds)
        self.running -= 1
        return seconds

    async def peak_concurrency(self):
        return self.peak


server = AsyncServer.remote()
ray.get(server.peak_concurrency.remote())  # wait until it is up
start = time.monotonic()
ray.get([server.handle.remote(1) for _ in range(10)])
elapsed = time.monotonic() - start
# Ten one-second calls overlap on the event loop.
assert elapsed < 5, elapsed
assert ray.get(server.peak_concurrency.remote()) == 10

limited = AsyncServer.options(max_concurrency=2).remote()
ray.get([limited.handle.remote(0.2) for _ in range(6)])
assert ray.get(limited.peak_concurrency.remote()) == 2


@ray.remote
def slow_square(x):
    time.sleep(0.1)
    return x * x


@ray.remote
class Gatherer:
    async def gather(self, n):
        # Object refs are awaitable inside async code, so the loop is never blocked.
        return sum(await asyncio.gather(*[slow_square.remote(i) for i in range(n)]))


gatherer = Gatherer.remote()
assert ray.get(gatherer.gather.remote(5)) == 0 + 1 + 4 + 9 + 16


async def driver_side():
    # The driver can await refs too, in its own asyncio code.
    value = await slow_square.remote(7)
    done, _ = await asyncio.wait([asyncio.ensure_future(slow_square.remote(2))])
    return value, [task.result() for task in done]


assert asyncio.run(driver_side()) == (49, [4])
print("async actors ok")
ray.shutdown()
