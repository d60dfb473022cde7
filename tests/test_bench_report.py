"""``benchmarks/report.py`` (what ``make bench`` runs) against fake benchmark scripts.

The real benchmarks take minutes; these fakes follow (or break) the JSON protocol in the ways
that matter to the report: good rows, a crash, no ``--json`` option, JSON that breaks the
protocol, a hang, and a daemon left behind.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import psutil
import pytest

REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "report.py"

GOOD = '''
import argparse, json, sys
parser = argparse.ArgumentParser()
parser.add_argument("--json")
parser.add_argument("--quick", action="store_true")
args = parser.parse_args()
print("progress: warming up", file=sys.stderr)
rows = [
    {"workload": "tasks/s", "unit": "1/s", "ember": 36022.4, "ray": 2489.0, "better": "higher",
     "speedup": 14.47, "target": ">= 3x Ray", "met": True, "note": "N sized to 1.5 s"},
    {"workload": "actor call | sync", "unit": "µs", "ember": 118.2, "ray": 621.0,
     "better": "lower", "speedup": 5.25, "target": ">= 8x Ray", "met": False, "note": ""},
    {"workload": "ember alone", "unit": "s", "ember": 0.0123, "ray": None, "better": "lower",
     "speedup": None, "target": None, "met": None, "note": ""},
    {"workload": "req/s", "unit": "req/s", "ember": 6000.0, "ray": 500.0, "better": "higher",
     "speedup": 12.0, "target": ">= 10x Ray", "met": True, "note": "", "limit": 15000.0,
     "min_vs_limit": 0.5},
    {"workload": "pipeline", "unit": "s", "ember": 3.6, "ray": 11.0, "better": "lower",
     "speedup": 2.82, "target": None, "met": None, "note": "", "limit": 3.0,
     "max_vs_limit": 1.3},
]
with open(args.json, "w") as f:
    json.dump({"benchmark": "alpha", "rows": rows,
               "notes": ["quick" if args.quick else "full size"]}, f)
print("| a markdown table on stdout |")
'''

CRASH = '''
import sys
print("step 1 ok", file=sys.stderr)
print("RuntimeError: boom at step 3", file=sys.stderr)
sys.exit(3)
'''

NO_JSON_OPTION = '''
import argparse
argparse.ArgumentParser().parse_args()
'''

BAD_PROTOCOL = '''
import argparse, json
parser = argparse.ArgumentParser()
parser.add_argument("--json")
parser.add_argument("--quick", action="store_true")
args = parser.parse_args()
row = {"workload": "w", "unit": "s", "ember": 1.0, "ray": 2.0, "better": "faster",
       "speedup": 2.0, "target": None, "met": None, "note": ""}
json.dump({"benchmark": "delta", "rows": [row], "notes": []}, open(args.json, "w"))
'''

HELPER = '''
open(__file__ + ".ran", "w").write("a helper module must never run as a benchmark")
'''


def _write(folder: Path, name: str, source: str) -> None:
    (folder / name).write_text(textwrap.dedent(source))


def _run_report(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPORT), "--dir", str(folder), "--out", str(folder / "REPORT.md"),
         *extra], capture_output=True, text=True, timeout=90)


def _load_benchmark_module(path: Path, name: str) -> ModuleType:
    if str(path.parent) not in sys.path:  # as when it runs as a script: its helpers sit beside it
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _load_report_module() -> ModuleType:
    return _load_benchmark_module(REPORT, "bench_report")


def test_report_shows_good_rows_and_every_failure_and_exits_non_zero(tmp_path: Path) -> None:
    _write(tmp_path, "alpha.py", GOOD)
    _write(tmp_path, "beta.py", CRASH)
    _write(tmp_path, "gamma.py", NO_JSON_OPTION)
    _write(tmp_path, "delta.py", BAD_PROTOCOL)
    _write(tmp_path, "_helper.py", HELPER)

    proc = _run_report(tmp_path, "--quick")

    assert proc.returncode == 1, proc.stderr
    report = (tmp_path / "REPORT.md").read_text()
    assert "do not edit" in report
    assert not (tmp_path / "_helper.py.ran").exists()
    assert "## _helper" not in report
    # the machine and the mode
    assert "quick mode" in report
    for key in ("- CPU:", "- RAM:", "- OS:", "- Python:", "- ember:", "- Ray:", "- torch:"):
        assert key in report
    # the good benchmark's table, with --quick passed through and a pipe in a name escaped;
    # ember, Ray and the limit side by side, with ember's ratio to the limit
    assert ("| workload | ember | Ray | limit | unit | speedup | ember / limit | target | met |"
            in report)
    assert "| tasks/s | 36,022 | 2,489 | — | 1/s | 14.47x | — | >= 3x Ray | yes |" in report
    assert ("| actor call \\| sync | 118 | 621 | — | µs | 5.25x | — | >= 8x Ray | **no** |"
            in report)
    assert "| ember alone | 0.0123 | — | — | s | — | — | — | — |" in report
    # a limit target is checked here and joined to the benchmark's own target
    assert ("| req/s | 6,000 | 500 | 15,000 | req/s | 12.00x | 0.40x "
            "| >= 10x Ray; ≥ 0.5x the limit | **no** |" in report)
    assert "| pipeline | 3.60 | 11.0 | 3.00 | s | 2.82x | 1.20x | ≤ 1.3x the limit | yes |" in report
    assert "- quick" in report
    assert "- tasks/s: N sized to 1.5 s" in report
    # the headline: ratios, the miss, the failures
    headline = report.split("## Headline", 1)[1].split("\n## ", 1)[0]
    assert ("| alpha | tasks/s | 36,022 1/s | 2,489 1/s | — | 14.47x | — | >= 3x Ray | yes |"
            in headline)
    assert ("| alpha | actor call \\| sync | 118 µs | 621 µs | — | 5.25x | — | >= 8x Ray "
            "| **no** |" in headline)
    assert ("| alpha | pipeline | 3.60 s | 11.0 s | 3.00 s | 2.82x | 1.20x | ≤ 1.3x the limit "
            "| yes |" in headline)
    assert "ember alone" not in headline  # no target: only in alpha's own table
    assert "targets met: 2 of 4" in headline
    assert ("Targets not met: alpha / actor call | sync (>= 8x Ray); alpha / req/s (>= 10x Ray; "
            "≥ 0.5x the limit)" in headline)
    assert "**3 failed** (beta, delta, gamma)" in headline
    # each failure says why, with its stderr tail
    beta = report.split("## beta", 1)[1].split("\n## ", 1)[0]
    assert "exited with status 3" in beta and "RuntimeError: boom at step 3" in beta
    gamma = report.split("## gamma", 1)[1].split("\n## ", 1)[0]
    assert "wrote no JSON" in gamma and "unrecognized arguments: --json" in gamma
    delta = report.split("## delta", 1)[1]
    assert "does not follow the protocol" in delta and "'faster'" in delta
    # progress on stderr: which benchmark runs, and the benchmark's own stderr
    assert "1/4 alpha" in proc.stderr and "progress: warming up" in proc.stderr
    # the headline on stdout too, for whoever ran `make bench`
    assert proc.stdout.startswith("## Headline") and "**3 failed**" in proc.stdout
    assert "## alpha" not in proc.stdout


def test_report_exits_zero_when_every_benchmark_ran(tmp_path: Path) -> None:
    _write(tmp_path, "alpha.py", GOOD)
    _write(tmp_path, "beta.py", CRASH)

    proc = _run_report(tmp_path, "--only", "alpha")

    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "REPORT.md").read_text()
    assert "## alpha" in report and "## beta" not in report
    assert "- full size" in report and "quick mode" not in report
    assert "1 benchmarks, 1 ran cleanly" in report


def test_unknown_benchmark_name_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "alpha.py", GOOD)

    proc = _run_report(tmp_path, "--only", "alhpa")

    assert proc.returncode == 2
    assert "unknown benchmark(s) alhpa (known: alpha)" in proc.stderr
    assert not (tmp_path / "REPORT.md").exists()


def test_a_hung_benchmark_is_killed_with_what_it_started(tmp_path: Path) -> None:
    report = _load_report_module()
    pid_file = tmp_path / "daemon.pid"
    _write(tmp_path, "hang.py", f'''
        import subprocess, sys, time
        daemon = subprocess.Popen(["sleep", "300"])
        open({str(pid_file)!r}, "w").write(str(daemon.pid))
        print("started a daemon", file=sys.stderr, flush=True)
        time.sleep(300)
    ''')

    start = time.monotonic()
    outcome = report.run_benchmark(tmp_path / "hang.py", quick=False, timeout_s=6, echo=False)

    assert time.monotonic() - start < 30
    assert outcome.failed and "timed out after 6 s" in outcome.error
    assert "started a daemon" in outcome.stderr_tail
    daemon_pid = int(pid_file.read_text())
    assert not psutil.pid_exists(daemon_pid) or psutil.Process(daemon_pid).status() == "zombie"


def test_a_daemon_left_after_a_clean_exit_is_reaped(tmp_path: Path) -> None:
    report = _load_report_module()
    pid_file = tmp_path / "daemon.pid"
    _write(tmp_path, "leaky.py", GOOD.replace('"benchmark": "alpha"', '"benchmark": "leaky"')
           + f'''
import subprocess
daemon = subprocess.Popen(["sleep", "300"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
open({str(pid_file)!r}, "w").write(str(daemon.pid))
''')

    outcome = report.run_benchmark(tmp_path / "leaky.py", quick=False, timeout_s=60, echo=False,
                                   reap_grace_s=0.5)

    assert not outcome.failed, outcome.error
    assert len(outcome.rows) == 5
    assert "killed 1 process(es)" in outcome.stderr_tail
    daemon_pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while psutil.pid_exists(daemon_pid) and time.monotonic() < deadline:
        if psutil.Process(daemon_pid).status() == "zombie":
            break
        time.sleep(0.05)
    assert not psutil.pid_exists(daemon_pid) or psutil.Process(daemon_pid).status() == "zombie"


@pytest.mark.parametrize(("data", "message"), [
    ([], "expected an object"),
    ({"benchmark": "other", "rows": []}, "'other': expected 'x'"),
    ({"benchmark": "x", "rows": {}}, '"rows" is {}'),
    ({"benchmark": "x", "rows": [{"unit": "s"}]}, 'row 0 is'),
    ({"benchmark": "x", "rows": [{"workload": "w", "better": "lower", "ember": "fast"}]},
     "\"ember\" is 'fast': expected a number or null"),
    ({"benchmark": "x", "rows": [{"workload": "w", "better": "lower", "met": "yes"}]},
     "\"met\" is 'yes'"),
    ({"benchmark": "x", "rows": [{"workload": "w", "better": "lower", "limit": "1 s"}]},
     "\"limit\" is '1 s': expected a number or null"),
    ({"benchmark": "x", "rows": [{"workload": "w", "better": "lower", "max_vs_limit": 0}]},
     "\"max_vs_limit\" is 0.0: expected a ratio above 0"),
])
def test_protocol_violations_name_the_bad_value(data: object, message: str) -> None:
    report = _load_report_module()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("{", r"\{")):
        report.parse_result("x", data)


def test_numbers_are_shown_with_sensible_precision() -> None:
    report = _load_report_module()
    assert [report.fmt_number(v) for v in (36022.4, 621.4, 42.25, 4.089, 0.19, 0.000118, 0.0,
                                           None, float("nan"))] == [
        "36,022", "621", "42.2", "4.09", "0.19", "0.000118", "0.00", "—", "—"]
    assert report.fmt_speedup(21.08) == "21.08x"


@pytest.mark.parametrize(("ember", "limit", "max_vs", "min_vs", "expected"), [
    # a time at most 1.3x the bare work's
    (3.6, 3.0, 1.3, None, (1.2, "≤ 1.3x the limit", True)),
    (4.2, 3.0, 1.3, None, (1.4, "≤ 1.3x the limit", False)),
    # a rate at least 0.5x the bare rate
    (6000.0, 15000.0, None, 0.5, (0.4, "≥ 0.5x the limit", False)),
    (9000.0, 15000.0, None, 0.5, (0.6, "≥ 0.5x the limit", True)),
    # both bounds at once
    (1.0, 1.0, 1.05, 0.95, (1.0, "≥ 0.95x the limit and ≤ 1.05x the limit", True)),
    # ember failed: the target is missed; the limit failed: nothing to judge it by
    (None, 3.0, 1.3, None, (None, "≤ 1.3x the limit", False)),
    (3.6, None, 1.3, None, (None, "≤ 1.3x the limit", None)),
    (3.6, 0.0, 1.3, None, (None, "≤ 1.3x the limit", None)),
    # a limit without a target: the ratio alone
    (2.0, 4.0, None, None, (0.5, None, None)),
    (None, None, None, None, (None, None, None)),
])
def test_limit_verdict_checks_embers_ratio_to_the_limit(
        ember: float | None, limit: float | None, max_vs: float | None, min_vs: float | None,
        expected: tuple[float | None, str | None, bool | None]) -> None:
    report = _load_report_module()
    ratio, text, met = report.limit_verdict(ember, limit, max_vs, min_vs)
    assert (text, met) == expected[1:]
    assert ratio == pytest.approx(expected[0]) if expected[0] is not None else ratio is None


@pytest.mark.parametrize(("own", "limit", "expected"), [
    # no limit target: the benchmark's own pair, unchanged
    ((">= 10x Ray", True), (None, None), (">= 10x Ray", True)),
    ((None, None), (None, None), (None, None)),
    # only a limit target
    ((None, None), ("≤ 1.3x the limit", False), ("≤ 1.3x the limit", False)),
    # both: a miss anywhere is a miss; else anything unjudged leaves the row unjudged
    ((">= 10x Ray", True), ("≥ 0.5x the limit", True), (">= 10x Ray; ≥ 0.5x the limit", True)),
    ((">= 10x Ray", True), ("≥ 0.5x the limit", False), (">= 10x Ray; ≥ 0.5x the limit", False)),
    ((">= 10x Ray", False), ("≥ 0.5x the limit", None), (">= 10x Ray; ≥ 0.5x the limit", False)),
    ((">= 10x Ray", None), ("≥ 0.5x the limit", True), (">= 10x Ray; ≥ 0.5x the limit", None)),
    ((">= 10x Ray", True), ("≥ 0.5x the limit", None), (">= 10x Ray; ≥ 0.5x the limit", None)),
])
def test_merge_verdicts_joins_the_benchmarks_target_and_the_limits(
        own: tuple[str | None, bool | None], limit: tuple[str | None, bool | None],
        expected: tuple[str | None, bool | None]) -> None:
    report = _load_report_module()
    assert report.merge_verdicts(*own, *limit) == expected


def test_a_limit_target_decides_the_rows_verdict_in_parse_result() -> None:
    report = _load_report_module()
    rows, _ = report.parse_result("x", {"benchmark": "x", "rows": [
        {"workload": "p99", "unit": "ms", "ember": 5.0, "ray": 50.0, "better": "lower",
         "speedup": 10.0, "target": "lower p99 than Ray", "met": True, "limit": 2.0,
         "max_vs_limit": 2.0},
        {"workload": "old row", "unit": "s", "ember": 1.0, "ray": 2.0, "better": "lower",
         "speedup": 2.0, "target": ">= 2x Ray", "met": True},
    ]})
    p99, old = rows
    assert p99["vs_limit"] == pytest.approx(2.5)
    assert p99["target"] == "lower p99 than Ray; ≤ 2x the limit"
    assert p99["met"] is False
    # a row of the protocol before limits existed reads as before, with no limit
    assert (old["limit"], old["vs_limit"], old["target"], old["met"]) == (None, None, ">= 2x Ray",
                                                                          True)
    assert report.fmt_ratio(p99["vs_limit"]) == "2.50x" and report.fmt_ratio(None) == "—"


WRK_REPORT = """\
Running 5s test @ http://127.0.0.1:41213/trivial
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.69ms    1.59ms  14.06ms   83.80%
    Req/Sec    11.62k     2.97k   19.96k    76.67%
  Latency Distribution
     50%  671.00us
     75%    2.58ms
     90%    3.85ms
     99%    1.02s
  57834 requests in 5.02s, 6.52MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:  11531.59
