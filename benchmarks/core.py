"""Core benchmark: ember beside Ray beside what the machine itself can do.

Run it from the repository root (``make bench`` does this)::

    .venv/bin/python benchmarks/core.py            # full run, about a minute with Ray installed
    .venv/bin/python benchmarks/core.py --quick    # smoke run, fewer repetitions
    .venv/bin/python benchmarks/core.py --frameworks ember   # ember's column only
    .venv/bin/python benchmarks/core.py --json /tmp/core.json   # also write the report's JSON

It prints one Markdown table, one row per workload:

- start-up to first task result: a fresh Python process imports the framework, initializes it,
  runs one trivial task and gets its result (time from before the import; median of 3 processes);
- empty tasks/s: submit N no-op tasks, get them all (N sized to take 1-2 s);
- sync actor call: microseconds per ``get(actor.method.remote())``;
- 256 MB through a task: ``get(identity.remote(arr))`` with a fresh 256 MB float64 array passed by
  value (Ray puts such an argument in its object store first, and the result too);

with a column per framework (ember, ember with its polling before blocking turned off, Ray when
it is installed, ember on the Ray backend when that backend exists), the machine's limit where one applies (a ``multiprocessing.Pipe`` round trip to a
child process that echoes, one copy of 256 MB into fresh shared memory, empty tasks pipelined over
one socket pair to a worker process), the speedup of ember over
Ray, ember's ratio to the limit (the best of several tries: what the machine can do), the target
and whether ember meets it.

Every framework runs in its own child processes, one after the other, so that on a small machine
they never compete for cores. To add a framework, add one entry to ``FRAMEWORKS``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import json
import os
import pickle
import platform
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import _procs

ARRAY_BYTES = 256 * 1024 * 1024
RESULT_MARKER = "BENCH-RESULT "
CHILD_TIMEOUT_S = 600


@dataclass(frozen=True)
class Framework:
    """One column of the table: which module gives the Ray-shaped API, and how to start it."""

    name: str
    module: str
    init_kwargs: dict[str, Any]
    requires: tuple[str, ...] = ()  # modules that must be importable, else the column is skipped
    env: tuple[tuple[str, str], ...] = ()  # environment variables set before the import

    def available(self) -> bool:
        for name in self.requires:
            try:
                spec = importlib.util.find_spec(name)
            except ImportError:  # the parent package is missing
                return False
            if spec is None or spec.origin is None:  # absent, or a bare directory in the making
                return False
        return True


FRAMEWORKS = [
    Framework("ember", "ember", {"num_cpus": 2}, requires=("ember",)),
    # ember with its brief polling before blocking turned off (see the notes).
    Framework("ember-no-spin", "ember", {"num_cpus": 2}, requires=("ember",),
              env=(("EMBER_SPIN_US", "0"),)),
    Framework("ray", "ray", {"num_cpus": 2, "include_dashboard": False}, requires=("ray",)),
    Framework(
        "ember-on-ray", "ember",
        {"backend": "ray", "num_cpus": 2, "include_dashboard": False},
        requires=("ray", "ember.core.ray_backend"),
    ),
]


@dataclass(frozen=True)
class Settings:
    startup_runs: int = 3
    tasks_target_s: float = 1.5
    actor_rounds: int = 3
    actor_calls: int = 1000
    array_runs: int = 7
    pipe_rounds: int = 5
    pipe_calls: int = 5000
    shm_runs: int = 5
    task_limit_calls: int = 50_000

    @classmethod
    def quick(cls) -> Settings:
        return cls(startup_runs=1, tasks_target_s=0.3, actor_rounds=1, actor_calls=300,
                   array_runs=2, pipe_rounds=2, pipe_calls=2000, shm_runs=2,
                   task_limit_calls=10_000)


# --------------------------------------------------------------------------------------------
# Measurements inside a child process. Each function returns plain numbers (JSON-ready).


STARTUP_SCRIPT = """\
import os, time
os.environ.update({env!r})
start = time.perf_counter()
import {module} as fw
fw.init(**{init_kwargs!r})

