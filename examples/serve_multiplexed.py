"""Model multiplexing with ember.serve: many fine-tuned models behind one pool of replicas.

Run it from the repository root::

    .venv/bin/python examples/serve_multiplexed.py

Eight customers each have their own fine-tuned spam filter (a small word-weight model; loading
one takes 0.3 s, standing in for a download). Two replicas hold at most four models each, least
recently used out first. Requests name their model with the ``serve_multiplexed_model_id``
header (or ``handle.options(multiplexed_model_id=...)``); the router sends each to a replica that
has the model, or is loading it, so a model is loaded once however many requests want it at the
same moment, and a new model goes to the replica holding the fewest. It prints:

 1. a burst of 12 concurrent requests for one model: how many loads that took (one);
 2. 200 requests over HTTP with a skewed (Zipf) mix of the eight customers, 8 at a time:
    which replica served each customer (each is loaded once, and its requests go where it
    is), the models each replica holds, and the request rate;
 3. two new customers arriving when every slot is taken: each replica evicts its least
    recently used model (its ``close()`` runs) to load the newcomer;
 4. a call through a Python handle with ``multiplexed_model_id``.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import defaultdict
from typing import Any

import httpx

import ember
from ember import serve

CUSTOMERS = [f"customer-{i}" for i in range(8)]
SPAMMY = ["free", "winner", "prize", "urgent", "offer", "click", "cash", "now"]
LOAD_S = 0.3
CONCURRENCY = 8


class SpamFilter:
    """A customer's fine-tuned filter: a weight per word, a threshold, and a close()."""

    def __init__(self, customer: str) -> None:
        rng = random.Random(customer)
        self.customer = customer
        self.weights = {word: rng.uniform(0.5, 2.0) for word in SPAMMY}
        self.threshold = rng.uniform(1.0, 3.0)
        self.closed = False

    def score(self, text: str) -> float:
        return sum(self.weights.get(word, 0.0) for word in text.lower().split())

    def close(self) -> None:  # called by the replica when this model is evicted
        self.closed = True


@serve.deployment(num_replicas=2, max_ongoing_requests=16)
class SpamService:
    def __init__(self) -> None:
        self.loads = 0
        self.evictions = 0
        self.held: list[str] = []

    @serve.multiplexed(max_num_models_per_replica=4)
    async def get_model(self, customer: str) -> SpamFilter:
        await asyncio.sleep(LOAD_S)  # the "download" of the fine-tuned weights
        self.loads += 1
        model = SpamFilter(customer)
        original_close = model.close

        def close() -> None:
            self.evictions += 1
            self.held.remove(customer)
            original_close()

        model.close = close  # type: ignore[method-assign]
        self.held.append(customer)
        return model

    async def classify(self, text: str) -> dict[str, Any]:
        model = await self.get_model(serve.get_multiplexed_model_id())
        score = model.score(text)
        return {"customer": model.customer, "spam": score > model.threshold,
                "score": round(score, 2), "replica": os.getpid()}

    async def __call__(self, request: Any) -> dict[str, Any]:
        return await self.classify((await request.body()).decode())

    def stats(self) -> dict[str, Any]:
        return {"replica": os.getpid(), "loads": self.loads, "evictions": self.evictions,
                "holds": sorted(self.held)}


def replica_stats(handle: Any) -> dict[int, dict[str, Any]]:
    """Each replica's counters (calls land on random replicas: ask until both answered)."""
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(100):
        stats = handle.stats.remote().result()
        seen[stats["replica"]] = stats
        if len(seen) == 2:
            break
    return seen


async def burst(base: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        replies = await asyncio.gather(*(
            client.post(base, content=b"free cash now",
                        headers={"serve_multiplexed_model_id": "customer-0"})
            for _ in range(12)
        ))
    print(f"   replies: {len(replies)}, all spam: {all(r.json()['spam'] for r in replies)}")


async def zipf_mix(base: str, n: int = 200) -> dict[str, set[int]]:
    rng = random.Random(0)
    weights = [1 / (k + 1) ** 1.1 for k in range(len(CUSTOMERS))]
    todo = rng.choices(CUSTOMERS, weights, k=n)
    served: dict[str, set[int]] = defaultdict(set)

    async def user(client: httpx.AsyncClient) -> None:
        while todo:
            customer = todo.pop()
            reply = await client.post(base, content=b"hello, your order ships today",
                                      headers={"serve_multiplexed_model_id": customer})
            served[customer].add(reply.json()["replica"])

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(user(client) for _ in range(CONCURRENCY)))
    return served


def main() -> None:
    ember.init()
    handle = serve.run(SpamService.bind(), port=0)
    base = f"http://127.0.0.1:{serve.status().http_port}/"
    try:
        print("1. 12 concurrent requests for customer-0, which no replica holds yet:")
        asyncio.run(burst(base))
        loads = sum(s["loads"] for s in replica_stats(handle).values())
        print(f"   model loads: {loads}")

        print(f"2. 200 requests, a Zipf mix of 8 customers, {CONCURRENCY} at a time:")
        started = time.perf_counter()
        served = asyncio.run(zipf_mix(base))
        elapsed = time.perf_counter() - started
        pids = sorted({pid for replicas in served.values() for pid in replicas})
        names = {pid: f"replica {i + 1}" for i, pid in enumerate(pids)}
        for customer in CUSTOMERS:
            where = ", ".join(names[pid] for pid in sorted(served.get(customer, ())))
            print(f"   {customer}: served by {where or '(not requested)'}")
        for pid, stats in sorted(replica_stats(handle).items()):
            print(f"   {names.get(pid, pid)}: holds {stats['holds']}, loaded {stats['loads']} "
                  f"models, closed {stats['evictions']} evicted ones")
        print(f"   {200 / elapsed:.0f} requests/s (each first use of a model waits "
              f"{LOAD_S} s for its load)")

        print("3. two new customers, customer-8 and customer-9, when all 8 slots are full:")
        for newcomer in ("customer-8", "customer-9"):
            reply = handle.options(multiplexed_model_id=newcomer).classify.remote(
                "free prize").result()
            print(f"   {newcomer} served by {names.get(reply['replica'], reply['replica'])}")
        for pid, stats in sorted(replica_stats(handle).items()):
            print(f"   {names.get(pid, pid)}: holds {stats['holds']}, closed "
                  f"{stats['evictions']} evicted models")

        print("4. through a handle, handle.options(multiplexed_model_id='customer-3'):")
        reply = handle.options(multiplexed_model_id="customer-3").classify.remote(
            "URGENT winner click now").result()
        print(f"   {reply}")
    finally:
        serve.shutdown()
        ember.shutdown()


if __name__ == "__main__":
    main()
