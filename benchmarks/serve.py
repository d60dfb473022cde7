"""Serve benchmark: ember.serve beside Ray Serve, on the same workloads, over HTTP on 127.0.0.1.

Run it from the repository root (``make bench`` does this)::

    .venv/bin/python benchmarks/serve.py            # full run, a few minutes with Ray installed
    .venv/bin/python benchmarks/serve.py --quick    # smoke run, shorter phases
    .venv/bin/python benchmarks/serve.py --json benchmarks/serve.json   # also write the rows

Workloads, each deployed alone as its own application, then deleted:

- trivial: one replica whose ``__call__`` returns ``"ok"``; closed-loop load from 1 and then 16
  keep-alive connections for a fixed time (requests/s, p50 and p99 latency);
- streaming: one replica answering a ``StreamingResponse`` of 100 small chunks from an async
  generator that does no work between chunks; requests one at a time (time from sending the
  request to the first chunk, and to the last);
- multiplexing: 4 replicas, ``@serve.multiplexed(max_num_models_per_replica=3)`` on a loader that
  takes 20 ms (a sleep: the "download"), 20 model ids drawn from a Zipf(1.1) mix (the same seeded
  sequence for both frameworks), 16 connections (requests/s, model loads, p99);
- LLM: a tiny GPT-2 streaming 16 completions of 64 tokens at once, ember's continuous batching
  (and unbatched) beside Ray Serve running ``model.generate`` per request and with
  ``@serve.batch`` (tokens/s, time to first token, inter-token latency; see ``_llm.py``).
  ``--llm-only`` runs just this workload.

Every framework runs in its own child process, one after the other, so that they never compete
for the machine's cores; the load comes from a third process, a small asyncio HTTP/1.1 client on
uvloop when installed (one keep-alive connection per concurrent user), never from the process
that owns the runtime. Ray gets ``ray.init(num_cpus=2, include_dashboard=False)``, ember
``ember.init(num_cpus=2)``; both deployments are the same code (``build_deployments``).

The limit column (issue 20) is the same work with no framework: the same trivial handler and the
same streaming generator in a plain Starlette app served by uvicorn (uvloop, httptools) in one
process, under the same load, best of ``limit_rounds`` rounds (``bare_server``, ``measure_limit``).
The closed-loop phases use ``wrk`` (one thread) when it is installed, for every column alike
(``apt-get install wrk``), else the asyncio client; ``--client`` chooses.

Targets (issue 7): ember >= 10x Ray Serve's requests/s at concurrency 16 with a lower p99, a first
streamed chunk in under 5 ms, fewer model loads than Ray Serve on the multiplexing mix; (issue
20) at concurrency 16, ember >= 0.5x the bare app's requests/s with a p99 at most 2x its p99;
(issue 17) ember's continuous batching >= 4x its own unbatched tokens/s and >= 2x Ray Serve's best
variant, with a time to first token p99 under 2x the unbatched one. On a shared machine the numbers move with the load: the notes give the load average before and
after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import _llm
import _procs

RESULT_MARKER = "BENCH-RESULT "
CHILD_TIMEOUT_S = 600
FRAMEWORKS = ("ember", "ray")
STREAM_CHUNKS = 100
MUX_MODELS = 20
MUX_REPLICAS = 4
MUX_SLOTS = 3
MUX_LOAD_S = 0.02
ZIPF_S = 1.1


@dataclass(frozen=True)
class Settings:
    trivial_s: float = 5.0  # each load phase
    warmup_s: float = 1.0
    stream_runs: int = 50
    mux_requests: int = 1500
    concurrency: int = 16
    limit_rounds: int = 3  # the bare app's best of this many rounds of every phase
    llm_rounds: int = 5
    llm_only: bool = False

    @classmethod
    def quick(cls, llm_only: bool = False) -> Settings:
        return cls(trivial_s=1.5, warmup_s=0.5, stream_runs=15, mux_requests=400,
                   limit_rounds=2, llm_rounds=1, llm_only=llm_only)


# --------------------------------------------------------------------------------------------
# The load generator: its own process, a minimal HTTP/1.1 client on asyncio streams (httpx
# costs several times more CPU per request, which on two cores would measure the client).


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, path: str, headers: dict[str, str] | None = None
                      ) -> tuple[int, float | None, bytes]:
        """GET ``path``; returns (status, seconds to the first body byte, body)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.writer.write(f"GET {path} HTTP/1.1\r\nhost: {self.host}\r\n{extra}\r\n".encode())
        sent = time.perf_counter()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip().lower()
        first: float | None = None
        body = bytearray()
        if fields.get("transfer-encoding") == "chunked":
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                chunk = await self.reader.readexactly(size + 2)
                if first is None:
                    first = time.perf_counter() - sent
                body += chunk[:-2]
        else:
            length = int(fields.get("content-length", "0"))
            if length:
                body += await self.reader.readexactly(length)
                first = time.perf_counter() - sent
        if fields.get("connection") == "close":
            self.close()
        return status, first, bytes(body)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _closed_loop(port: int, path: str, concurrency: int, duration_s: float,
                       warmup_s: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop_at = 0.0

    async def user() -> None:
        nonlocal errors
        conn = Connection("127.0.0.1", port)
        try:
            while True:
                start = time.perf_counter()
                if measuring and start >= stop_at:
                    return
                status, _, _ = await conn.request(path)
                if measuring:
                    latencies.append(time.perf_counter() - start)
                    errors += status != 200
        finally:
            conn.close()

    users = [asyncio.create_task(user()) for _ in range(concurrency)]
    await asyncio.sleep(warmup_s)
    started = time.perf_counter()
    stop_at = started + duration_s
    measuring = True
    await asyncio.gather(*users)
    elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "errors": errors, "per_s": len(latencies) / elapsed,
            **_percentiles(latencies)}