@fw.remote
def one():
    return 1

assert fw.get(one.remote()) == 1
print({marker!r} + repr(time.perf_counter() - start), flush=True)
fw.shutdown()
"""


def measure_framework(fw_spec: Framework, settings: Settings) -> dict[str, Any]:
    """The in-process workloads, run in a child process that owns one framework runtime."""
    import numpy as np

    os.environ.update(fw_spec.env)
    fw = importlib.import_module(fw_spec.module)
    fw.init(**fw_spec.init_kwargs)
    try:
        @fw.remote
        def noop() -> None:
            return None

        @fw.remote
        def identity(x: Any) -> Any:
            return x

        @fw.remote
        class Echo:
            def ping(self) -> None:
                return None

        results: dict[str, Any] = {}

        # Empty tasks: warm up (workers started, code shipped), then resize N from each run's
        # rate until one run takes at least 60% of `tasks_target_s`; that run is the result.
        def run_tasks(n: int) -> float:
            start = time.perf_counter()
            fw.get([noop.remote() for _ in range(n)])
            return time.perf_counter() - start

        run_tasks(200)
        n = 200
        for _ in range(6):
            elapsed = run_tasks(n)
            if elapsed >= 0.6 * settings.tasks_target_s:
                break
            n = int(n * min(20.0, settings.tasks_target_s / max(elapsed, 1e-3)))
        results["tasks"] = {"n": n, "seconds": elapsed, "per_s": n / elapsed}
        if fw_spec.module == "ember" and fw_spec.init_kwargs.get("backend", "local") == "local":
            results["state_cost"] = measure_state_cost(run_tasks, n, n / elapsed)

        # Sync actor calls: one call in flight at a time.
        actor = Echo.remote()
        for _ in range(200):
            fw.get(actor.ping.remote())
        rounds = []
        for _ in range(settings.actor_rounds):
            start = time.perf_counter()
            for _ in range(settings.actor_calls):
                fw.get(actor.ping.remote())
            rounds.append((time.perf_counter() - start) / settings.actor_calls * 1e6)
        results["actor_call_us"] = {"median": statistics.median(rounds), "rounds": rounds,
                                    "calls_per_round": settings.actor_calls}
        del actor

        # 256 MB by value through a task and back. The array is made fresh (and its pages
        # touched) before the clock starts; the first run is the warm-up.
        samples = []
        for run in range(settings.array_runs + 1):
            arr = np.full(ARRAY_BYTES // 8, float(run))
            start = time.perf_counter()
            out = fw.get(identity.remote(arr))
            elapsed = time.perf_counter() - start
            if out.shape != arr.shape or out[0] != run or out[-1] != run:
                raise AssertionError(f"identity returned a wrong array: {out!r}")
            if run == 0:
                if not np.array_equal(out, arr):
                    raise AssertionError("identity returned different contents")
            else:
                samples.append(elapsed)
            del arr, out
        results["array_s"] = {"median": statistics.median(samples), "runs": samples}
        return results
    finally:
        fw.shutdown()


def measure_state_cost(run_tasks: Callable[[int], float], n: int, tasks_per_s: float
                       ) -> dict[str, Any]:
    """What the state API's bookkeeping costs an empty task (ember's local backend only).

    The only per-task bookkeeping is the driver's ``on_finish`` hook (a counter per function
    and a ring of recent tasks) and one dict entry naming the worker's last task (for its late
    output); everything else is computed when asked. Timed two ways: both, run as the driver
    runs them (lock held), against an empty task's time; and empty tasks/s with the hook
    against the same with it replaced by a no-op, interleaved.
    """
    from ember.core._api import current_backend
    from ember.core.local._records import _Work

    backend: Any = current_backend()
    observer = backend._observer
    work = _Work()
    work.id, work.name = 1, "noop"
    calls = 200_000
    last_work = observer.last_work
    with backend._lock:
        start = time.perf_counter()
        for _ in range(calls):
            last_work[1] = work
            observer.on_finish(work, None)
        hook_s = time.perf_counter() - start
    last_work.pop(1, None)
    hook_us = hook_s / calls * 1e6
    task_us = 1e6 / tasks_per_s
    on, off = [], []
    real = observer.on_finish
    for _ in range(3):
        on.append(n / run_tasks(n))
        observer.on_finish = lambda work, error: None
        try:
            off.append(n / run_tasks(n))
        finally:
            observer.on_finish = real
    return {"hook_us": hook_us, "task_us": task_us, "percent": 100 * hook_us / task_us,
            "tasks_per_s_on": statistics.median(on), "tasks_per_s_off": statistics.median(off),
            "ab_percent": 100 * (1 - statistics.median(on) / statistics.median(off))}


def _echo(conn: Any) -> None:
    while (message := conn.recv()) is not None:
        conn.send(message)


# The empty-task limit: what ember's task path does per task, with nothing else. Messages shaped
# like ember's (a pickled tuple each way), length-prefixed frames over one Unix socket pair, up
# to TASK_PIPELINE_DEPTH requests in flight (ember queues as many on a busy worker), and every
# batch of frames that arrives together answered by one write (as ember's ends batch).
TASK_PIPELINE_DEPTH = 16  # ember.core.local._records._PIPELINE_DEPTH
_FRAME_HEADER = struct.Struct("<Q")


def _frames(buf: bytearray) -> list[bytes]:
    """Take the complete length-prefixed frames off the front of ``buf``."""
    frames, start, size = [], 0, _FRAME_HEADER.size
    while len(buf) - start >= size:
        (length,) = _FRAME_HEADER.unpack_from(buf, start)
        if len(buf) - start - size < length:
            break
        frames.append(bytes(buf[start + size:start + size + length]))
        start += size + length
    del buf[:start]
    return frames


def _frame(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=5)
    return _FRAME_HEADER.pack(len(payload)) + payload


def _task_worker(sock: socket.socket) -> None:
    """Answer every task request with its "done", one write per batch read; None ends."""
    buf = bytearray()
    result = pickle.dumps(None, protocol=5)
    while data := sock.recv(1 << 16):
        buf += data
        replies = []
        for frame in _frames(buf):
            task = pickle.loads(frame)
            if task is None:
                return
            replies.append(_frame(("done", task[1], ((result, (), ()),), None, 1e-6)))
        sock.sendall(b"".join(replies))


def _pipelined_tasks(sock: socket.socket, n: int) -> float:
    """Seconds for ``n`` empty tasks through ``_task_worker``, at most 16 in flight."""
    args = pickle.dumps(((), {}), protocol=5)

    def request(i: int) -> bytes:
        return _frame(("task", i, b"0123456789abcdef", None, args, (), [i], None, (), "noop",
                       0))

    start = time.perf_counter()
    sent = min(n, TASK_PIPELINE_DEPTH)
    sock.sendall(b"".join(request(i) for i in range(sent)))
    done = 0
    buf = bytearray()
    while done < n:
        buf += sock.recv(1 << 16)
        finished = len([pickle.loads(frame) for frame in _frames(buf)])
        done += finished
        more = min(finished, n - sent)
        if more:
            sock.sendall(b"".join(request(i) for i in range(sent, sent + more)))
            sent += more
    return time.perf_counter() - start


def measure_task_limit(settings: Settings) -> dict[str, Any]:
    """Empty tasks/s over one socket pair to one worker process: best of several rounds."""
    import multiprocessing

    mine, theirs = socket.socketpair()
    proc = multiprocessing.get_context("fork").Process(target=_task_worker, args=(theirs,),
                                                       daemon=True)
    proc.start()
    theirs.close()
    try:
        _pipelined_tasks(mine, 2000)  # warm-up
        rounds = [settings.task_limit_calls / _pipelined_tasks(mine, settings.task_limit_calls)
                  for _ in range(settings.pipe_rounds)]
        mine.sendall(_frame(None))
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        mine.close()
    return {"best": max(rounds), "rounds": rounds, "tasks_per_round": settings.task_limit_calls,
            "depth": TASK_PIPELINE_DEPTH}


def measure_limits(settings: Settings) -> dict[str, Any]:
    """What the machine itself allows: a pipe round trip, one copy into fresh shared memory."""
    import multiprocessing
    from multiprocessing import shared_memory

    import numpy as np

    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=_echo, args=(child,), daemon=True)
    proc.start()
    message = ("call", 1, None)  # about the size of a no-argument call
    for _ in range(1000):
        parent.send(message)
        parent.recv()
    rounds = []
    for _ in range(settings.pipe_rounds):
        start = time.perf_counter()
        for _ in range(settings.pipe_calls):
            parent.send(message)
            parent.recv()
        rounds.append((time.perf_counter() - start) / settings.pipe_calls * 1e6)
    parent.send(None)
    proc.join()

    arr = np.full(ARRAY_BYTES // 8, 1.0)
    samples = []
    for run in range(settings.shm_runs + 1):
        start = time.perf_counter()
        shm = shared_memory.SharedMemory(create=True, size=arr.nbytes)
        dst: Any = np.ndarray(arr.shape, arr.dtype, buffer=shm.buf)
        dst[:] = arr
        elapsed = time.perf_counter() - start
        del dst
        shm.close()
        shm.unlink()
        if run > 0:  # the first run is the warm-up
            samples.append(elapsed)
    shm = shared_memory.SharedMemory(create=True, size=arr.nbytes)
    dst = np.ndarray(arr.shape, arr.dtype, buffer=shm.buf)
    mapped = []
    for run in range(settings.shm_runs + 1):
        start = time.perf_counter()
        dst[:] = arr  # pages already mapped after the first run
        if run > 0:
            mapped.append(time.perf_counter() - start)
    del dst
    shm.close()
    shm.unlink()
    # A limit is the best the machine does: the fastest round, not a typical one.
    return {
        "task_pipe_per_s": measure_task_limit(settings),
        "pipe_rtt_us": {"best": min(rounds), "rounds": rounds,
                        "calls_per_round": settings.pipe_calls},
        "shm_copy_s": {"best": min(samples), "runs": samples},
        "shm_copy_mapped_s": {"best": min(mapped), "runs": mapped},
    }


# --------------------------------------------------------------------------------------------
# The parent: runs every child, one at a time, and prints the table.


BUSY: list[str] = []  # measurements that started while other processes kept the CPUs busy


def _run_child(argv: list[str], what: str) -> tuple[Any, str]:
    """Run a child Python process; return (the value it reported, or None; its stderr)."""
    _procs.wait_for_quiet_cpus(what, BUSY)
    stdout, stderr, code = _procs.run_child(argv, CHILD_TIMEOUT_S)
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):]), stderr
    return None, f"exit code {code}\n{stdout[-2000:]}\n{stderr[-4000:]}"


def run_framework(fw_spec: Framework, settings: Settings, quick: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"errors": []}
    script = STARTUP_SCRIPT.format(module=fw_spec.module, init_kwargs=fw_spec.init_kwargs,
                                   marker=RESULT_MARKER, env=dict(fw_spec.env))
    startups = []
    for _ in range(settings.startup_runs):
        value, stderr = _run_child(["-c", script], f"{fw_spec.name} start-up")
        if value is None:
            result["errors"].append(f"start-up run failed: {stderr}")
            break
        startups.append(value)
    if startups:
        result["startup_s"] = {"median": statistics.median(startups), "runs": startups}
    argv = [__file__, "--child", fw_spec.name] + (["--quick"] if quick else [])
    value, stderr = _run_child(argv, f"{fw_spec.name} workloads")
    if value is None:
        result["errors"].append(f"workloads failed: {stderr}")
    else:
        result.update(value)
    return result


def _get(results: dict[str, Any], *path: str) -> float | None:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node)


@dataclass(frozen=True)
class Row:
    """One workload: where its number lives, how to print it, and what ember should reach."""

    title: str
    path: tuple[str, ...]
    unit: str  # the unit of the JSON report's numbers: the raw value times `scale`
    scale: float
    fmt: Callable[[float], str]  # the printed table's text for a raw value
    higher_is_better: bool
    target: str
    limit_path: tuple[str, ...] | None = None
    max_vs_limit: float | None = None  # ember / limit must stay at or below this
    min_speedup: float | None = None  # ember's speedup over Ray must reach this
    max_value: float | None = None  # ember's own number must stay at or below this
    ember_local_only: bool = False  # measured for ember's local backend alone ("—" elsewhere)


ROWS = [
    Row("start-up to first task result", ("startup_s", "median"), "s", 1.0,
        lambda v: f"{v:.2f} s", False, "< 0.5 s and ≥ 10x faster than Ray", max_value=0.5, min_speedup=10),
    Row("empty tasks/s", ("tasks", "per_s"), "tasks/s", 1.0, lambda v: f"{v:,.0f} /s", True,
        "≥ 3x Ray", min_speedup=3, limit_path=("task_pipe_per_s", "best")),
    Row("sync actor call round trip", ("actor_call_us", "median"), "µs", 1.0,
        lambda v: f"{v:,.0f} µs", False, "≤ 3x pipe round trip and ≥ 4x faster than Ray",
        limit_path=("pipe_rtt_us", "best"), max_vs_limit=3, min_speedup=4),
    Row("state API bookkeeping per empty task", ("state_cost", "percent"), "%", 1.0,
        lambda v: f"{v:.2f} %", False, "< 5% of an empty task's time", max_value=5,
        ember_local_only=True),
    Row("256 MB array through a task and back", ("array_s", "median"), "ms", 1e3,
        lambda v: f"{v * 1e3:,.0f} ms", False, "≤ 1.5x one shared-memory copy",
        limit_path=("shm_copy_s", "best"), max_vs_limit=1.5),
]


NOTES = """\
- start-up: median of {startup_runs} fresh processes, timed from before `import` to the first
  task's result (init included, interpreter start-up not).
