"""Token streaming with ember.serve: a small language model, built on the spot, answers over HTTP
as plain text and as server-sent events (``text/event-stream``), and through a Python handle.

Run it from the repository root::

    .venv/bin/python examples/serve_streaming.py

The model is a word-level bigram model trained in each replica's constructor on a short text
below (no download, no GPU); sampling is seeded, so runs print the same words. Each token takes
about 30 ms to "compute", so you can watch tokens arrive while the model is still generating.
It prints:

 1. tokens streamed as plain text, each with the time it arrived (about 30 ms apart, not all
    at the end);
 2. the same generation as server-sent events: one ``data:`` event per token, then a final
    ``event: done`` with the token count and the time the server spent;
 3. the stream through a Python handle (``handle.options(stream=True)``);
 4. a client that hangs up after three tokens, and the replica reporting that it stopped
    generating for it (the generator is closed, not run to the end);
 5. ``serve.status()``.

For many fine-tuned models behind one pool of replicas, see ``examples/serve_multiplexed.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

import ember
from ember import serve

CORPUS = """
the model reads the prompt and writes the next word . the next word follows the last word .
a small model can still write a long answer if it writes one word at a time .
the server sends each word to the client as soon as the model writes it .
the client reads each word as it arrives and shows it at once .
a slow model makes the client wait , but a streaming server lets the client read while it waits .
the replica keeps the model in memory and answers many clients at the same time .
"""

TOKEN_S = 0.03  # the "forward pass" per token


class BigramLM:
    """Next word ~ how often it followed the current word in the corpus."""

    def __init__(self, text: str) -> None:
        words = text.split()
        self.follows: dict[str, Counter[str]] = defaultdict(Counter)
        for current, following in itertools.pairwise(words):
            self.follows[current][following] += 1
        self.vocabulary = sorted(set(words))

    def tokens(self, prompt: str, max_tokens: int, seed: int) -> Iterator[str]:
        rng = random.Random(seed)
        word = (prompt.split() or ["the"])[-1]
        for _ in range(max_tokens):
            options = self.follows.get(word) or Counter(self.vocabulary)
            word = rng.choices(list(options), weights=list(options.values()))[0]
            yield word


@serve.deployment(max_ongoing_requests=16)
class TextGenerator:
    def __init__(self, corpus: str) -> None:
        self.model = BigramLM(corpus)  # "training": counting bigrams, a millisecond
        self.hung_up = 0

    async def generate(self, prompt: str, max_tokens: int, seed: int = 0) -> AsyncIterator[str]:
        finished = False
        try:
            for token in self.model.tokens(prompt, max_tokens, seed):
                await asyncio.sleep(TOKEN_S)
                yield token
            finished = True
        finally:  # closed early: the client went away, nothing more is computed for it
            if not finished:
                self.hung_up += 1

    def hang_ups(self) -> int:
        return self.hung_up

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import StreamingResponse

        prompt = request.query_params.get("prompt", "")
        max_tokens = int(request.query_params.get("max_tokens", "12"))
        if request.url.path.endswith("/sse"):
            return StreamingResponse(self.events(prompt, max_tokens),
                                     media_type="text/event-stream",
                                     headers={"cache-control": "no-cache"})
        return StreamingResponse(self.plain(prompt, max_tokens), media_type="text/plain")

    async def plain(self, prompt: str, max_tokens: int) -> AsyncIterator[str]:
        async for token in self.generate(prompt, max_tokens):
            yield token + " "

    async def events(self, prompt: str, max_tokens: int) -> AsyncIterator[str]:
        """Server-sent events: ``data: <token>`` per token, then ``event: done``."""
        started, count = time.perf_counter(), 0
        async for token in self.generate(prompt, max_tokens):
            count += 1
            yield f"data: {json.dumps({'token': token})}\n\n"
        summary = {"tokens": count, "seconds": round(time.perf_counter() - started, 3)}
        yield f"event: done\ndata: {json.dumps(summary)}\n\n"


async def plain_text(base: str) -> None:
    print("1. plain text stream (GET /generate?prompt=the+client):")
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=30) as client, client.stream(
        "GET", f"{base}/generate", params={"prompt": "the client", "max_tokens": 8}
    ) as response:
        print(f"   content-type: {response.headers['content-type']}")
        async for token in response.aiter_text():
            print(f"   +{time.perf_counter() - started:.3f}s  {token!r}")


async def server_sent_events(base: str) -> None:
    print("2. server-sent events (GET /generate/sse):")
    started = time.perf_counter()
    event = "message"
    async with httpx.AsyncClient(timeout=30) as client, client.stream(
        "GET", f"{base}/generate/sse", params={"prompt": "a small model", "max_tokens": 8}
    ) as response:
        print(f"   content-type: {response.headers['content-type']}")
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line.split(":", 1)[1])
                print(f"   +{time.perf_counter() - started:.3f}s  {event}: {data}")
                event = "message"


async def hang_up(base: str) -> None:
    print("4. a client that hangs up after three tokens of a 200-token answer:")
    async with httpx.AsyncClient(timeout=30) as client, client.stream(
        "GET", f"{base}/generate", params={"max_tokens": 200}
    ) as response:
        received = []
        async for token in response.aiter_text():
            received.append(token)
            if len(received) == 3:
                break
    print(f"   received {''.join(received)!r} and left")


def main() -> None:
    ember.init()
    handle = serve.run(TextGenerator.bind(CORPUS), route_prefix="/generate", port=0)
    base = f"http://127.0.0.1:{serve.status().http_port}"
    try:
        asyncio.run(plain_text(base))
        asyncio.run(server_sent_events(base))
        print("3. through a handle (handle.options(stream=True).generate.remote(...)):")
        tokens = handle.options(stream=True).generate.remote("the server", 8)
        print("   " + " ".join(tokens))
        asyncio.run(hang_up(base))
        for _ in range(50):  # the replica notices the hang-up at its next token
            if handle.hang_ups.remote().result():
                break
            time.sleep(0.05)
        print(f"   generations the replica stopped early: {handle.hang_ups.remote().result()}")
        print("5. status:")
        for name, app in serve.status().applications.items():
            for dep in app.deployments.values():
                print(f"   app {name!r}: {app.status}, {dep.name} {dep.status} "
                      f"with {dep.replicas} replicas")
    finally:
        serve.shutdown()
        ember.shutdown()


if __name__ == "__main__":
    main()
