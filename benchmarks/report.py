"""Run every benchmark and write one Markdown report: ``benchmarks/REPORT.md``.

Run it from the repository root (``make bench`` does this)::

    .venv/bin/python benchmarks/report.py            # every benchmark, full size (long)
    .venv/bin/python benchmarks/report.py --quick    # every benchmark's smoke run
    .venv/bin/python benchmarks/report.py --only core --only data   # some of them

Every ``benchmarks/<name>.py`` except this file and the ``_``-prefixed helpers runs on its own,
one after the other, as ``python benchmarks/<name>.py --json PATH [--quick]``. Each writes the
JSON of the shared protocol to PATH::

    {"benchmark": "<name>", "rows": [{"workload": str, "unit": str, "ember": float | null,
      "ray": float | null, "better": "lower" | "higher", "speedup": float | null,
      "target": str | null, "met": bool | null, "note": str,
      "limit": float | null, "max_vs_limit": float | null, "min_vs_limit": float | null}],
     "notes": [str, ...]}

where ``speedup`` is how many times better ember is than Ray (above 1: ember wins). The last
three keys of a row are optional: ``limit`` is the same work done with no framework (best of
several rounds, in the same run and the row's unit), and ``max_vs_limit`` / ``min_vs_limit`` are
a target on ember's ratio to it (``ember / limit`` at most / at least that). This script checks
that target itself (``limit_verdict``) and joins it to the benchmark's own target and verdict
(``merge_verdicts``): a row meets its targets when it meets both.

The report gives the machine, the date, a headline section with the ratios, and one table per
benchmark, each row with ember, Ray and the limit side by side and ember's ratio to the limit. A
benchmark that fails, times out or writes no valid JSON appears as failed with the tail of its
stderr; the report is written anyway and this script then exits with status 1.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _procs

HERE = Path(__file__).resolve().parent
TAIL_LINES = 30
DEFAULT_TIMEOUT_S = 3600.0
ROW_KEYS = ("workload", "unit", "ember", "ray", "better", "speedup", "target", "met", "note",
            "limit", "max_vs_limit", "min_vs_limit")


# --------------------------------------------------------------------------------------------
# What one benchmark produced.


@dataclass
class Outcome:
    """One benchmark's run: its rows and notes when it produced them, and why it failed if so."""

    name: str
    seconds: float = 0.0
    returncode: int | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # why this benchmark counts as failed; None when it did not
    stderr_tail: str = ""

    @property
    def failed(self) -> bool:
        return self.error is not None


def discover(folder: Path) -> list[str]:
    """The benchmark names in ``folder``: ``*.py`` but this script and ``_`` helpers."""
    return sorted(p.stem for p in folder.glob("*.py")
                  if p.name != "report.py" and not p.name.startswith("_"))


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} is {value!r}: expected a number or null")
    return float(value)