- empty tasks/s: one batch of N no-op tasks submitted, then one `get` of all; N sized to take
  about {tasks_target_s} s after a warm-up. Limit: the same exchange with nothing else, best of
  {pipe_rounds} rounds of {task_limit_calls}: a pickled task-shaped tuple to one worker process
  over a Unix socket pair, answered by a pickled "done", length-prefixed frames, up to 16 in
  flight (as ember queues on a busy worker), each batch of frames that arrives together
  answered in one write (ember runs 2 workers; this limit has one).
- sync actor call: median over {actor_rounds} rounds of {actor_calls} `get(actor.ping.remote())`;
  limit: a `multiprocessing.Pipe` round trip with a child process that echoes small tuples
  (best of {pipe_rounds} rounds of {pipe_calls}: limits are the machine's best, not its median).
  Both ends of a quick ember exchange poll their socket for up to 50 µs before they block
  (`EMBER_SPIN_US`), which keeps the CPUs awake between calls; the pipe's ends block at once.
  The ember-no-spin column turns the polling off (`EMBER_SPIN_US=0`).
- state API bookkeeping: all that `ember.util.state` records as work runs (the driver's
  per-task `on_finish` hook: a counter per function and a ring of the last 1000 tasks; and the
  worker's last task, which names late output), timed alone, 200,000 times with the driver's
  lock held, as a share of one empty task's time in the row above; the note gives empty
  tasks/s with the hook against it replaced by a no-op (medians of 3 interleaved runs each).
- 256 MB: median of {array_runs} runs of `get(identity.remote(arr))`, a fresh float64 array each
  run, passed by value; Ray copies such an argument into its object store before the task runs
  and stores the returned array there again. Limit: one copy into fresh shared memory
  (`SharedMemory(create=True)` + numpy copy), best of {shm_runs}; most of that is the kernel
  providing fresh pages: the same copy into already-mapped memory takes {mapped_ms:.0f} ms.
"""


def evaluate(row: Row, results: dict[str, dict[str, Any]], limits: dict[str, Any]
             ) -> dict[str, Any]:
    """Ember's number on this row, its speedup over Ray, its ratio to the limit, and the verdict."""
    ember = _get(results.get("ember", {}), *row.path)
    ray = _get(results.get("ray", {}), *row.path)
    limit = _get(limits, *row.limit_path) if row.limit_path else None
    speedup = vs_limit = None
    if ember and ray:
        speedup = ember / ray if row.higher_is_better else ray / ember
    if ember and limit:
        vs_limit = ember / limit
    verdicts: list[bool] = []
    missing = []
    if row.max_value is not None:
        verdicts.append(ember is not None and ember <= row.max_value)
    if row.min_speedup is not None:
        if speedup is None:
            missing.append("ray")
        else:
            verdicts.append(speedup >= row.min_speedup)
    if row.max_vs_limit is not None:
        if vs_limit is None:
            missing.append("limit")
        else:
            verdicts.append(vs_limit <= row.max_vs_limit)
    passed: bool | None  # the protocol's "met": None when a needed number is missing
    if ember is None:
        met, passed = "no (ember failed)", False
    elif not all(verdicts):
        met, passed = "**no**", False
    elif missing:
        met, passed = f"yes ({' and '.join(missing)} not measured)", None
    else:
        met, passed = "yes", True
    return {"ember": ember, "ray": ray, "limit": limit, "speedup": speedup,
            "vs_limit": vs_limit, "met": met, "passed": passed, "target": row.target}


def protocol_rows(frameworks: list[Framework], results: dict[str, dict[str, Any]],
                  limits: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the shared benchmark protocol (see ``benchmarks/report.py``)."""
    rows = []
    for row in ROWS:
        verdict = evaluate(row, results, limits)
        notes = []
        for fw_spec in frameworks:
            if fw_spec.name not in ("ember", "ray"):
                value = _get(results.get(fw_spec.name, {}), *row.path)
                if value is None and row.ember_local_only:
                    continue
                notes.append(f"{fw_spec.name}: {row.fmt(value) if value is not None else 'failed'}")
        if verdict["limit"] is not None:
            notes.append(f"machine limit: {row.fmt(verdict['limit'])}"
                         + (f" (ember / limit {verdict['vs_limit']:.2f}x)"
                            if verdict["vs_limit"] is not None else ""))
        if verdict["passed"] is None:
            notes.append(verdict["met"])
        rows.append({
            "workload": row.title, "unit": row.unit,
            "ember": None if verdict["ember"] is None else verdict["ember"] * row.scale,
            "ray": None if verdict["ray"] is None else verdict["ray"] * row.scale,
            # the limit target, where a row has one, is part of its own target and verdict
            "limit": None if verdict["limit"] is None else verdict["limit"] * row.scale,
            "better": "higher" if row.higher_is_better else "lower",
            "speedup": verdict["speedup"], "target": row.target, "met": verdict["passed"],
            "note": "; ".join(notes),
        })
    return rows


def table(frameworks: list[Framework], results: dict[str, dict[str, Any]],
          limits: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    names = [f.name for f in frameworks]
    header = ["workload", *names, "limit", "ember speedup vs Ray", "ember / limit", "target",
              "met?"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    verdicts = []
    for row in ROWS:
        verdict = evaluate(row, results, limits)
        verdicts.append({"workload": row.title, **verdict})
        cells = [row.title]
        for name in names:
            value = _get(results.get(name, {}), *row.path)
            if value is None and row.ember_local_only and name not in ("ember", "ember-no-spin"):
                cells.append("—")
                continue
            cells.append(row.fmt(value) if value is not None else "failed")
        cells.append(row.fmt(verdict["limit"]) if verdict["limit"] is not None else "—")
        cells.append(f"{verdict['speedup']:.1f}x" if verdict["speedup"] is not None else "—")
        cells.append(f"{verdict['vs_limit']:.2f}x" if verdict["vs_limit"] is not None else "—")
        cells += [row.target, verdict["met"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), verdicts


def _version(module: str) -> str:
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:
        return "not installed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions: a smoke run")
    parser.add_argument("--json", metavar="PATH",
                        help="also write the rows of benchmarks/report.py's protocol here")
    parser.add_argument("--frameworks", metavar="NAMES",
                        help="only these columns, comma-separated (e.g. ember: just ember's "
                             "rows, the state API's cost among them)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one framework's part
    args = parser.parse_args()
    settings = Settings.quick() if args.quick else Settings()

    if args.child:
        if args.child == "limits":
            value = measure_limits(settings)
        else:
            value = measure_framework(next(f for f in FRAMEWORKS if f.name == args.child),
                                      settings)
        print(RESULT_MARKER + json.dumps(value), flush=True)
        return 0

    frameworks = [f for f in FRAMEWORKS if f.available()]
    if args.frameworks:
        wanted = {name.strip() for name in args.frameworks.split(",")}
        unknown = wanted - {f.name for f in FRAMEWORKS}
        if unknown:
            parser.error(f"unknown frameworks {sorted(unknown)} (known: "
                         f"{', '.join(f.name for f in FRAMEWORKS)})")
        frameworks = [f for f in frameworks if f.name in wanted]
    skipped = [f.name for f in FRAMEWORKS if f not in frameworks]
    started = datetime.datetime.now().astimezone()
    results: dict[str, dict[str, Any]] = {}
    for fw_spec in frameworks:
        print(f"[benchmark] running {fw_spec.name} ...", file=sys.stderr, flush=True)
        results[fw_spec.name] = run_framework(fw_spec, settings, args.quick)
        for error in results[fw_spec.name]["errors"]:
            print(f"[benchmark] {fw_spec.name}: {error}", file=sys.stderr)
    print("[benchmark] measuring the machine's limits ...", file=sys.stderr, flush=True)
    limits, stderr = _run_child([__file__, "--child", "limits"]
                                + (["--quick"] if args.quick else []), "limits")
    if limits is None:
        print(f"[benchmark] limits failed: {stderr}", file=sys.stderr)
        limits = {}

    text, verdicts = table(frameworks, results, limits)
    machine = (f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
               f"ember {_version('ember')}, ray {_version('ray')}")
    print(f"ember core benchmark, {started:%Y-%m-%d %H:%M %Z}, {machine}"
          + (" (quick)" if args.quick else ""))
    if skipped:
        print(f"(skipped, not installed: {', '.join(skipped)})")
    print()
    print(text)
    print()
    notes_text = NOTES.format(**asdict(settings), mapped_ms=1e3 * (
        _get(limits, "shm_copy_mapped_s", "best") or float("nan")))
    print(notes_text, end="")
    cost = results.get("ember", {}).get("state_cost")
    if cost:
        print(f"- state API bookkeeping, measured: the hook takes {cost['hook_us']:.3f} µs of an "
              f"empty task's {cost['task_us']:.1f} µs; empty tasks/s with it "
              f"{cost['tasks_per_s_on']:,.0f}, with a no-op in its place "
              f"{cost['tasks_per_s_off']:,.0f} ({cost['ab_percent']:+.1f} %, within run-to-run "
              "noise when small).")
    if BUSY:
        print(f"- warning: other processes kept the CPUs busy before: {', '.join(BUSY)}; "
              "those numbers may be noisy.")

    if args.json:
        notes = [" ".join(item.split()) for item in notes_text.removeprefix("- ").split("\n- ")]
        notes.append(f"{machine}; Ray started with ray.init(num_cpus=2, "
                     "include_dashboard=False); each framework in its own processes, one after "
                     "the other")
        if skipped:
            notes.append(f"skipped, not installed: {', '.join(skipped)}")
        if BUSY:
            notes.append(f"other processes kept the CPUs busy before: {', '.join(BUSY)}; "
                         "those numbers may be noisy")
        for name, result in results.items():
            notes += [f"{name} error: {' '.join(e.split())[-600:]}" for e in result["errors"]]
        report = {
            "benchmark": "core", "rows": protocol_rows(frameworks, results, limits),
            "notes": notes,
            "raw": {"date": started.isoformat(), "machine": machine, "quick": args.quick,
                    "settings": asdict(settings), "frameworks": results, "limits": limits,
                    "verdicts": verdicts, "skipped": skipped, "busy": BUSY},
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 1 if any(r["errors"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
