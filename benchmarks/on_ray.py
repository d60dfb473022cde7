"""ember on the ray backend beside the same workload written for Ray directly: what ember's layer
costs on a Ray cluster.

Run it from the repository root (``make bench`` runs it through ``benchmarks/report.py``)::

    .venv/bin/python benchmarks/on_ray.py            # several minutes on 2 CPUs
    .venv/bin/python benchmarks/on_ray.py --quick    # smaller inputs: a smoke run
    .venv/bin/python benchmarks/on_ray.py --json /tmp/on_ray.json   # also the report's JSON

The ``ember`` column is ember on Ray (``ember.init(backend="ray", num_cpus=2)``), the ``Ray``
column the same workload on Ray's own libraries (``ray.init(num_cpus=2)``); each runs in a child
process of its own, one after the other. Workloads (seconds unless marked):

- ``data pipeline``: read 16 Parquet files (256 MiB of columns; 16 MiB with ``--quick``) ->
  ``map_batches`` (a function, tasks) -> ``map_batches`` (a class on a pool of 1 actor of
  1 CPU: Ray Data 2.60 hangs with a pool of 2 on 2 CPUs, "cluster resources are not enough to
  run any task") -> ``write_parquet``; ``ember.data`` vs Ray Data;
- ``train run with checkpoints``: ``TorchTrainer`` with 2 workers training an MLP (~8 MiB of
  weights) for 40 steps on random data, rank 0 saving a checkpoint to a local folder every 10
  steps; ``ember.train`` vs Ray Train, ``fit()`` timed from the call to its return;
- ``serve requests/s``: a trivial deployment behind each framework's HTTP proxy, 16
  connections in a closed loop for 5 s (1.5 s with ``--quick``), driven by the load generator of
  ``benchmarks/serve.py`` in its own process; ember serve vs Ray Serve.

Targets: ember on Ray takes at most 1.15x Ray's time (speedup >= 0.87) and serves at least
0.85x its requests/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _procs

HERE = Path(__file__).resolve().parent
RESULT_MARKER = "BENCH-RESULT "
CHILD_TIMEOUT_S = 600.0
FRAMEWORKS = ("ember", "ray")
MAX_TIME_RATIO = 1.15
MIN_RPS_RATIO = 0.85


@dataclass(frozen=True)
class Sizes:
    parquet_rows_per_file: int  # 16 files of one int64 and 7 float64 columns (64 B a row)
    train_steps: int
    serve_s: float

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        return cls(2**14, 20, 1.5) if quick else cls(2**18, 40, 5.0)


def add_one(batch: dict[str, Any]) -> dict[str, Any]:
    return {name: column + 1 for name, column in batch.items()}


class Scale:
    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {name: column * 3 for name, column in batch.items()}


def train_loop(config: dict[str, Any]) -> None:
    """Framework-neutral: ``config['api']`` names the module with ``report``, ``get_context``,
    ``Checkpoint``; ``config['torch_api']`` the one with ``prepare_model``."""
    import importlib

    import torch

    api = importlib.import_module(config["api"])
    torch_api = importlib.import_module(config["torch_api"])
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch_api.prepare_model(torch.nn.Sequential(
        torch.nn.Linear(256, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 768)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 256), torch.randn(64, 768)
    rank = api.get_context().get_world_rank()
    for step in range(1, config["steps"] + 1):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            folder = tempfile.mkdtemp(prefix="bench-on-ray-")
            if rank == 0:
                torch.save(model.state_dict(), os.path.join(folder, "model.pt"))
            api.report({"step": step, "loss": loss.item()},
                       checkpoint=api.Checkpoint.from_directory(folder) if rank == 0 else None)
            shutil.rmtree(folder, ignore_errors=True)


def _emit(key: str, value: float) -> None:
    print(RESULT_MARKER + json.dumps({"workload": key, "value": value}), flush=True)


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_framework(name: str, sizes: Sizes, workdir: str) -> None:
    """One framework, in this (child) process: each workload's number as soon as it is known."""
    src = os.path.join(workdir, "in")
    storage = os.path.join(workdir, f"runs-{name}")
    if name == "ember":
        import ember
        from ember import serve
        from ember.train import RunConfig, ScalingConfig
        from ember.train.torch import TorchTrainer

        ember.init(backend="ray", num_cpus=2, include_dashboard=False, log_to_driver=False)
        data: Any = ember.data
        data.DataContext.update(enable_progress_bars=False)
        pool: dict[str, Any] = {"compute": data.ActorPoolStrategy(size=1), "num_cpus": 1}
        apis = {"api": "ember.train", "torch_api": "ember.train.torch"}
    else:
        import ray
        from ray import serve
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        data = ray.data
        data.DataContext.get_current().enable_progress_bars = False
        pool = {"concurrency": 1, "num_cpus": 1}
        apis = {"api": "ray.train", "torch_api": "ray.train.torch"}
    try:
        def pipeline() -> None:
            data.read_parquet(src).map_batches(add_one).map_batches(Scale, **pool).write_parquet(
                os.path.join(workdir, f"out-{name}"))

        _emit("data pipeline", _timed(pipeline))

        def fit() -> None:
            result = TorchTrainer(
                train_loop, train_loop_config={"steps": sizes.train_steps, **apis},
                scaling_config=ScalingConfig(num_workers=2),
                run_config=RunConfig(name=f"bench-{name}", storage_path=storage)).fit()
            if result.error is not None:
                raise result.error

        _emit("train run with checkpoints", _timed(fit))

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        serve.start(http_options={"host": "127.0.0.1", "port": port})

        @serve.deployment(max_ongoing_requests=100, ray_actor_options={"num_cpus": 0})
        class Trivial:
            async def __call__(self, request: Any) -> str:
                return "ok"

        serve.run(Trivial.bind(), name="trivial", route_prefix="/trivial")
        load = _load(kind="closed", port=port, path="/trivial", concurrency=16,
                     duration_s=sizes.serve_s, warmup_s=min(1.0, sizes.serve_s))
        if load.get("errors"):
            raise RuntimeError(f"{load['errors']} requests failed")
        _emit("serve requests/s", float(load["per_s"]))
        serve.shutdown()
    finally:
        if name == "ember":
            ember.shutdown()
        else:
            ray.shutdown()