async def _streams(port: int, path: str, runs: int) -> dict[str, Any]:
    conn = Connection("127.0.0.1", port)
    firsts, totals, errors = [], [], 0
    try:
        for i in range(runs + 3):  # three warm-ups
            start = time.perf_counter()
            status, first, body = await conn.request(path)
            total = time.perf_counter() - start
            if i < 3:
                continue
            if status != 200 or body.count(b"\n") != STREAM_CHUNKS or first is None:
                errors += 1
                continue
            firsts.append(first)
            totals.append(total)
    finally:
        conn.close()
    return {"runs": len(firsts), "errors": errors,
            "first_chunk_ms": 1e3 * statistics.median(firsts) if firsts else None,
            "first_chunk_p90_ms": 1e3 * _quantile(firsts, 0.9) if firsts else None,
            "total_ms": 1e3 * statistics.median(totals) if totals else None}


def zipf_ids(n: int, seed: int = 0) -> list[str]:
    ids = [f"model-{k:02d}" for k in range(MUX_MODELS)]
    weights = [1 / (k + 1) ** ZIPF_S for k in range(MUX_MODELS)]
    return random.Random(seed).choices(ids, weights, k=n)


async def _multiplexed(port: int, path: str, concurrency: int, n: int) -> dict[str, Any]:
    queue = zipf_ids(n)
    latencies: list[float] = []
    errors = 0

    async def user() -> None:
        nonlocal errors
        conn = Connection("127.0.0.1", port)
        try:
            while queue:
                model = queue.pop()
                start = time.perf_counter()
                status, _, body = await conn.request(path, {"serve_multiplexed_model_id": model})
                latencies.append(time.perf_counter() - start)
                errors += status != 200 or body.decode() != model
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "errors": errors, "per_s": len(latencies) / elapsed,
            **_percentiles(latencies)}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _percentiles(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50_ms": None, "p99_ms": None}
    return {"p50_ms": 1e3 * _quantile(latencies, 0.5), "p99_ms": 1e3 * _quantile(latencies, 0.99)}


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec.pop("kind")
    kinds: dict[str, Callable[..., Coroutine[Any, Any, dict[str, Any]]]] = {
        "closed": _closed_loop, "stream": _streams, "mux": _multiplexed,
        "llm": _llm.stream_load}
    work = kinds[kind](**spec)
    cpu = time.process_time()
    try:  # the cheaper the client, the more of the two cores the servers get
        import uvloop
    except ImportError:
        result = asyncio.run(work)
    else:
        result = uvloop.run(work)
    return {**result, "client_cpu_s": time.process_time() - cpu}


# The closed-loop phases under wrk (C, epoll): it costs the two cores far less per request than
# any Python client, so more of them go to the server being measured. Set by main().
CLIENT = {"closed": "python"}


def _wrk_ms(text: str) -> float:
    """A wrk latency ("671.00us", "2.58ms", "1.02s") in milliseconds."""
    for suffix, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(suffix):
            return float(text[:-len(suffix)]) * scale
    raise ValueError(f"wrk latency {text!r}: expected a number ending in us, ms or s")


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests, errors, requests/s, p50 and p99 (ms) from ``wrk --latency``'s report."""
    result: dict[str, Any] = {"errors": 0}
    for line in output.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] in ("50%", "99%"):
            result[f"p{words[0][:-1]}_ms"] = _wrk_ms(words[1])
        elif line.startswith("Requests/sec:"):
            result["per_s"] = float(words[1])
        elif len(words) > 2 and words[1] == "requests" and words[2] == "in":
            result["requests"] = int(words[0])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            result["errors"] += int(words[-1])
        elif line.strip().startswith("Socket errors:"):  # connect N, read N, write N, timeout N
            result["errors"] += sum(int(w.rstrip(",")) for w in words[3::2])
    missing = {"per_s", "requests", "p50_ms", "p99_ms"} - set(result)
    if missing:
        raise ValueError(f"wrk's report has no {', '.join(sorted(missing))}: {output[-1500:]}")
    return result


