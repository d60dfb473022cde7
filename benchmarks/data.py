"""ember.data beside Ray Data on the same workloads, in one run.

Run it from the repository root::

    .venv/bin/python benchmarks/data.py            # both frameworks, a few minutes on 2 CPUs
    .venv/bin/python benchmarks/data.py --quick    # smaller inputs

Each framework runs in its own child process (one after the other, so they never compete for the
two cores), with 2 CPUs (Ray: ``ray.init(num_cpus=2, include_dashboard=False)``). Workloads:

- ``map_batches count``: ``range(N).map_batches(fn).count()``;
- ``iter_batches 4096``: iterate ``range(N).map_batches(fn)`` in batches of 4096 rows;
- ``actor pool 1`` / ``actor pool 2``: a class UDF on a pool of 1 and of 2 actors (1 CPU each);
- ``parquet pipeline``: read 16 Parquet files -> map_batches -> write_parquet;
- ``peak RSS 5x budget``: stream a dataset 5x the memory budget (100 MiB) through map_batches and
  count; the number is the peak summed RSS of the process tree, in MiB (lower is better).

It prints one Markdown table: seconds (or MiB) per framework and the ratio Ray / ember (above 1:
ember is faster or smaller).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

BUDGET = 100 * 1024 * 1024


def add_one(batch: dict[str, Any]) -> dict[str, Any]:
    return {"id": batch["id"] + 1}


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
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for p in [self._me, *self._me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except Exception:  # a process that just exited: skip it
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.05)

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


def run_framework(name: str, n: int, workdir: str) -> dict[str, float]:
    if name == "ember":
        import ember

        ember.init(num_cpus=2)
        data = ember.data
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

    results: dict[str, float] = {}
    results["map_batches count"] = timed(lambda: data.range(n).map_batches(add_one).count())

    def iterate() -> None:
        for _ in data.range(n).map_batches(add_one).iter_batches(batch_size=4096):
            pass

    results["iter_batches 4096"] = timed(iterate)
    for size in (1, 2):
        results[f"actor pool {size}"] = timed(
            lambda size=size: data.range(n // 2).map_batches(Scale, **pool(size)).count())
    src, dst = os.path.join(workdir, "in"), os.path.join(workdir, f"out-{name}")
    results["parquet pipeline"] = timed(
        lambda: data.read_parquet(src).map_batches(add_one).write_parquet(dst))

    if name == "ember":
        data.DataContext.update(memory_budget_bytes=BUDGET)
    else:
        from ray.data import ExecutionResources

        ctx.execution_options.resource_limits = ExecutionResources(object_store_memory=BUDGET)
    rows = 5 * BUDGET // (8 * 1024)  # rows of 1024 float64: 5x the budget in total
    with PeakRSS() as rss:
        data.range_tensor(rows, shape=(1024,)).map_batches(
            lambda b: {"data": b["data"] * 2.0}, batch_size=64).count()
    results["peak RSS 5x budget (MiB)"] = rss.peak / 2**20
    return results


def write_inputs(workdir: str, n: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.join(workdir, "in"))
    per = n // 16
    for i in range(16):
        ids = np.arange(i * per, (i + 1) * per, dtype=np.int64)
        pq.write_table(pa.table({"id": ids}), os.path.join(workdir, "in", f"part-{i:02d}.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--framework", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = 200_000 if args.quick else 2_000_000
    if args.framework:
        print(json.dumps(run_framework(args.framework, n, args.workdir)))
        return
    workdir = tempfile.mkdtemp(prefix="ember-data-bench-")
    try:
        write_inputs(workdir, n)
        columns: dict[str, dict[str, float]] = {}
        for framework in ("ember", "ray"):
            cmd = [sys.executable, __file__, "--framework", framework, "--workdir", workdir]
            if args.quick:
                cmd.append("--quick")
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                print(f"{framework} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                continue
            columns[framework] = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nN = {n:,} rows, 2 CPUs; seconds unless marked; ratio = Ray / ember\n")
    print("| workload | ember | Ray Data | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for workload in columns.get("ember", {}):
        e = columns["ember"][workload]
        r = columns.get("ray", {}).get(workload)
        ratio = f"{r / e:.2f}x" if r is not None and e > 0 else "-"
        r_text = f"{r:.2f}" if r is not None else "-"
        print(f"| {workload} | {e:.2f} | {r_text} | {ratio} |")


if __name__ == "__main__":
    main()
