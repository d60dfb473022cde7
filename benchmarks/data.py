"""ember.data beside Ray Data on the same workloads, in one run.

Run it from the repository root (``make bench`` runs it through ``benchmarks/report.py``)::

    .venv/bin/python benchmarks/data.py            # both frameworks, several minutes on 2 CPUs
    .venv/bin/python benchmarks/data.py --quick    # smaller inputs: a smoke run
    .venv/bin/python benchmarks/data.py --json /tmp/data.json   # also write the report's JSON

Each framework runs in its own child processes (one after the other, so they never compete for
the two cores), with 2 CPUs (Ray: ``ray.init(num_cpus=2, include_dashboard=False)``). Workloads,
each timed on its own (seconds unless marked):

- ``start-up + first pipeline``: from before ``import`` to the end of
  ``range(1000).map_batches(fn).count()``, init included (interpreter start-up not);
- ``map_batches count``: ``range(N).map_batches(fn).count()``;
- ``iter_batches 4096``: iterate ``range(N).map_batches(fn)`` in batches of 4096 rows;
- ``actor pool 1`` / ``actor pool 2``: a class UDF on a pool of 1 and of 2 actors (1 CPU each:
  a pool of 2 takes both CPUs, where Ray Data 2.60 has been seen to hang);
- ``parquet pipeline``: read 16 Parquet files (1 GiB of columns; 32 MiB with ``--quick``) ->
  map_batches -> write_parquet;
- ``parquet iter_batches 4096``: iterate ``read_parquet`` of the same 16 files in batches of
  4096 rows (numpy);
- ``peak RSS growth``: stream a dataset 5x the memory budget (100 MiB) through map_batches and
  count; the number is how far the summed RSS of the process tree rose above its level just
  before, in MiB.

The limit column (issue 20) is the same work with no framework, in one process, best of
``LIMIT_ROUNDS`` rounds (``limit_workloads``): numpy on the same batches for the range
workloads; for the Parquet ones ``pyarrow.dataset`` (its threads use both cores): the files
scanned as record batches, each mapped by the same numpy function and written by
``pyarrow.dataset.write_dataset``, and a plain ``to_batches(batch_size=4096)`` iterator turned
into numpy. Targets: the Parquet pipeline at most 1.3x the limit's time, Parquet
``iter_batches`` at most 1.2x. On those two rows ember and Ray Data run the same number of
rounds as the limit, each reported by its best (the first round of a process pays its first
imports, pandas by way of ``pyarrow.dataset`` among them, which the limit pays before timing).

A workload that does not finish within its time limit counts as hung: its child is killed with
everything it started, and a fresh child runs the remaining workloads. The printed Markdown table
(and the JSON) give ember, Ray Data, and the speedup Ray / ember (above 1: ember is faster or
smaller).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import _procs

BUDGET = 100 * 1024 * 1024
RESULT_MARKER = "BENCH-RESULT "
READY = "(ready)"
FRAMEWORKS = ("ember", "ray")


@dataclass(frozen=True)
class Workload:
    key: str
    unit: str
    target: str
    throughput: bool = True  # a time, judged by the >= 2x Ray Data target
    max_vs_limit: float | None = None  # ember's time / the limit's (checked by report.py)


WORKLOADS = [
    Workload("start-up + first pipeline", "s", ">= 2x faster than Ray Data"),
    Workload("map_batches count", "s", ">= 2x faster than Ray Data"),
    Workload("iter_batches 4096", "s", ">= 2x faster than Ray Data"),
    Workload("actor pool 1", "s", ">= 2x faster than Ray Data"),
    Workload("actor pool 2", "s", "finishes; >= 2x faster than Ray Data"),
    Workload("parquet pipeline", "s", ">= 2x faster than Ray Data", max_vs_limit=1.3),
    Workload("parquet iter_batches 4096", "s", ">= 2x faster than Ray Data", max_vs_limit=1.2),
    Workload("peak RSS growth, 5x-budget dataset", "MiB",
             f"<= the {BUDGET // 2**20} MiB memory budget", throughput=False),
]


@dataclass(frozen=True)
class Sizes:
    rows: int  # N for the range workloads
    parquet_rows_per_file: int  # 16 files of one int64 and 7 float64 columns (64 B a row)
    workload_timeout_s: float
    rounds: int  # of the limit, and of each framework on the rows the limit judges

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(200_000, 2**15, 120.0, QUICK_LIMIT_ROUNDS)
        return cls(2_000_000, 2**20, 600.0, LIMIT_ROUNDS)


def add_one(batch: dict[str, Any]) -> dict[str, Any]:
    return {name: column + 1 for name, column in batch.items()}


class Scale:
    def __init__(self) -> None:
        self.k = 3

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {"id": batch["id"] * self.k}


class PeakRSS:
    """Samples the summed RSS of this process and its descendants every 50 ms."""

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self.start = self._sample()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = 0
        for p in [self._me, *self._me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except Exception:  # a process that just exited: skip it
                pass
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._sample())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_rounds(fn: Callable[[], Any], rounds: int,
                 before: Callable[[], Any] | None = None) -> list[float]:
    """Seconds of each of ``rounds`` calls of ``fn`` (``before`` runs untimed ahead of each)."""
    times = []
    for _ in range(rounds):
        if before is not None:
            before()
        times.append(timed(fn))
    return times


def _emit(key: str, value: float, **extra: Any) -> None:
    print(RESULT_MARKER + json.dumps({"workload": key, "value": value, **extra}), flush=True)


def _emit_best(key: str, rounds: int, fn: Callable[[], Any],
               before: Callable[[], Any] | None = None) -> None:
    """A workload compared with a limit: its best of ``rounds``, as the limit is measured (one
    cold run against the limit's warm best measured a process's first imports, not the work)."""
    times = timed_rounds(fn, rounds, before)
    _emit(key, min(times), rounds=times)


def run_framework(name: str, sizes: Sizes, workdir: str, skip: int) -> None:
    """Run the workloads from index ``skip`` on, printing each result as soon as it is known."""
    start = time.perf_counter()
    if name == "ember":
        import ember

        ember.init(num_cpus=2)
        data: Any = ember.data
        data.DataContext.update(enable_progress_bars=False)

        def pool(size: int) -> dict[str, Any]:
            return {"compute": data.ActorPoolStrategy(size=size), "num_cpus": 1}
    else:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        data = ray.data
        ctx = data.DataContext.get_current()
        ctx.enable_progress_bars = False

        def pool(size: int) -> dict[str, Any]:
            return {"concurrency": size, "num_cpus": 1}

    data.range(1000).map_batches(add_one).count()
    if skip == 0:
        _emit(WORKLOADS[0].key, time.perf_counter() - start)
    else:  # a fresh child after a hang: the next workload's time limit starts now
        _emit(READY, 0.0)

    n = sizes.rows

    def iterate() -> None:
        for _ in data.range(n).map_batches(add_one).iter_batches(batch_size=4096):
            pass

    def stream_5x_budget() -> None:
        if name == "ember":
            data.DataContext.update(memory_budget_bytes=BUDGET)
        else:
            from ray.data import ExecutionResources

            ctx.execution_options.resource_limits = ExecutionResources(
                object_store_memory=BUDGET)
        rows = 5 * BUDGET // (8 * 1024)  # rows of 1024 float64: 5x the budget in total
        with PeakRSS() as rss:
            data.range_tensor(rows, shape=(1024,)).map_batches(
                lambda b: {"data": b["data"] * 2.0}, batch_size=64).count()
        _emit(WORKLOADS[-1].key, (rss.peak - rss.start) / 2**20,
              peak_mib=rss.peak / 2**20, before_mib=rss.start / 2**20)

    src, dst = os.path.join(workdir, "in"), os.path.join(workdir, f"out-{name}")
    rounds = sizes.rounds

    def iterate_parquet() -> None:
        for _ in data.read_parquet(src).iter_batches(batch_size=4096):
            pass

    steps: list[Callable[[], Any]] = [
        lambda: None,  # start-up: done above
        lambda: _emit(WORKLOADS[1].key,
                      timed(lambda: data.range(n).map_batches(add_one).count())),
        lambda: _emit(WORKLOADS[2].key, timed(iterate)),
        lambda: _emit(WORKLOADS[3].key,
                      timed(lambda: data.range(n // 2).map_batches(Scale, **pool(1)).count())),
        lambda: _emit(WORKLOADS[4].key,
                      timed(lambda: data.range(n // 2).map_batches(Scale, **pool(2)).count())),
        lambda: _emit_best(WORKLOADS[5].key, rounds, lambda: data.read_parquet(src).map_batches(
            add_one).write_parquet(dst), before=lambda: shutil.rmtree(dst, ignore_errors=True)),
        lambda: _emit_best(WORKLOADS[6].key, rounds, iterate_parquet),
        stream_5x_budget,  # last: it lowers the memory budget
    ]
    for step in steps[max(skip, 1):]:
        step()


# --------------------------------------------------------------------------------------------
# The limit: the same work in one process with no framework.

LIMIT_ROUNDS = 3
QUICK_LIMIT_ROUNDS = 2


def limit_workloads(sizes: Sizes, workdir: str) -> dict[str, Callable[[], Any]]:
    """Workload key -> the same work done with numpy and pyarrow alone, in this process."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.dataset as pads

    n = sizes.rows
    src = os.path.join(workdir, "in")

    def batches(rows: int, size: int, fn: Callable[[dict[str, Any]], Any]) -> int:
        done = 0
        for lo in range(0, rows, size):
            done += len(fn({"id": np.arange(lo, min(lo + size, rows))})["id"])
        return done

    def parquet_pipeline() -> None:
        dataset = pads.dataset(src, format="parquet")
        schema = dataset.schema

        def mapped() -> Any:
            for batch in dataset.to_batches(use_threads=True):
                out = add_one({name: column.to_numpy() for name, column
                               in zip(batch.schema.names, batch.columns, strict=True)})
                yield pa.RecordBatch.from_arrays(list(out.values()), schema=schema)

        # as many files as the input, so that pyarrow's threads write them side by side
        pads.write_dataset(mapped(), os.path.join(workdir, "out-limit"), schema=schema,
                           format="parquet", use_threads=True,
                           existing_data_behavior="delete_matching",
                           max_rows_per_file=sizes.parquet_rows_per_file,
                           max_rows_per_group=sizes.parquet_rows_per_file)

    def parquet_iter() -> None:
        for batch in pads.dataset(src, format="parquet").to_batches(batch_size=4096,
                                                                     use_threads=True):
            {name: column.to_numpy() for name, column
             in zip(batch.schema.names, batch.columns, strict=True)}

    return {
        "map_batches count": lambda: batches(n, 1024, add_one),
        "iter_batches 4096": lambda: batches(n, 4096, add_one),
        "actor pool 1": lambda: batches(n // 2, 1024, Scale()),
        "actor pool 2": lambda: batches(n // 2, 1024, Scale()),
        "parquet pipeline": parquet_pipeline,
        "parquet iter_batches 4096": parquet_iter,
    }


def run_limits(sizes: Sizes, workdir: str, rounds: int) -> dict[str, Any]:
    """Each limit workload's best time of ``rounds`` (after one untimed warm-up of each)."""
    results: dict[str, Any] = {}
    for key, work in limit_workloads(sizes, workdir).items():
        work()
        times = timed_rounds(work, rounds)
        results[key] = {"best": min(times), "rounds": times}
    shutil.rmtree(os.path.join(workdir, "out-limit"), ignore_errors=True)
    return results


def measure_limits(sizes: Sizes, workdir: str, quick: bool) -> tuple[dict[str, Any], list[str]]:
    """The limits, from a child process of their own; (results, errors)."""
    cmd = [__file__, "--limits", "--workdir", workdir] + (["--quick"] if quick else [])
    stdout, stderr, code = _procs.run_child(cmd, 2 * sizes.workload_timeout_s)
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):]), []
    return {}, [f"limit failed (exit {code}): " + " ".join(stderr.split())[-800:]]


