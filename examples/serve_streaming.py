"""Token streaming and model multiplexing with ember.serve, over real HTTP on 127.0.0.1.

Run it from the repository root::

    .venv/bin/python examples/serve_streaming.py

A fake language model (one replica per "GPU", here two CPU replicas) streams its answer word by
word. It prints:

 1. each streamed token with the time it arrived, showing tokens reach the client while the
    model is still generating (about 0.1 s apart, not all at the end);
 2. the same stream through a Python handle (``handle.options(stream=True)``);
 3. which replica (pid) served each of six requests for two multiplexed models, showing that each
    model is loaded once and its requests go to the replica that holds it;
 4. ``serve.status()``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

import ember
from ember import serve


@serve.deployment(num_replicas=2, max_ongoing_requests=8)
class FakeLLM:
    def __init__(self, vocabulary: str) -> None:
        self.words = vocabulary.split()

    async def generate(self, prompt: str, n: int) -> AsyncIterator[str]:
        for i in range(n):
            await asyncio.sleep(0.1)  # the "forward pass"
            yield self.words[(len(prompt) + i) % len(self.words)] + " "

    @serve.multiplexed(max_num_models_per_replica=2)
    async def get_adapter(self, model_id: str) -> str:
        await asyncio.sleep(0.2)  # the "download"
        return f"adapter<{model_id}>"

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import StreamingResponse

        model_id = serve.get_multiplexed_model_id()
        if model_id:
            adapter = await self.get_adapter(model_id)
            return {"adapter": adapter, "replica_pid": os.getpid()}
        prompt = request.query_params.get("prompt", "")
        return StreamingResponse(self.generate(prompt, 8), media_type="text/plain")


async def stream_over_http(base: str) -> None:
    print("1. streaming over HTTP:")
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=30) as client, client.stream(
        "GET", f"{base}/?prompt=hello"
    ) as response:
        async for token in response.aiter_text():
            print(f"   +{time.perf_counter() - started:.2f}s  {token!r}")


async def multiplexed_requests(base: str) -> None:
    print("3. multiplexed models (header serve_multiplexed_model_id):")
    async with httpx.AsyncClient(timeout=30) as client:
        replies = await asyncio.gather(*(
            client.get(base, headers={"serve_multiplexed_model_id": model})
            for model in ["llama-fr", "llama-de"] * 3
        ))
    for reply in replies:
        body = reply.json()
        print(f"   {body['adapter']:<20} served by replica pid {body['replica_pid']}")


def main() -> None:
    ember.init()
    handle = serve.run(FakeLLM.bind("the quick brown fox jumps over a lazy dog"), port=0)
    base = f"http://127.0.0.1:{serve.status().http_port}"
    try:
        asyncio.run(stream_over_http(base))
        print("2. streaming through a handle:")
        tokens = handle.options(stream=True).generate.remote("hi", 5)
        print("   " + "".join(tokens))
        asyncio.run(multiplexed_requests(base))
        print("4. status:")
        for name, app in serve.status().applications.items():
            for dep in app.deployments.values():
                print(f"   app {name!r}: {app.status}, {dep.name} {dep.status} "
                      f"with {dep.replicas} replicas")
    finally:
        serve.shutdown()
        ember.shutdown()


if __name__ == "__main__":
    main()
