# compat: topic doc/source/ray-core/ray-generator.rst
"""Streaming generators: a generator task's items arrive one by one while it still runs,
from tasks and actors, with errors, ray.wait, and async iteration."""

import asyncio
import time

import ray

ray.init(num_cpus=2)


@ray.remote
def produce(n, delay):
    for i in range(n):
        time.sleep(delay)
        yield i * i


# Iterating the generator gives an ObjectRef per item, as soon as it exists.
gen = produce.remote(5, 0.1)
assert isinstance(gen, ray.ObjectRefGenerator)
assert [ray.get(ref) for ref in gen] == [0, 1, 4, 9, 16]

# The first item arrives long before the task ends.
start = time.monotonic()
gen = produce.remote(3, 1)
first = ray.get(next(gen))
first_at = time.monotonic() - start
rest = [ray.get(ref) for ref in gen]
total = time.monotonic() - start
assert (first, rest) == (0, [1, 4])
assert first_at < total - 1.5, (first_at, total)


@ray.remote
def fails_at(n):
    for i in range(n):
        if i == 2:
            raise ValueError("bad item")
        yield i


# Items yielded before an error are delivered; the error comes with the next one.
got = []
for ref in fails_at.remote(5):
    try:
        got.append(ray.get(ref))
    except ValueError as error:
        assert "bad item" in str(error)
        print("error raised at item", len(got))
        break
assert got == [0, 1]


@ray.remote
class Tokenizer:
    def tokens(self, text):
        for word in text.split():
            yield word.upper()


tokenizer = Tokenizer.remote()
assert [ray.get(r) for r in tokenizer.tokens.remote("a streaming actor")] == [
    "A", "STREAMING", "ACTOR"]

# ray.wait takes generators: one is ready when its next item is.
slow, fast = produce.remote(2, 2), produce.remote(2, 0.01)
ready, not_ready = ray.wait([slow, fast], num_returns=1, timeout=10)
assert ready == [fast] and not_ready == [slow]
assert ray.get(next(fast)) == 0


async def consume_async():
    items = []
    async for ref in produce.remote(4, 0.05):
        items.append(await ref)
    return items


assert asyncio.run(consume_async()) == [0, 1, 4, 9]

# num_returns="streaming" asks for the same thing explicitly.
explicit = produce.options(num_returns="streaming").remote(2, 0)
assert [ray.get(r) for r in explicit] == [0, 1]
print("streaming generators ok")
ray.shutdown()
