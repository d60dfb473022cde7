"""The LLM workload of ``serve.py`` (a helper: ``report.py`` skips ``_*.py``).

The same tiny GPT-2 (2 layers, 64 wide, byte vocabulary, random weights from seed 0) behind:

- ember, ``ember.serve.llm.build_openai_app``: continuous batching (``max_num_seqs=16``), and
  the same app unbatched (``max_num_seqs=1``: one sequence at a time);
- Ray Serve, a deployment that runs ``model.generate`` per request in a thread (a streamer
  hands it each token), and one whose ``@serve.batch`` async generator runs ``model.generate``
  on each batch (left-padded), yielding one token per caller per step.

Every variant answers ``POST /v1/completions`` with ``stream: true`` in OpenAI's chunk format, so
one client measures them all: ``LLM_CONCURRENCY`` requests at once, each for ``LLM_TOKENS``
tokens (greedy, end-of-sequence ignored). A framework's two variants are deployed side by side
and take turns: a warm-up burst each, then ``rounds`` measured bursts each. Tokens/s = the
tokens of a burst / the time it took, the best burst (other load on a shared machine only ever
slows a burst down; the median is in the JSON too); time to first token = from sending the
request to the first chunk with text, over all bursts; inter-token latency = the gap between
consecutive chunks with text of one response (as vLLM's benchmark counts it: a chunk that
carries several tokens counts once). Every server uses one torch thread.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import tempfile
import time
from typing import Any

LLM_CONCURRENCY = 16
LLM_TOKENS = 64
LLM_PROMPT = "The quick brown fox "
VARIANTS = {  # result key -> what the table calls it
    "ember_batched": "ember, continuous batching (max_num_seqs=16)",
    "ember_unbatched": "ember, unbatched (max_num_seqs=1)",
    "ray_generate": "Ray Serve, model.generate per request",
    "ray_batch": "Ray Serve, @serve.batch + model.generate",
}


def save_tiny_gpt2(folder: str) -> str:
    """The benchmark's model and byte tokenizer, ``save_pretrained`` into ``folder``."""
    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    from ember.serve.llm import byte_tokenizer

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=256, n_positions=256, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


def _load(path: str) -> tuple[Any, Any]:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    return (AutoModelForCausalLM.from_pretrained(path).eval(),
            AutoTokenizer.from_pretrained(path))


def _sse(text: str | None, finish: str | None = None) -> bytes:
    choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
    return b"data: " + json.dumps({"object": "text_completion", "choices": [choice]}).encode() \
        + b"\n\n"