def write_inputs(workdir: str, sizes: Sizes) -> int:
    """16 Parquet files; returns their in-memory size in bytes."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.join(workdir, "in"))
    per = sizes.parquet_rows_per_file
    total = 0
    for i in range(16):
        values = np.random.default_rng(i).random((per, 7))
        table = pa.table({"id": np.arange(i * per, (i + 1) * per, dtype=np.int64),
                          **{f"x{j}": values[:, j] for j in range(7)}})
        total += table.nbytes
        pq.write_table(table, os.path.join(workdir, "in", f"part-{i:02d}.parquet"))
    return total


# --------------------------------------------------------------------------------------------
# The parent: one framework at a time, each workload under a time limit.


def _stop_session(proc: subprocess.Popen[str], grace_s: float) -> None:
    """End a child and everything it started (Ray's daemons): wait ``grace_s``, then kill."""
    start = time.monotonic()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    _procs.reap_session(proc.pid, max(0.0, grace_s - (time.monotonic() - start)), say=False)
    proc.wait()


def measure(framework: str, sizes: Sizes, workdir: str, quick: bool
            ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Results per workload key (a ``hung`` entry for a workload over its limit), and errors."""
    results: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    skip = 0
    crashes = 0  # in a row: a framework that cannot even start is given up after two
    while skip < len(WORKLOADS):
        cmd = [sys.executable, __file__, "--framework", framework, "--workdir", workdir,
               "--skip", str(skip)] + (["--quick"] if quick else [])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        lines: queue.Queue[str | None] = queue.Queue()
        stderr_tail: list[str] = []

        def pump_out(stream: Any = proc.stdout, lines: queue.Queue[str | None] = lines) -> None:
            for line in stream:
                lines.put(line)
            lines.put(None)

        def pump_err(stream: Any = proc.stderr, tail: list[str] = stderr_tail) -> None:
            for line in stream:
                tail.append(line)
                del tail[:-40]

        readers = [threading.Thread(target=pump_out, daemon=True),
                   threading.Thread(target=pump_err, daemon=True)]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + sizes.workload_timeout_s
        ended = False
        while skip < len(WORKLOADS):
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:  # the workload at `skip` is over its time limit
                key = WORKLOADS[skip].key
                results[key] = {"value": None, "hung": sizes.workload_timeout_s}
                print(f"[data] {framework}: {key} did not finish in "
                      f"{sizes.workload_timeout_s:.0f} s; killing it", file=sys.stderr,
                      flush=True)
                skip += 1
                break
            if line is None:
                ended = True
                break
            if line.startswith(RESULT_MARKER):
                value = json.loads(line[len(RESULT_MARKER):])
                key = value.pop("workload")
                if key == READY:
                    deadline = time.monotonic() + sizes.workload_timeout_s
                    continue
                results[key] = value
                print(f"[data] {framework}: {key}: {value['value']:.2f}", file=sys.stderr,
                      flush=True)
                skip = 1 + next(i for i, w in enumerate(WORKLOADS) if w.key == key)
                deadline = time.monotonic() + sizes.workload_timeout_s
        _stop_session(proc, 30.0 if ended else 0.0)
        for reader in readers:
            reader.join(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        if ended and (proc.returncode != 0 or skip < len(WORKLOADS)):
            key = WORKLOADS[skip].key if skip < len(WORKLOADS) else "the end"
            errors.append(f"{framework} failed at {key} (exit {proc.returncode}): "
                          + " ".join("".join(stderr_tail).split())[-800:])
            print(f"[data] {framework} failed at {key}:\n{''.join(stderr_tail)}",
                  file=sys.stderr, flush=True)
            crashes += 1
            if crashes >= 2:
                break
            if skip < len(WORKLOADS):
                results[key] = {"value": None, "error": True}
            skip += 1
        else:
            crashes = 0
    return results, errors


def protocol_rows(columns: dict[str, dict[str, dict[str, Any]]],
                  limits: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    rows = []
    for w in WORKLOADS:
        limit = (limits or {}).get(w.key, {}).get("best")
        e_entry = columns["ember"].get(w.key, {})
        r_entry = columns["ray"].get(w.key, {})
        e, r = e_entry.get("value"), r_entry.get("value")
        speedup = r / e if e is not None and r is not None and e > 0 else None
        notes = []
        for name, entry in (("ember", e_entry), ("Ray Data", r_entry)):
            if "hung" in entry:
                notes.append(f"{name} did not finish in {entry['hung']:.0f} s (killed)")
            elif entry.get("error") or not entry:
                notes.append(f"{name} failed before this workload")
            if "peak_mib" in entry:
                notes.append(f"{name}: {entry['before_mib']:.0f} MiB before, "
                             f"{entry['peak_mib']:.0f} MiB at the peak")
        met: bool | None
        if e is None:
            met = False
        elif not w.throughput:
            met = e <= BUDGET / 2**20
        elif speedup is not None:
            met = speedup >= 2.0
        elif "hung" in r_entry:
            met = True  # ember finished where Ray Data hung
        else:
            met = None
        rows.append({"workload": w.key, "unit": w.unit, "ember": e, "ray": r,
                     "better": "lower", "speedup": speedup, "target": w.target, "met": met,
                     "note": "; ".join(notes), "limit": limit,
                     "max_vs_limit": w.max_vs_limit})
    return rows


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.2g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs: a smoke run")
    parser.add_argument("--json", metavar="PATH",
                        help="also write the rows of benchmarks/report.py's protocol here")
    parser.add_argument("--framework", help=argparse.SUPPRESS)  # internal: run one framework
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--skip", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--limits", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=(*FRAMEWORKS, "limit"),
                        help="run one framework only (or only the limit: no framework)")
    args = parser.parse_args()
    sizes = Sizes.of(args.quick)
    if args.limits:
        rounds = QUICK_LIMIT_ROUNDS if args.quick else LIMIT_ROUNDS
        print(RESULT_MARKER + json.dumps(run_limits(sizes, args.workdir, rounds)), flush=True)
        return 0
    if args.framework:
        run_framework(args.framework, sizes, args.workdir, args.skip)
        return 0

    workdir = tempfile.mkdtemp(prefix="ember-data-bench-")
    columns: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in FRAMEWORKS}
    limits: dict[str, Any] = {}
    errors: list[str] = []
    try:
        parquet_bytes = write_inputs(workdir, sizes)
        for framework in FRAMEWORKS:
            if args.only not in (None, framework):
                continue
            print(f"[data] running {framework} ...", file=sys.stderr, flush=True)
            columns[framework], framework_errors = measure(framework, sizes, workdir,
                                                           args.quick)
            errors += framework_errors
        if args.only in (None, "limit"):
            print("[data] running the limit (pyarrow + numpy, no framework) ...",
                  file=sys.stderr, flush=True)
            limits, limit_errors = measure_limits(sizes, workdir, args.quick)
            errors += limit_errors
            for key, value in limits.items():
                print(f"[data] limit: {key}: {value['best']:.2f}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rows = protocol_rows(columns, limits)
    notes = [f"N = {sizes.rows:,} rows for the range workloads; the Parquet input is 16 files, "
             f"{parquet_bytes / 2**20:,.0f} MiB in memory (one int64 and 7 float64 columns)",
             "2 CPUs for each framework, one after the other; Ray started with "
             "ray.init(num_cpus=2, include_dashboard=False)",
             "start-up: from before the import to the end of a first 1000-row pipeline, init "
             "included; interpreter start-up not included",
             f"a workload over {sizes.workload_timeout_s:.0f} s counts as hung: its child is "
             "killed and a fresh one runs the rest",
             f"limit: the same work with no framework, one process, best of "
             f"{QUICK_LIMIT_ROUNDS if args.quick else LIMIT_ROUNDS} rounds: numpy over the same "
             "batches (range workloads: arange blocks of 1024 rows, 4096 for iter_batches); "
             "Parquet: pyarrow.dataset to_batches (pyarrow's threads) -> the same numpy "
             "add_one -> pyarrow.dataset.write_dataset (16 files, threads), and a plain "
             "to_batches(batch_size=4096) iterator turned into numpy",
             f"parquet pipeline and parquet iter_batches 4096: ember and Ray Data also best of "
             f"{sizes.rounds} rounds, as the limit; the other rows: one run each",
             *errors]
    from report import limit_verdict, merge_verdicts  # the report's own check of limit targets

    print("\nember.data beside Ray Data and the limit (no framework); seconds unless marked; "
          "speedup = Ray / ember" + (" (quick)" if args.quick else "") + "\n")
    print("| workload | ember | Ray Data | limit | speedup | ember / limit | target | met |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for row in rows:
        speedup = "-" if row["speedup"] is None else f"{row['speedup']:.2f}x"
        ratio, limit_target, limit_met = limit_verdict(row["ember"], row["limit"],
                                                       row["max_vs_limit"], None)
        target, met_value = merge_verdicts(row["target"], row["met"], limit_target, limit_met)
        met = {True: "yes", False: "**no**", None: "-"}[met_value]
        print(f"| {row['workload']} ({row['unit']}) | {_fmt(row['ember'])} | "
              f"{_fmt(row['ray'])} | {_fmt(row['limit'])} | {speedup} | "
              f"{'-' if ratio is None else f'{ratio:.2f}x'} | {target} | {met} |")
    print()
    for row in rows:
        if row["note"]:
            print(f"- {row['workload']}: {row['note']}")
    for note in notes:
        print(f"- {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "data", "rows": rows, "notes": notes, "raw": columns,
                       "limits": limits}, f, indent=2)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