def run_wrk(port: int, path: str, concurrency: int, duration_s: float,
            warmup_s: float) -> dict[str, Any]:
    """The closed-loop phase under wrk: a warm-up run, then the measured one (whole seconds)."""
    url = f"http://127.0.0.1:{port}{path}"
    base = ["wrk", "-t1", f"-c{concurrency}", "--timeout", "10s"]
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([*base, f"-d{max(1, math.ceil(warmup_s))}s", url], capture_output=True,
                   timeout=120, check=True)
    out = subprocess.run([*base, f"-d{max(1, math.ceil(duration_s))}s", "--latency", url],
                         capture_output=True, text=True, timeout=300, check=True)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {**parse_wrk(out.stdout), "client": "wrk",
            "client_cpu_s": used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime}


def load_in_a_process(**spec: Any) -> dict[str, Any]:
    if spec["kind"] == "closed" and CLIENT["closed"] == "wrk":
        spec.pop("kind")
        return run_wrk(**spec)
    out = subprocess.run([sys.executable, __file__, "--load", json.dumps(spec)],
                         capture_output=True, text=True, timeout=300, check=False)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return dict(json.loads(line[len(RESULT_MARKER):]))
    raise RuntimeError(f"load generator failed ({out.returncode}): {out.stderr[-3000:]}")


# --------------------------------------------------------------------------------------------
# One framework, inside its own child process: deploy each workload, drive it, tear it down.