def ray_deployments(serve: Any, path: str) -> dict[str, Any]:
    """The two Ray Serve variants (plain Ray Serve code: what a user writes without a library
    for LLM serving)."""
    from concurrent.futures import ThreadPoolExecutor

    options = {"ray_actor_options": {"num_cpus": 0}, "max_ongoing_requests": 64}

    class Streamer:
        """``model.generate``'s streamer: hands each step's tokens to the event loop."""

        def __init__(self, loop: Any, put: Any) -> None:
            self.loop, self.put_tokens, self.prompt_seen = loop, put, False

        def put(self, value: Any) -> None:
            if not self.prompt_seen:  # generate passes the prompt first
                self.prompt_seen = True
                return
            self.loop.call_soon_threadsafe(self.put_tokens, value.reshape(-1).tolist())

        def end(self) -> None:
            self.loop.call_soon_threadsafe(self.put_tokens, None)

    @serve.deployment(**options)
    class RayGenerate:
        def __init__(self, path: str) -> None:
            self.model, self.tokenizer = _load(path)
            self.pool = ThreadPoolExecutor(LLM_CONCURRENCY)  # every request generates at once

        async def __call__(self, request: Any) -> Any:
            import torch
            from starlette.responses import StreamingResponse

            body = await request.json()
            ids = torch.tensor([self.tokenizer.encode(body["prompt"])])
            queue: asyncio.Queue[Any] = asyncio.Queue()
            loop = asyncio.get_running_loop()
            streamer = Streamer(loop, queue.put_nowait)

            def generate() -> None:
                with torch.inference_mode():
                    self.model.generate(ids, attention_mask=torch.ones_like(ids),
                                        max_new_tokens=body["max_tokens"],
                                        min_new_tokens=body["max_tokens"], do_sample=False,
                                        pad_token_id=0, streamer=streamer)

            done = loop.run_in_executor(self.pool, generate)

            async def events() -> Any:
                while (tokens := await queue.get()) is not None:
                    yield _sse(self.tokenizer.decode(tokens))
                await done
                yield _sse(None, "length") + b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

    @serve.deployment(**options)
    class RayBatch:
        def __init__(self, path: str) -> None:
            self.model, self.tokenizer = _load(path)

        @serve.batch(max_batch_size=LLM_CONCURRENCY, batch_wait_timeout_s=0.05)
        async def generate(self, prompts: list[str], lengths: list[int]) -> Any:
            import torch

            encoded = [self.tokenizer.encode(p) for p in prompts]
            longest = max(len(e) for e in encoded)
            ids = torch.zeros(len(encoded), longest, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, e in enumerate(encoded):  # left padding
                ids[i, longest - len(e):] = torch.tensor(e)
                mask[i, longest - len(e):] = 1
            queue: asyncio.Queue[Any] = asyncio.Queue()
            loop = asyncio.get_running_loop()
            streamer = Streamer(loop, queue.put_nowait)

            def generate() -> None:
                with torch.inference_mode():
                    self.model.generate(ids, attention_mask=mask, max_new_tokens=max(lengths),
                                        min_new_tokens=max(lengths), do_sample=False,
                                        pad_token_id=0, streamer=streamer)

            done = loop.run_in_executor(None, generate)
            while (tokens := await queue.get()) is not None:
                yield [self.tokenizer.decode([t]) for t in tokens]
            await done

        async def __call__(self, request: Any) -> Any:
            from starlette.responses import StreamingResponse

            body = await request.json()

            async def events() -> Any:
                async for text in self.generate(body["prompt"], body["max_tokens"]):
                    yield _sse(text)
                yield _sse(None, "length") + b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

    return {"ray_generate": RayGenerate.bind(path), "ray_batch": RayBatch.bind(path)}


def ember_apps(path: str) -> dict[str, Any]:
    import functools

    from ember.serve.llm import build_openai_app

    source = functools.partial(_load, path)
    return {"ember_batched": build_openai_app({"tiny": source}, max_num_seqs=LLM_CONCURRENCY),
            "ember_unbatched": build_openai_app({"tiny": source}, max_num_seqs=1)}


def measure(framework: str, serve: Any, port: int, rounds: int, load: Any) -> dict[str, Any]:
    """Deploy both variants of ``framework`` side by side and drive them with ``load`` (the
    load generator in its own process), bursts alternating between them; then delete them."""
    with tempfile.TemporaryDirectory(prefix="ember-bench-llm-") as folder:
        path = save_tiny_gpt2(folder)
        apps = ember_apps(path) if framework == "ember" else ray_deployments(serve, path)
        for key, app in apps.items():
            serve.run(app, name=key, route_prefix=f"/{key}")
        try:
            return dict(load(kind="llm", port=port, rounds=rounds,
                             paths={key: f"/{key}/v1/completions" for key in apps}))
        finally:
            for key in apps:
                serve.delete(key)


# --------------------------------------------------------------------------------------------
# The client (runs in the load generator's process).


async def _one(port: int, path: str, body: bytes) -> dict[str, Any]:
    """POST one streamed completion; the arrival time of each chunk with text."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: "
                     f"application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
        sent = time.perf_counter()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        arrivals: list[float] = []
        usage = None
        pending = b""
        while True:  # chunked transfer encoding; each chunk one or more SSE events
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                break
            data = (await reader.readexactly(size + 2))[:-2]
            now = time.perf_counter() - sent
            pending += data
            *events, pending = pending.split(b"\n\n")
            for event in events:
                payload = event.removeprefix(b"data: ")
                if payload == b"[DONE]":
                    continue
                obj = json.loads(payload)
                usage = obj.get("usage") or usage
                if any(c.get("text") for c in obj.get("choices", [])):
                    arrivals.append(now)
        return {"status": status, "arrivals": arrivals,
                "tokens": usage["completion_tokens"] if usage else len(arrivals)}
    finally:
        writer.close()


async def stream_load(port: int, paths: dict[str, str], rounds: int) -> dict[str, Any]:
    """A warm-up burst per variant, then ``rounds`` bursts of each, taking turns (so that a
    spell of load from elsewhere on the machine does not fall on one variant only)."""
    body = json.dumps({"model": "tiny", "prompt": LLM_PROMPT, "max_tokens": LLM_TOKENS,
                       "temperature": 0, "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    seen: dict[str, dict[str, Any]] = {
        key: {"firsts": [], "gaps": [], "rates": [], "tokens": 0, "errors": 0} for key in paths}
    for i in range(rounds + 1):  # the first burst warms up (loads the model)
        for key, path in paths.items():
            started = time.perf_counter()
            answers = await asyncio.gather(*(_one(port, path, body)
                                             for _ in range(LLM_CONCURRENCY)))
            took = time.perf_counter() - started
            if i == 0:
                continue
            record = seen[key]
            burst_tokens = 0
            for answer in answers:
                if answer["status"] != 200 or answer["tokens"] != LLM_TOKENS \
                        or not answer["arrivals"]:
                    record["errors"] += 1
                    continue
                burst_tokens += answer["tokens"]
                times = answer["arrivals"]
                record["firsts"].append(times[0])
                record["gaps"].extend(b - a for a, b in itertools.pairwise(times))
            record["tokens"] += burst_tokens
            record["rates"].append(burst_tokens / took)
    return {key: {"tokens": r["tokens"], "errors": r["errors"],
                  "tokens_per_s": max(r["rates"]) if r["rates"] else None,
                  "tokens_per_s_median": statistics.median(r["rates"]) if r["rates"] else None,
                  "ttft_p50_ms": _ms(r["firsts"], 0.5), "ttft_p99_ms": _ms(r["firsts"], 0.99),
                  "itl_p50_ms": _ms(r["gaps"], 0.5), "itl_p99_ms": _ms(r["gaps"], 0.99),
                  "requests": len(r["firsts"])}
            for key, r in seen.items()}


def _ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return 1e3 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --------------------------------------------------------------------------------------------
# The parent: rows for the table, and the LLM table of its own.


def best_ray(results: dict[str, Any] | None) -> dict[str, Any] | None:
    """Ray's variant with the most tokens/s."""
    llm = (results or {}).get("llm") or {}
    measured = [llm[k] for k in ("ray_generate", "ray_batch") if llm.get(k)]
    return max(measured, key=lambda r: r["tokens_per_s"]) if measured else None


def derived(results: dict[str, Any] | None) -> dict[str, Any]:
    """ember's batched numbers set against its unbatched ones (ratios for the targets)."""
    llm = (results or {}).get("llm") or {}
    batched, unbatched = llm.get("ember_batched"), llm.get("ember_unbatched")
    if not batched or not unbatched:
        return {}
    return {"batching_speedup": batched["tokens_per_s"] / unbatched["tokens_per_s"],
            "ttft_p99_vs_unbatched": batched["ttft_p99_ms"] / unbatched["ttft_p99_ms"]}


def table(results: dict[str, dict[str, Any] | None]) -> str:
    lines = ["| LLM variant (16 streams x 64 tokens) | tokens/s | TTFT p50 | TTFT p99 | "
             "inter-token p50 | inter-token p99 |", "|---|---|---|---|---|---|"]
    for key, label in VARIANTS.items():
        framework = key.split("_")[0]
        r = ((results.get(framework) or {}).get("llm") or {}).get(key)
        if not r:
            lines.append(f"| {label} | not run | | | | |")
            continue
        cells = [f"{r['tokens_per_s']:,.0f}"] + [
            "—" if r[k] is None else f"{r[k]:.1f} ms"
            for k in ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)