Transfer/sec:      1.30MB
"""


def test_the_serve_benchmark_reads_wrks_report() -> None:
    serve = _load_benchmark_module(REPORT.parent / "serve.py", "bench_serve")
    assert serve.parse_wrk(WRK_REPORT) == {
        "requests": 57834, "per_s": 11531.59, "p50_ms": pytest.approx(0.671),
        "p99_ms": pytest.approx(1020.0), "errors": 9}
    with pytest.raises(ValueError, match="no p50_ms, p99_ms"):  # run without --latency
        serve.parse_wrk(WRK_REPORT.replace("50%", "").replace("99%", ""))


def test_the_serve_limit_keeps_each_phases_best_round() -> None:
    serve = _load_benchmark_module(REPORT.parent / "serve.py", "bench_serve")
    rounds = [
        {"trivial_c16": {"per_s": 9000.0, "p50_ms": 1.5, "p99_ms": 4.0, "errors": 0,
                         "client": "wrk"},
         "stream": {"first_chunk_ms": 0.4, "total_ms": 1.2, "runs": 50, "errors": 0}},
        {"trivial_c16": {"per_s": 11000.0, "p50_ms": 1.2, "p99_ms": 5.0, "errors": 1,
                         "client": "wrk"},
         "stream": {"first_chunk_ms": None, "total_ms": 1.0, "runs": 0, "errors": 50}},
    ]
    assert serve.best_of(rounds) == {
        "trivial_c16": {"per_s": 11000.0, "p50_ms": 1.2, "p99_ms": 4.0, "errors": 1},
        "stream": {"first_chunk_ms": 0.4, "total_ms": 1.0, "errors": 50}}