def build_deployments(serve: Any, loads_file: str) -> dict[str, Any]:
    """The three workloads' deployments, the same code for both frameworks."""
    options = {"ray_actor_options": {"num_cpus": 0}}

    @serve.deployment(max_ongoing_requests=100, **options)
    class Trivial:
        async def __call__(self, request: Any) -> str:
            return "ok"

    @serve.deployment(**options)
    class Tokens:
        async def __call__(self, request: Any) -> Any:
            from starlette.responses import StreamingResponse

            async def tokens() -> Any:
                for i in range(STREAM_CHUNKS):
                    yield f"token {i:03d}\n"

            return StreamingResponse(tokens(), media_type="text/plain")

    @serve.deployment(num_replicas=MUX_REPLICAS, max_ongoing_requests=16, **options)
    class Models:
        @serve.multiplexed(max_num_models_per_replica=MUX_SLOTS)
        async def get_model(self, model_id: str) -> str:
            await asyncio.sleep(MUX_LOAD_S)
            with open(loads_file, "a") as f:  # one short append per load, from any process
                f.write(f"{os.getpid()} {model_id}\n")
            return model_id

        async def __call__(self, request: Any) -> str:
            return str(await self.get_model(serve.get_multiplexed_model_id()))

    return {"trivial": Trivial, "stream": Tokens, "mux": Models}


def measure_framework(name: str, settings: Settings) -> dict[str, Any]:
    results: dict[str, Any] = {}
    fd, loads_file = tempfile.mkstemp(prefix="ember-serve-bench-loads-")
    os.close(fd)
    serve: Any
    if name == "ember":
        import ember
        from ember import serve

        ember.init(num_cpus=2)
        port = serve.start(http_options={"host": "127.0.0.1", "port": 0})
    else:
        import ray
        from ray import serve
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        if settings.llm_only:
            results["llm"] = _llm.measure(name, serve, port, settings.llm_rounds,
                                          load_in_a_process)
            return results
        apps = build_deployments(serve, loads_file)

        serve.run(apps["trivial"].bind(), name="trivial", route_prefix="/trivial")
        for concurrency in (1, settings.concurrency):
            results[f"trivial_c{concurrency}"] = load_in_a_process(
                kind="closed", port=port, path="/trivial", concurrency=concurrency,
                duration_s=settings.trivial_s, warmup_s=settings.warmup_s)
        serve.delete("trivial")

        serve.run(apps["stream"].bind(), name="stream", route_prefix="/stream")
        results["stream"] = load_in_a_process(kind="stream", port=port, path="/stream",
                                              runs=settings.stream_runs)
        serve.delete("stream")

        serve.run(apps["mux"].bind(), name="mux", route_prefix="/mux")
        results["mux"] = load_in_a_process(kind="mux", port=port, path="/mux",
                                           concurrency=settings.concurrency,
                                           n=settings.mux_requests)
        with open(loads_file) as f:
            results["mux"]["loads"] = sum(1 for _ in f)
        serve.delete("mux")

        results["llm"] = _llm.measure(name, serve, port, settings.llm_rounds, load_in_a_process)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(loads_file)
        serve.shutdown()
        if name == "ember":
            ember.shutdown()
        else:
            ray.shutdown()
    return results


# --------------------------------------------------------------------------------------------
# The limit: the same handlers in a bare Starlette app on uvicorn, one process, no framework.


