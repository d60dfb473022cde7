# compat: topic doc/source/serve/advanced-guides/dyn-req-batch.md
"""Dynamic request batching: @serve.batch gathers concurrent calls into one list, the method
returns one result per item, and each caller gets its own."""

import asyncio

import ray
from ray import serve

ray.init(num_cpus=2)


@serve.deployment(max_ongoing_requests=32)
class BatchedSquare:
    def __init__(self):
        self.batch_sizes = []

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.5)
    async def square(self, xs: list[int]) -> list[int]:
        self.batch_sizes.append(len(xs))
        return [x * x for x in xs]

    async def __call__(self, x: int) -> int:
        return await self.square(x)

    def sizes(self):
        return self.batch_sizes


handle = serve.run(BatchedSquare.bind())


async def main():
    responses = [handle.remote(i) for i in range(16)]
    return await asyncio.gather(*responses)


assert asyncio.run(main()) == [i * i for i in range(16)]
sizes = handle.sizes.remote().result()
assert sum(sizes) == 16, sizes
assert max(sizes) > 1, f"no call was batched with another: {sizes}"
assert max(sizes) <= 8, sizes

# A lone call still completes once the wait timeout passes.
assert handle.remote(7).result() == 49

serve.shutdown()
ray.shutdown()
print("batching ok")