def _load(**spec: Any) -> dict[str, Any]:
    """``benchmarks/serve.py``'s load generator, in a process of its own."""
    out = subprocess.run([sys.executable, str(HERE / "serve.py"), "--load", json.dumps(spec)],
                         capture_output=True, text=True, timeout=300, check=False)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return dict(json.loads(line[len(RESULT_MARKER):]))
    raise RuntimeError(f"load generator failed ({out.returncode}): {out.stderr[-3000:]}")


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
# The parent: each framework in its own child, then the table.

WORKLOADS = [("data pipeline", "s", "lower"), ("train run with checkpoints", "s", "lower"),
             ("serve requests/s", "req/s", "higher")]


def protocol_rows(columns: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    rows = []
    for key, unit, better in WORKLOADS:
        ember, ray = columns.get("ember", {}).get(key), columns.get("ray", {}).get(key)
        speedup = None
        if ember is not None and ray is not None and ember > 0 and ray > 0:
            speedup = ember / ray if better == "higher" else ray / ember
        if better == "higher":
            target = f">= {MIN_RPS_RATIO}x Ray Serve's req/s"
            met = None if speedup is None else speedup >= MIN_RPS_RATIO
        else:
            target = f"<= {MAX_TIME_RATIO}x Ray's time"
            met = None if speedup is None else speedup >= 1 / MAX_TIME_RATIO
        if ember is None:
            met = False
        note = ("ember on the ray backend vs Ray's own library"
                + ("" if ember is not None else "; ember failed")
                + ("" if ray is not None else "; Ray failed"))
        rows.append({"workload": f"{key} (ember on Ray)", "unit": unit, "ember": ember,
                     "ray": ray, "better": better, "speedup": speedup, "target": target,
                     "met": met, "note": note})
    return rows


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs: a smoke run")
    parser.add_argument("--json", metavar="PATH",
                        help="also write the rows of benchmarks/report.py's protocol here")
    parser.add_argument("--framework", help=argparse.SUPPRESS)  # internal: run one framework
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = Sizes.of(args.quick)
    if args.framework:
        run_framework(args.framework, sizes, args.workdir)
        return 0

    workdir = tempfile.mkdtemp(prefix="ember-on-ray-bench-")
    columns: dict[str, dict[str, float]] = {}
    errors: list[str] = []
    busy: list[str] = []
    try:
        parquet_bytes = write_inputs(workdir, sizes)
        for framework in FRAMEWORKS:
            print(f"[on_ray] running {framework} ...", file=sys.stderr, flush=True)
            _procs.wait_for_quiet_cpus(framework, busy)
            stdout, stderr, code = _procs.run_child(
                [__file__, "--framework", framework, "--workdir", workdir]
                + (["--quick"] if args.quick else []), CHILD_TIMEOUT_S)
            found = columns.setdefault(framework, {})
            for line in stdout.splitlines():
                if line.startswith(RESULT_MARKER):
                    value = json.loads(line[len(RESULT_MARKER):])
                    found[value["workload"]] = float(value["value"])
                    print(f"[on_ray] {framework}: {value['workload']}: {value['value']:.2f}",
                          file=sys.stderr, flush=True)
            if code != 0 or len(found) < len(WORKLOADS):
                errors.append(f"{framework} failed (exit {code}): "
                              + " ".join(stderr.split())[-800:])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rows = protocol_rows(columns)
    notes = [f"the Parquet input is 16 files, {parquet_bytes / 2**20:,.0f} MiB in memory; "
             f"train: {sizes.train_steps} steps, a checkpoint every 10; serve: 16 connections "
             f"for {sizes.serve_s:g} s",
             "both columns run on Ray 2.60 with 2 CPUs (ray.init(num_cpus=2)), one after the "
             "other, each in its own process",
             *(f"the CPUs were busy before {what} started" for what in busy), *errors]
    print("\nember on the ray backend beside Ray's own libraries; speedup = Ray / ember for "
          "times, ember / Ray for req/s" + (" (quick)" if args.quick else "") + "\n")
    print("| workload | ember on Ray | Ray | speedup | target | met |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    for row in rows:
        speedup = "-" if row["speedup"] is None else f"{row['speedup']:.2f}x"
        met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
        print(f"| {row['workload']} ({row['unit']}) | {_fmt(row['ember'])} | "
              f"{_fmt(row['ray'])} | {speedup} | {row['target']} | {met} |")
    print()
    for note in notes:
        print(f"- {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "on_ray", "rows": rows, "notes": notes, "raw": columns}, f,
                      indent=2)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