def bare_server() -> None:
    """Serve the trivial handler and the streaming generator on uvicorn (uvloop and httptools
    where installed) on a free port of 127.0.0.1; print the port, then serve until SIGTERM."""
    import importlib.util

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    async def trivial(request: Any) -> Any:
        return PlainTextResponse("ok")  # what ember's replica makes of a returned "ok"

    async def stream(request: Any) -> Any:
        async def tokens() -> Any:
            for i in range(STREAM_CHUNKS):
                yield f"token {i:03d}\n"

        return StreamingResponse(tokens(), media_type="text/plain")

    app = Starlette(routes=[Route("/trivial", trivial), Route("/stream", stream)])
    # IPPROTO_TCP, as ember's proxy binds: asyncio sets TCP_NODELAY only on such sockets
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    has = {name: importlib.util.find_spec(name) is not None for name in ("uvloop", "httptools")}
    config = uvicorn.Config(app, loop="uvloop" if has["uvloop"] else "asyncio",
                            http="httptools" if has["httptools"] else "h11",
                            log_level="warning", access_log=False, lifespan="off",
                            server_header=False)
    print(f"{BARE_MARKER}{sock.getsockname()[1]} {json.dumps(has)}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


BARE_MARKER = "BARE-SERVER "


def best_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each phase's best number over the rounds: the highest rate, the lowest latency."""
    best: dict[str, Any] = {}
    for phase in rounds[0]:
        parts = [r[phase] for r in rounds if isinstance(r.get(phase), dict)]
        merged: dict[str, Any] = {}
        for key in parts[0]:
            values = [p[key] for p in parts if isinstance(p.get(key), (int, float))]
            if key == "per_s":
                merged[key] = max(values, default=None)
            elif key.endswith("_ms"):
                merged[key] = min(values, default=None)
            elif key == "errors":
                merged[key] = sum(values)
        best[phase] = merged
    return best


def measure_limit(settings: Settings) -> dict[str, Any]:
    """The bare app under the same phases as the frameworks, best of ``limit_rounds``."""
    proc = subprocess.Popen([sys.executable, __file__, "--bare-server"], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith(BARE_MARKER):
            raise RuntimeError(f"the bare uvicorn server did not start (said {line!r})")
        port_text, has = line[len(BARE_MARKER):].split(" ", 1)
        port = int(port_text)
        rounds = []
        for _ in range(settings.limit_rounds):
            phases = {}
            for concurrency in (1, settings.concurrency):
                phases[f"trivial_c{concurrency}"] = load_in_a_process(
                    kind="closed", port=port, path="/trivial", concurrency=concurrency,
                    duration_s=settings.trivial_s, warmup_s=settings.warmup_s)
            phases["stream"] = load_in_a_process(kind="stream", port=port, path="/stream",
                                                 runs=settings.stream_runs)
            rounds.append(phases)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        _procs.reap_session(proc.pid, 0, say=False)
        proc.wait()
    return {**best_of(rounds), "rounds": rounds, "server": json.loads(has)}


# --------------------------------------------------------------------------------------------
# The parent: runs each framework's child, one at a time, and prints the table.


BUSY: list[str] = []


def _load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def run_framework(name: str, quick: bool, llm_only: bool = False
                  ) -> tuple[dict[str, Any] | None, str]:
    _procs.wait_for_quiet_cpus(name, BUSY)
    stdout, stderr, code = _procs.run_child(
        [__file__, "--child", name] + (["--quick"] if quick else [])
        + (["--llm-only"] if llm_only else []), CHILD_TIMEOUT_S)
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):]), stderr
    return None, f"exit code {code}\n{stdout[-2000:]}\n{stderr[-4000:]}"


@dataclass(frozen=True)
class Row:
    workload: str
    path: tuple[str, str]
    unit: str
    better: str  # "higher" | "lower"
    target: str | None = None
    min_speedup: float | None = None  # ember must be at least this many times better than Ray
    max_value: float | None = None  # ember's own number must stay at or below this
    limit: bool = False  # the bare app measures this row too (the limit column)
    min_vs_limit: float | None = None  # ember / limit must reach this (checked by report.py)
    max_vs_limit: float | None = None  # ember / limit must stay at or below this
    min_value: float | None = None  # ember's own number must reach at least this
    ray_path: tuple[str, str] | None = None  # where Ray's number is, when not at ``path``


LLM = f"LLM {_llm.LLM_CONCURRENCY} streams x {_llm.LLM_TOKENS} tokens"