def parse_result(name: str, data: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Check a benchmark's JSON against the protocol; return its rows and notes.

    Raises ``ValueError`` naming the first thing that does not follow the protocol.
    """
    if not isinstance(data, dict):
        raise ValueError(f"the JSON is a {type(data).__name__}: expected an object")
    if data.get("benchmark") != name:
        raise ValueError(f'"benchmark" is {data.get("benchmark")!r}: expected {name!r}')
    raw_rows = data.get("rows")
    if not isinstance(raw_rows, list):
        raise ValueError(f'"rows" is {raw_rows!r}: expected a list of row objects')
    rows = []
    for i, raw in enumerate(raw_rows):
        if not isinstance(raw, dict) or not isinstance(raw.get("workload"), str):
            raise ValueError(f"row {i} is {raw!r}: expected an object with a \"workload\" string")
        where = f"row {i} ({raw['workload']!r})"
        row = {
            "workload": raw["workload"],
            "unit": str(raw.get("unit") or ""),
            "ember": _number(raw.get("ember"), f'{where} "ember"'),
            "ray": _number(raw.get("ray"), f'{where} "ray"'),
            "better": raw.get("better"),
            "speedup": _number(raw.get("speedup"), f'{where} "speedup"'),
            "target": None if raw.get("target") is None else str(raw["target"]),
            "met": raw.get("met"),
            "note": str(raw.get("note") or ""),
        }
        if row["better"] not in ("lower", "higher"):
            raise ValueError(f'{where} "better" is {row["better"]!r}: expected "lower" or '
                             '"higher"')
        if row["met"] not in (True, False, None):
            raise ValueError(f'{where} "met" is {row["met"]!r}: expected true, false or null')
        row["limit"] = _number(raw.get("limit"), f'{where} "limit"')
        for key in ("max_vs_limit", "min_vs_limit"):
            bound = row[key] = _number(raw.get(key), f'{where} "{key}"')
            if bound is not None and not bound > 0:
                raise ValueError(f'{where} "{key}" is {bound!r}: expected a ratio above 0')
        row["vs_limit"], limit_target, limit_met = limit_verdict(
            row["ember"], row["limit"], row["max_vs_limit"], row["min_vs_limit"])
        row["target"], row["met"] = merge_verdicts(row["target"], row["met"], limit_target,
                                                   limit_met)
        rows.append(row)
    notes = data.get("notes", [])
    if not isinstance(notes, list):
        raise ValueError(f'"notes" is {notes!r}: expected a list of strings')
    return rows, [str(n) for n in notes]


# --------------------------------------------------------------------------------------------
# The limit: ember's ratio to the same work done with no framework, and its target.


def limit_verdict(ember: float | None, limit: float | None, max_vs_limit: float | None,
                  min_vs_limit: float | None) -> tuple[float | None, str | None, bool | None]:
    """(ember / limit, the limit target's text, its verdict) for one row.

    The ratio is None unless both numbers are there (and the limit is not 0). The text is None
    when the row has no limit target. The verdict is None without a target or when the limit was
    not measured, False when ember was not measured (it failed), else whether the ratio stays
    within ``max_vs_limit`` and reaches ``min_vs_limit``.
    """
    ratio = ember / limit if ember is not None and limit else None
    bounds = []
    if min_vs_limit is not None:
        bounds.append(f"≥ {min_vs_limit:g}x the limit")
    if max_vs_limit is not None:
        bounds.append(f"≤ {max_vs_limit:g}x the limit")
    if not bounds:
        return ratio, None, None
    text = " and ".join(bounds)
    if ember is None:
        return ratio, text, False
    if ratio is None:
        return ratio, text, None
    met = ((max_vs_limit is None or ratio <= max_vs_limit)
           and (min_vs_limit is None or ratio >= min_vs_limit))
    return ratio, text, met


def merge_verdicts(target: str | None, met: bool | None, limit_target: str | None,
                   limit_met: bool | None) -> tuple[str | None, bool | None]:
    """One row's target text and verdict from the benchmark's own and the limit's.

    A missed target wins (False); else a target that could not be judged (None) leaves the row
    unjudged; else the row meets its targets. Without a limit target the benchmark's own pair
    comes back unchanged.
    """
    if limit_target is None:
        return target, met
    if target is None and met is None:
        return limit_target, limit_met
    verdicts = [met, limit_met]
    merged = (False if False in verdicts else None if None in verdicts else True)
    return "; ".join(t for t in (target, limit_target) if t), merged


# --------------------------------------------------------------------------------------------
# Running one benchmark.


def _pump(stream: Any, tail: collections.deque[str], echo: bool) -> None:
    for line in stream:
        tail.append(line.rstrip("\n"))
        if echo:
            print(f"    | {line.rstrip()}", file=sys.stderr, flush=True)


def run_benchmark(script: Path, quick: bool, timeout_s: float, echo: bool = True,
                  reap_grace_s: float = 30.0) -> Outcome:
    """Run one benchmark script in its own session and read back its JSON."""
    name = script.stem
    outcome = Outcome(name)
    with tempfile.TemporaryDirectory(prefix=f"ember-bench-{name}-") as tmp:
        json_path = os.path.join(tmp, f"{name}.json")
        argv = [sys.executable, str(script), "--json", json_path] + (["--quick"] if quick else [])
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="replace", start_new_session=True)
        err_tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        out_tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        readers = [threading.Thread(target=_pump, args=(proc.stderr, err_tail, echo), daemon=True),
                   threading.Thread(target=_pump, args=(proc.stdout, out_tail, False),
                                    daemon=True)]
        for reader in readers:
            reader.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # Daemons the benchmark left behind may hold its pipes open: reap them first.
        left = _procs.reap_session(proc.pid, 0 if timed_out else reap_grace_s, say=False)
        for reader in readers:
            reader.join(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        outcome.seconds = time.monotonic() - start
        outcome.returncode = proc.returncode
        outcome.stderr_tail = "\n".join(err_tail) or "(no stderr)"
        if left:
            outcome.stderr_tail += (f"\n[report] killed {len(left)} process(es) the benchmark "
                                    "left running")
        problems = []
        if timed_out:
            problems.append(f"timed out after {timeout_s:.0f} s and was killed")
        elif proc.returncode != 0:
            problems.append(f"exited with status {proc.returncode}")
        try:
            with open(json_path) as f:
                outcome.rows, outcome.notes = parse_result(name, json.load(f))
        except FileNotFoundError:
            problems.append("wrote no JSON (does it take `--json PATH`?)")
        except (ValueError, json.JSONDecodeError) as exc:
            problems.append(f"wrote JSON that does not follow the protocol: {exc}")
        if problems:
            outcome.error = "; ".join(problems)
    return outcome


# --------------------------------------------------------------------------------------------
# The machine.


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, str]:
    """What the numbers were measured on; reads files and metadata, imports nothing heavy."""
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), "") or platform.processor() or "unknown"
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), 0)
    gpus = "none found"
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout
            gpus = ", ".join(line.strip() for line in out.splitlines() if line.strip()) or gpus
    try:
        load = "{:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())
    except OSError:
        load = "unknown"
    return {
        "CPU": f"{cpu}, {os.cpu_count()} logical cores",
        "RAM": f"{mem_kb / 2**20:.1f} GiB" if mem_kb else "unknown",
        "GPU": gpus,
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "ember": _version("ember-scale"),
        "Ray": _version("ray"),
        "torch": _version("torch"),
        "load average at start (1, 5, 15 min)": load,
    }


# --------------------------------------------------------------------------------------------
# The Markdown.


def fmt_number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1 or size == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


def fmt_value(value: float | None, unit: str) -> str:
    text = fmt_number(value)
    return text if value is None or not unit else f"{text} {unit}"


def fmt_speedup(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def fmt_ratio(value: float | None) -> str:
    """ember / limit: "0.35x" (a rate at 35% of the limit's) or "1.08x" (8% over its time)."""
    return "—" if value is None or not math.isfinite(value) else f"{value:.2f}x"


def fmt_met(value: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "—"}[value]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def render(outcomes: list[Outcome], machine: dict[str, str], started: datetime.datetime,
           finished: datetime.datetime, quick: bool) -> str:
    """The whole report as Markdown."""
    command = "benchmarks/report.py" + (" --quick" if quick else "")
    lines = [
        "<!-- generated by make bench (benchmarks/report.py), do not edit: rerun it instead -->",
        "# ember benchmark report",
        "",
        f"*Generated by `make bench` (`{command}`); do not edit by hand: rerun it.*",
        "",
        f"- date: {started:%Y-%m-%d %H:%M %Z} to {finished:%H:%M %Z} "
        f"({(finished - started).total_seconds() / 60:.0f} min)"
        + (" — **quick mode**: smoke-run sizes, not the benchmarks' real workloads" if quick
           else ""),
    ]
    lines += [f"- {key}: {value}" for key, value in machine.items()]
    failed = [o for o in outcomes if o.failed]
    all_rows = [(o.name, r) for o in outcomes for r in o.rows]
    verdicts = [r["met"] for _, r in all_rows if r["met"] is not None]
    lines += ["", "## Headline", ""]
    lines.append(f"{len(outcomes)} benchmarks, {len(outcomes) - len(failed)} ran cleanly"
                 + (f", **{len(failed)} failed** ({', '.join(o.name for o in failed)})"
                    if failed else "")
                 + f"; targets met: {sum(verdicts)} of {len(verdicts)} rows that have one.")
    # The main rows: those with a target; for a benchmark without targets, its ratios to Ray.
    ratios = []
    for o in outcomes:
        ratios += [(o.name, r) for r in (
            [r for r in o.rows if r["target"] is not None]
            or [r for r in o.rows if r["speedup"] is not None])]
    if ratios:
        lines += ["", "The rows with a target (for a benchmark without targets, its ratios to "
                  "Ray). ember vs Ray is how many times better ember is than Ray on the "
                  "workload (above 1: ember wins). The limit is the same work done with no "
                  "framework in the same run, several rounds summed up as each benchmark's notes "
                  "say (its best, or the median where ember's side is a median); ember / "
                  "limit divides "
                  "ember's number by it (for a time, 1.10x is 10% slower than the bare work; "
                  "for a rate, 0.80x is 80% of the bare rate).", ""]
        lines += _table(["benchmark", "workload", "ember", "Ray", "limit", "ember vs Ray",
                         "ember / limit", "target", "met"],
                        [[name, r["workload"], fmt_value(r["ember"], r["unit"]),
                          fmt_value(r["ray"], r["unit"]), fmt_value(r["limit"], r["unit"]),
                          fmt_speedup(r["speedup"]), fmt_ratio(r["vs_limit"]),
                          r["target"] or "—", fmt_met(r["met"])] for name, r in ratios])
    misses = [(name, r) for name, r in all_rows if r["met"] is False]
    if misses:
        lines += ["", "Targets not met: " + "; ".join(
            f"{name} / {r['workload']} ({r['target']})" for name, r in misses) + "."]

    for o in outcomes:
        lines += ["", f"## {o.name}", ""]
        lines.append(f"`benchmarks/{o.name}.py"
                     + (" --quick" if quick else "") + f"`: {o.seconds:.0f} s"
                     + (f", **failed: {o.error}**" if o.failed else "") + ".")
        if o.rows:
            lines.append("")
            lines += _table(
                ["workload", "ember", "Ray", "limit", "unit", "speedup", "ember / limit",
                 "target", "met"],
                [[r["workload"], fmt_number(r["ember"]), fmt_number(r["ray"]),
                  fmt_number(r["limit"]), r["unit"], fmt_speedup(r["speedup"]),
                  fmt_ratio(r["vs_limit"]), r["target"] or "—", fmt_met(r["met"])]
                 for r in o.rows])
        notes = [f"{r['workload']}: {r['note']}" for r in o.rows if r["note"]] + o.notes
        if notes:
            lines.append("")
            lines += [f"- {_cell(note)}" for note in notes]
        if o.failed:
            lines += ["", "Last lines of its stderr:", "", "```", o.stderr_tail, "```"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="pass --quick to every benchmark (smoke-run sizes)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this benchmark (repeatable)")
    parser.add_argument("--dir", type=Path, default=HERE, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="where to write the report "
                        "(default: REPORT.md next to the benchmarks)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"kill a benchmark after S seconds (default {DEFAULT_TIMEOUT_S:.0f})")
    args = parser.parse_args(argv)
    out = args.out or args.dir / "REPORT.md"

    names = discover(args.dir)
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)} "
                         f"(known: {', '.join(names)})")
        names = [n for n in names if n in args.only]
    machine = machine_info()
    started = datetime.datetime.now().astimezone()
    outcomes = []
    for i, name in enumerate(names, 1):
        print(f"[report] {i}/{len(names)} {name}: running benchmarks/{name}.py"
              + (" --quick" if args.quick else "") + " ...", file=sys.stderr, flush=True)
        outcome = run_benchmark(args.dir / f"{name}.py", args.quick, args.timeout)
        outcomes.append(outcome)
        status = f"FAILED ({outcome.error})" if outcome.failed else f"{len(outcome.rows)} rows"
        print(f"[report] {i}/{len(names)} {name}: {status}, {outcome.seconds:.0f} s",
              file=sys.stderr, flush=True)
    finished = datetime.datetime.now().astimezone()
    text = render(outcomes, machine, started, finished, args.quick)
    out.write_text(text)
    print("## Headline" + text.split("## Headline", 1)[1].split("\n## ", 1)[0])
    failed = [o.name for o in outcomes if o.failed]
    print(f"[report] wrote {out}" + (f"; failed: {', '.join(failed)}" if failed else ""),
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
