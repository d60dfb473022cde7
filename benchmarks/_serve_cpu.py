"""CPU time per request of serve's trivial endpoint: ember's processes, and the bare app.

Not a benchmark of its own (``report.py`` skips ``_`` files): a profiling aid for issue 20.
On a shared machine requests/s follow the other jobs' load; CPU seconds per request move far
less. Run from the repository root (``wrk`` and ``psutil`` needed)::

    .venv/bin/python benchmarks/_serve_cpu.py                 # 5 rounds of 3 s, each framework
    .venv/bin/python benchmarks/_serve_cpu.py --rounds 3 --seconds 5

Each round runs ``wrk -t1 -c16`` against ember's trivial deployment (the one ``serve.py``
measures, in a runtime of its own) and then against the bare Starlette app on uvicorn
(``serve.py --bare-server``), alternately, so that both see the same load; a round reports
requests/s, p99, and the CPU microseconds per request of every process that used any: for
ember the proxy, the replica, the driver and the rest of the runtime. The table gives each
column's median over the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import psutil
import serve as serve_bench

HERE = os.path.dirname(os.path.abspath(__file__))


def wrk(url: str, seconds: int, concurrency: int) -> tuple[int, float, float]:
    """(requests, requests/s, p99 ms) of one wrk run."""
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    parsed = serve_bench.parse_wrk(out)
    return int(parsed["requests"]), float(parsed["per_s"]), float(parsed["p99_ms"])


def cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:  # gone meanwhile
            continue
        seconds[proc.pid] = times.user + times.system
    return seconds


def measure(url: str, procs: list[psutil.Process], names: dict[int, str], seconds: int,
            concurrency: int) -> dict[str, float]:
    before = cpu_seconds(procs)
    n, per_s, p99 = wrk(url, seconds, concurrency)
    after = cpu_seconds(procs)
    row = {"req/s": per_s, "p99 ms": p99, "cpu us/req": 0.0}
    for pid, used in after.items():
        us = (used - before.get(pid, used)) * 1e6 / max(n, 1)
        row["cpu us/req"] += us
        name = names.get(pid, "rest of the runtime")
        row[name] = row.get(name, 0.0) + us
    return row


def ember_round_maker(seconds: int, concurrency: int) -> tuple[Any, Any]:
    """Start ember with the trivial deployment; returns (one round, shutdown)."""
    import ember
    from ember import serve

    ember.init(num_cpus=2)
    port = serve.start(http_options={"host": "127.0.0.1", "port": 0})
    trivial = serve_bench.build_deployments(serve, os.devnull)["trivial"]
    serve.run(trivial.bind(), name="trivial", route_prefix="/trivial")
    url = f"http://127.0.0.1:{port}/trivial"
    me = psutil.Process()
    procs = [me, *me.children(recursive=True)]
    names = {me.pid: "driver"}
    for proc in procs[1:]:
        with contextlib.suppress(psutil.Error):
            if any(c.laddr and c.laddr.port == port for c in proc.net_connections()):
                names[proc.pid] = "proxy"
    before = cpu_seconds(procs)
    wrk(url, 1, concurrency)  # a warm-up, which also finds the replica: the busiest other one
    after = cpu_seconds(procs)
    others = [pid for pid in after if pid not in names]
    names[max(others, key=lambda pid: after[pid] - before.get(pid, 0.0))] = "replica"

    def one_round() -> dict[str, float]:
        return measure(url, procs, names, seconds, concurrency)

    def shutdown() -> None:
        serve.shutdown()
        ember.shutdown()

    return one_round, shutdown


def bare_round_maker(seconds: int, concurrency: int) -> tuple[Any, Any]:
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "serve.py"), "--bare-server"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(serve_bench.BARE_MARKER):
        raise RuntimeError(f"the bare server did not start (said {line!r})")
    url = f"http://127.0.0.1:{int(line.split()[1])}/trivial"
    server = psutil.Process(proc.pid)
    wrk(url, 1, concurrency)

    def one_round() -> dict[str, float]:
        return measure(url, [server], {proc.pid: "bare app"}, seconds, concurrency)

    def shutdown() -> None:
        proc.terminate()
        proc.wait(timeout=30)

    return one_round, shutdown


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3, help="each round's wrk run")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"ember": [], "bare": []}
    ember_round, ember_stop = ember_round_maker(args.seconds, args.concurrency)
    try:
        bare_round, bare_stop = bare_round_maker(args.seconds, args.concurrency)
        try:
            for i in range(args.rounds):
                for name, one_round in (("ember", ember_round), ("bare", bare_round)):
                    row = one_round()
                    rows[name].append(row)
                    print(f"round {i} {name}: " + ", ".join(
                        f"{k} {v:,.1f}" for k, v in row.items()), file=sys.stderr, flush=True)
                    time.sleep(0.2)
        finally:
            bare_stop()
    finally:
        ember_stop()
    print(f"median of {args.rounds} rounds, wrk -c{args.concurrency}, load average "
          f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for name, measured in rows.items():
        keys = list(dict.fromkeys(k for row in measured for k in row))
        cells = [f"{k} {statistics.median(row.get(k, 0.0) for row in measured):,.1f}"
                 for k in keys]
        print(f"{name}: " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