def llm_rows() -> list[Row]:
    """ember's continuous batching beside Ray Serve's best variant; the ratios to ember's own
    unbatched run are ember-only rows (see ``_llm.derived``)."""
    best = ("llm_best_ray", "")
    return [
        Row(f"{LLM}: tokens/s (vs Ray's best variant)", ("llm", "ember_batched.tokens_per_s"),
            "tok/s", "higher", ">= 2x Ray Serve's best", min_speedup=2.0,
            ray_path=(best[0], "tokens_per_s")),
        Row(f"{LLM}: batched / unbatched tokens/s", ("llm_derived", "batching_speedup"), "x",
            "higher", ">= 4x", min_value=4.0),
        Row(f"{LLM}: time to first token p50", ("llm", "ember_batched.ttft_p50_ms"), "ms",
            "lower", ray_path=(best[0], "ttft_p50_ms")),
        Row(f"{LLM}: time to first token p99", ("llm", "ember_batched.ttft_p99_ms"), "ms",
            "lower", ray_path=(best[0], "ttft_p99_ms")),
        Row(f"{LLM}: TTFT p99 batched / unbatched", ("llm_derived", "ttft_p99_vs_unbatched"),
            "x", "lower", "< 2x", max_value=2.0),
        Row(f"{LLM}: inter-token latency p50", ("llm", "ember_batched.itl_p50_ms"), "ms",
            "lower", ray_path=(best[0], "itl_p50_ms")),
        Row(f"{LLM}: inter-token latency p99", ("llm", "ember_batched.itl_p99_ms"), "ms",
            "lower", ray_path=(best[0], "itl_p99_ms")),
    ]


def rows(concurrency: int) -> list[Row]:
    c = concurrency
    return [
        Row("trivial, concurrency 1: requests/s", ("trivial_c1", "per_s"), "req/s", "higher",
            limit=True),
        Row("trivial, concurrency 1: p50", ("trivial_c1", "p50_ms"), "ms", "lower", limit=True),
        Row("trivial, concurrency 1: p99", ("trivial_c1", "p99_ms"), "ms", "lower", limit=True),
        Row(f"trivial, concurrency {c}: requests/s", (f"trivial_c{c}", "per_s"), "req/s",
            "higher", ">= 10x Ray Serve req/s", min_speedup=10, limit=True, min_vs_limit=0.5),
        Row(f"trivial, concurrency {c}: p50", (f"trivial_c{c}", "p50_ms"), "ms", "lower",
            limit=True),
        Row(f"trivial, concurrency {c}: p99", (f"trivial_c{c}", "p99_ms"), "ms", "lower",
            "lower p99 than Ray Serve", min_speedup=1.0, limit=True, max_vs_limit=2.0),
        Row(f"streaming {STREAM_CHUNKS} chunks: first chunk", ("stream", "first_chunk_ms"), "ms",
            "lower", "< 5 ms", max_value=5.0, limit=True),
        Row(f"streaming {STREAM_CHUNKS} chunks: total", ("stream", "total_ms"), "ms", "lower",
            limit=True),
        Row(f"multiplexing {MUX_MODELS} ids / {MUX_REPLICAS} replicas x {MUX_SLOTS}: requests/s",
            ("mux", "per_s"), "req/s", "higher"),
        Row(f"multiplexing {MUX_MODELS} ids: model loads", ("mux", "loads"), "loads", "lower",
            "fewer model loads than Ray Serve", min_speedup=1.0 + 1e-9),
        Row(f"multiplexing {MUX_MODELS} ids: p99", ("mux", "p99_ms"), "ms", "lower"),
    ]


def _value(results: dict[str, Any] | None, path: tuple[str, str]) -> float | None:
    if path[0] == "llm_derived":
        value = _llm.derived(results).get(path[1])
    elif path[0] == "llm_best_ray":
        value = (_llm.best_ray(results) or {}).get(path[1])
    else:
        value = (results or {}).get(path[0], {})
        for part in path[1].split("."):  # "variant.metric" inside a nested result
            value = value.get(part) if isinstance(value, dict) else None
    return None if value is None else float(value)


def evaluate(row: Row, ember: float | None, ray: float | None,
             limit: float | None = None) -> dict[str, Any]:
    speedup = None
    if ember is not None and ray is not None:
        if row.better == "higher":
            speedup = ember / ray if ray else None
        else:
            speedup = ray / ember if ember else (float("inf") if ray else 1.0)
    met: bool | None = None
    notes = []
    if row.target is not None:
        verdicts = []
        if ember is None:
            verdicts.append(False)
            notes.append("ember failed")
        if row.max_value is not None and ember is not None:
            verdicts.append(ember < row.max_value)
        if row.min_value is not None and ember is not None:
            verdicts.append(ember >= row.min_value)
        if row.min_speedup is not None:
            if speedup is None:
                notes.append("Ray not measured")
            else:
                verdicts.append(speedup >= row.min_speedup)
        met = all(verdicts) if verdicts else None
    return {"workload": row.workload, "unit": row.unit, "ember": ember, "ray": ray,
            "better": row.better, "speedup": speedup, "target": row.target, "met": met,
            "note": "; ".join(notes), "limit": limit if row.limit else None,
            "min_vs_limit": row.min_vs_limit, "max_vs_limit": row.max_vs_limit}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "failed"
    if unit == "req/s":
        return f"{value:,.0f} req/s"
    if unit == "loads":
        return f"{value:.0f}"
    if unit == "tok/s":
        return f"{value:,.0f} tok/s"
    if unit == "x":
        return f"{value:.1f}x"
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def table(verdicts: list[dict[str, Any]], ran: set[str]) -> str:
    from report import limit_verdict, merge_verdicts  # the report's own check of limit targets

    header = ["workload", "ember", "Ray Serve", "limit", "ember vs Ray", "ember / limit",
              "target", "met?"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for v in verdicts:
        speedup = "—" if v["speedup"] is None else f"{v['speedup']:.1f}x"
        ratio, limit_target, limit_met = limit_verdict(v["ember"], v["limit"], v["max_vs_limit"],
                                                       v["min_vs_limit"])
        target, met_value = merge_verdicts(v["target"], v["met"], limit_target, limit_met)
        met = "—" if met_value is None else ("yes" if met_value else "**no**")
        if v["note"]:
            met += f" ({v['note']})"
        lines.append("| " + " | ".join([
            v["workload"],
            _fmt(v["ember"], v["unit"]) if "ember" in ran else "not run",
            _fmt(v["ray"], v["unit"]) if "ray" in ran else "not run",
            _fmt(v["limit"], v["unit"]) if "limit" in ran and v["limit"] is not None else "—",
            speedup, "—" if ratio is None else f"{ratio:.2f}x", target or "", met]) + " |")
    return "\n".join(lines)


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except Exception:
        return "not installed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases: a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the rows here")
    parser.add_argument("--only", choices=(*FRAMEWORKS, "limit"),
                        help="run one framework only (or only the limit: the bare app)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="the closed-loop load: wrk, the asyncio client, or wrk when it is "
                             "installed (the default)")
    parser.add_argument("--llm-only", action="store_true", help="run only the LLM workload")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one framework's part
    parser.add_argument("--load", help=argparse.SUPPRESS)  # internal: the load generator
    parser.add_argument("--bare-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = Settings.quick(args.llm_only) if args.quick else Settings(llm_only=args.llm_only)
    if args.client == "wrk" and shutil.which("wrk") is None:
        parser.error("--client wrk: wrk is not installed (apt-get install wrk)")
    CLIENT["closed"] = ("wrk" if args.client == "wrk" or (args.client == "auto"
                                                          and shutil.which("wrk")) else "python")
    if args.child:  # the framework's child passes the choice on to its loads
        CLIENT["closed"] = os.environ.get("EMBER_BENCH_SERVE_CLIENT", CLIENT["closed"])
    os.environ["EMBER_BENCH_SERVE_CLIENT"] = CLIENT["closed"]

    if args.bare_server:
        bare_server()
        return 0
    if args.load:
        print(RESULT_MARKER + json.dumps(run_load(json.loads(args.load))), flush=True)
        return 0
    if args.child:
        print(RESULT_MARKER + json.dumps(measure_framework(args.child, settings)), flush=True)
        return 0

    started = datetime.datetime.now().astimezone()
    load_before = _load_average()
    results: dict[str, dict[str, Any] | None] = {}
    errors: list[str] = []
    for name in FRAMEWORKS:
        if args.only and name != args.only:
            continue
        if name == "ray" and _version("ray") == "not installed":
            errors.append("ray: not installed, its column is empty")
            continue
        print(f"[benchmark] running {name} ...", file=sys.stderr, flush=True)
        results[name], stderr = run_framework(name, args.quick, args.llm_only)
        if results[name] is None:
            errors.append(f"{name} failed: {stderr}")
            print(f"[benchmark] {name} failed: {stderr}", file=sys.stderr)
    if args.only in (None, "limit") and not args.llm_only:
        print("[benchmark] running the limit (bare Starlette on uvicorn) ...", file=sys.stderr,
              flush=True)
        _procs.wait_for_quiet_cpus("limit", BUSY)
        try:
            results["limit"] = measure_limit(settings)
        except Exception as exc:  # the frameworks' numbers still count: report the failure
            results["limit"] = None
            errors.append(f"limit failed: {exc!r}")
            print(f"[benchmark] limit failed: {exc!r}", file=sys.stderr)
    chosen = llm_rows() if args.llm_only else rows(settings.concurrency) + llm_rows()
    verdicts = [evaluate(row, _value(results.get("ember"), row.path),
                         None if row.ray_path is None and row.path[0] == "llm_derived"
                         else _value(results.get("ray"), row.ray_path or row.path),
                         _value(results.get("limit"), row.path))
                for row in chosen]
    machine = (f"{os.cpu_count()} CPUs, {platform.machine()}, Python "
               f"{platform.python_version()}, ray {_version('ray')}")
    notes = [
        f"{started:%Y-%m-%d %H:%M %Z}, {machine}" + (" (quick)" if args.quick else ""),
        f"load average before / after: {load_before} | {_load_average()}",
        f"trivial: closed loop, {settings.trivial_s} s per phase after {settings.warmup_s} s of "
        "warm-up, one keep-alive connection per concurrent user",
        f"streaming: median of {settings.stream_runs} sequential requests; first chunk = from "
        "sending the request to the first body chunk",
        f"multiplexing: {settings.mux_requests} requests, Zipf({ZIPF_S}) over {MUX_MODELS} ids, "
        f"loader sleeps {MUX_LOAD_S * 1e3:.0f} ms, {settings.concurrency} connections",
        "both frameworks: 1 replica (4 for multiplexing), num_cpus=0 per replica; "
        "ray.init(num_cpus=2, include_dashboard=False); ember.init(num_cpus=2)",
        f"LLM: {_llm.LLM_CONCURRENCY} concurrent streamed completions of {_llm.LLM_TOKENS} "
        f"tokens, {settings.llm_rounds} bursts per variant after a warm-up, a framework's two "
        "variants taking turns; tokens/s of the best burst; every variant below:\n\n"
        + _llm.table(results) + "\n",
        "closed-loop load: " + ("wrk -t1 (its own warm-up run first; whole seconds)"
                                if CLIENT["closed"] == "wrk" else "the asyncio client"),
    ]
    if limit_result := results.get("limit"):
        server = limit_result["server"]
        notes.append(
            "limit: the same trivial handler (PlainTextResponse('ok')) and streaming generator "
            "in a plain Starlette app on uvicorn in one process ("
            + ", ".join(f"{k} {'yes' if v else 'NOT INSTALLED'}" for k, v in server.items())
            + f"), the same load; each phase's best of {settings.limit_rounds} rounds (highest "
            "req/s, lowest latency)")
    for name, res in results.items():
        for key, part in (res or {}).items():
            if isinstance(part, dict) and part.get("errors"):
                notes.append(f"{name} {key}: {part['errors']} failed requests")
    if BUSY:
        notes.append("warning: other processes kept the CPUs busy before: "
                     f"{', '.join(BUSY)}; those numbers are noisy")
    notes += errors
    print("ember serve benchmark, " + notes[0])
    print()
    print(table(verdicts, set(results)))
    print()
    for note in notes[1:]:
        print(f"- {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "serve", "rows": verdicts, "notes": notes,
                       "command": " ".join(["python", *sys.argv]), "raw": results}, f, indent=2)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
