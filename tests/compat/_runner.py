"""Run Ray programs on ember with only the import changed.

A program is a file under ``tests/compat/<area>/`` (areas: core, serve, data, train): a Ray
program written here, in this project, the way a Ray user writes one when following Ray's
documentation, and run unchanged on the installed Ray (2.60.0; ``python -m tests.compat --ray``)
before it joined the suite. No code in it is taken from Ray. Its header, a block of
``# compat:`` comment lines at the top, names the topic of Ray's documentation it is modelled
on (required) and every change it needs to run on ember beyond the import (ideally none)::

    # compat: topic doc/source/ray-core/tasks.rst
    # compat: change <what>: <why ember needs it>
    # compat: expect cancelled as asked
    # compat: timeout 90
    # compat: slow
    # compat: skip <why it cannot run on ember>
    # compat: pending <name> (being added)

``expect`` lines name text the program must print (for doc examples that show their result by
printing it rather than asserting it); ``skip`` and ``pending`` keep a program from running and
count as not passing.

Running a program (``run``) maps its imports onto ember (``to_ember``: ``import ray`` becomes
``import ember as ray``, ``from ray.x import y`` becomes ``from ember.x import y``) and runs the
result in a fresh interpreter, in its own session and (where the machine allows it) its own
network namespace, so that the fixed port 8000 of serve examples never meets another program's.
A ``ray`` package that raises on import sits first on the program's path, so a program that
still reached the real Ray would fail rather than pass on Ray's merits. ``run(...,
against="ray")`` runs the unchanged program on the installed Ray instead: the check that a
program is a valid Ray program.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

COMPAT_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = COMPAT_DIR.parents[1]
FILES_DIR = COMPAT_DIR / "files"  # copied into the folder each program runs in
AREAS = ("core", "serve", "data", "train")
DEFAULT_TIMEOUT_S = 60.0
_HEADER = re.compile(r"#\s*compat:\s*(?P<key>[a-z-]+)\s*(?P<value>.*)$")
_KEYS = {"topic", "change", "expect", "timeout", "slow", "skip", "pending"}

_POISON = (
    "raise ImportError('compat: this program reached the real `ray` package; every import of "
    "ray must be mapped onto ember')\n"
)


class HeaderError(ValueError):
    """A program's ``# compat:`` header is malformed."""


@dataclass(frozen=True)
class Program:
    area: str
    name: str
    path: Path
    topic: str
    changes: tuple[str, ...] = ()
    expects: tuple[str, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S
    slow: bool = False
    skip: str | None = None
    pending: str | None = None

    @property
    def id(self) -> str:
        return f"{self.area}/{self.name}"

    @property
    def not_run_reason(self) -> str | None:
        if self.skip is not None:
            return f"skip: {self.skip}"
        if self.pending is not None:
            return f"pending: {self.pending}"
        return None


def parse_header(text: str, where: str = "<program>") -> dict[str, list[str]]:
    """The ``# compat:`` lines at the top of ``text`` (before the first line that is not a
    comment or blank), as key -> values."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        match = _HEADER.match(stripped)
        if match is None:
            continue
        key, value = match.group("key"), match.group("value").strip()
        if key not in _KEYS:
            raise HeaderError(f"{where}: unknown header key {key!r} (known: {sorted(_KEYS)})")
        found.setdefault(key, []).append(value)
    return found


def load(path: Path) -> Program:
    """The program at ``path`` (``<area>/<name>.py``) with its header read and checked."""
    area = path.parent.name
    if area not in AREAS:
        raise HeaderError(f"{path}: programs live in one of {AREAS}, not {area!r}")
    header = parse_header(path.read_text(), str(path))
    topics = header.get("topic", [])
    if len(topics) != 1 or not topics[0]:
        raise HeaderError(f"{path}: needs exactly one '# compat: topic <the Ray documentation "
                          "page or test area it is modelled on>'")
    for key in ("change", "skip", "pending", "expect"):
        if any(not value for value in header.get(key, [])):
            raise HeaderError(f"{path}: '# compat: {key}' needs a text after it")
    for change in header.get("change", []):
        if ":" not in change:
            raise HeaderError(f"{path}: '# compat: change {change}' gives no reason "
                              "(write '<what changed>: <why>')")
    timeout = float(header["timeout"][0]) if "timeout" in header else DEFAULT_TIMEOUT_S
    return Program(
        area=area, name=path.stem, path=path, topic=topics[0],
        changes=tuple(header.get("change", [])), expects=tuple(header.get("expect", [])),
        timeout_s=timeout, slow="slow" in header,
        skip=header["skip"][0] if "skip" in header else None,
        pending=header["pending"][0] if "pending" in header else None,
    )


def discover(root: Path = COMPAT_DIR) -> list[Program]:
    """Every program under ``root``, sorted by area (in ``AREAS`` order) and name."""
    programs = [load(path) for area in AREAS for path in sorted((root / area).glob("*.py"))]
    return programs


# -- the import change ---------------------------------------------------------------------------
def _is_ray(module: str | None) -> bool:
    return module is not None and (module == "ray" or module.startswith("ray."))


def _ember(module: str) -> str:
    return "ember" + module[len("ray"):]


def _import_statement(node: ast.Import) -> str:
    parts = []
    for alias in node.names:
        if not _is_ray(alias.name):
            parts.append(alias.name + (f" as {alias.asname}" if alias.asname else ""))
        elif alias.asname:
            parts.append(f"{_ember(alias.name)} as {alias.asname}")
        elif alias.name == "ray":
            parts.append("ember as ray")
        else:  # `import ray.train.torch` binds `ray` and imports the submodule
            parts.append(_ember(alias.name))
            parts.append("ember as ray")
    return "import " + ", ".join(parts)


def to_ember(source: str) -> str:
    """``source`` with every import of ``ray`` mapped onto ``ember`` and nothing else changed:

    - ``import ray`` -> ``import ember as ray``; ``import ray as r`` -> ``import ember as r``
    - ``import ray.train.torch`` -> ``import ember.train.torch, ember as ray``
    - ``from ray import serve`` -> ``from ember import serve``;
      ``from ray.serve.handle import X`` -> ``from ember.serve.handle import X``
    """
    tree = ast.parse(source)
    edits: list[tuple[int, int, int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(_is_ray(a.name) for a in node.names):
            text = _import_statement(node)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_ray(node.module):
            segment = ast.get_source_segment(source, node)
            assert segment is not None and node.module is not None
            text = re.sub(r"^from\s+" + re.escape(node.module) + r"\b",
                          "from " + _ember(node.module), segment, count=1)
        else:
            continue
        assert node.end_lineno is not None and node.end_col_offset is not None
        edits.append((node.lineno, node.col_offset, node.end_lineno, node.end_col_offset, text))
    lines = source.splitlines(keepends=True)
    for start, start_col, end, end_col, text in sorted(edits, reverse=True):
        head = lines[start - 1][:start_col]
        tail = lines[end - 1][end_col:]
        lines[start - 1:end] = [head + text + tail]
    result = "".join(lines)
    leftover = [n for n in ast.walk(ast.parse(result))
                if (isinstance(n, ast.Import) and any(_is_ray(a.name) for a in n.names))
                or (isinstance(n, ast.ImportFrom) and n.level == 0 and _is_ray(n.module))]
    if leftover:
        raise ValueError(f"imports of ray left after mapping: lines {[n.lineno for n in leftover]}")
    return result


# -- running ------------------------------------------------------------------------------------
@dataclass
class Outcome:
    program: Program
    status: str  # "passed", "failed", "skipped" (skip or pending)
    seconds: float = 0.0
    output: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.cache
def _netns_prefix() -> tuple[str, ...]:
    """A command prefix that runs a program in its own network namespace with loopback up
    (``unshare`` of util-linux, as root or with unprivileged user namespaces), or nothing
    where the machine does not allow it."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not unshare or not ip:
        return ()
    for flags in (("-n",), ("-r", "-n")):
        prefix = (unshare, *flags, "sh", "-c", f'"{ip}" link set lo up && exec "$0" "$@"')
        try:
            probe = subprocess.run([*prefix, sys.executable, "-c", "pass"],
                                   capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    return ()


def _session_pids(sid: int) -> list[int]:
    from tests._support import session_pids

    return [pid for pid in session_pids(sid) if pid != sid]


def run(program: Program, *, against: str = "ember", timeout_s: float | None = None
        ) -> Outcome:
    """Run ``program`` in a fresh interpreter and judge it: exit status 0, every ``expect``
    printed, and no process of its own left running once it exited."""
    if against not in ("ember", "ray"):
        raise ValueError(f"against={against!r}: run against 'ember' or 'ray'")
    timeout = timeout_s if timeout_s is not None else program.timeout_s
    source = program.path.read_text()
    with tempfile.TemporaryDirectory(prefix="compat-") as folder:
        work = Path(folder)
        if FILES_DIR.is_dir():
            for item in FILES_DIR.iterdir():
                shutil.copy(item, work / item.name)
        # HOME is the run's folder: what a program keeps under ~ (~/ray_results,
        # ~/ember_results) goes away with it.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HOME": str(work)}
        for name in ("EMBER_BACKEND", "EMBER_ADDRESS", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST"):
            env.pop(name, None)
        if against == "ray":
            # Ray's session folders (logs, sockets) go under the run's folder too, whose
            # path stays short enough for Ray's socket paths.
            env["RAY_TMPDIR"] = str(work)
        if against == "ember":
            source = to_ember(source)
            (work / "ray").mkdir()
            (work / "ray" / "__init__.py").write_text(_POISON)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        script = work / f"{program.name}.py"
        script.write_text(source)
        command = [*_netns_prefix(), sys.executable, str(script)]
        started = time.monotonic()
        # Output goes to a file, not a pipe: a process the program leaves running keeps a pipe
        # open, and the run would wait for it instead of reporting it.
        log_path = work / "output.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(command, cwd=work, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        problems = []
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            problems.append(f"did not finish in {timeout:.0f} s")
        seconds = time.monotonic() - started
        deadline = time.monotonic() + 10
        while (left := _session_pids(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        output = log_path.read_text(errors="replace")
    if proc.returncode != 0 and not problems:
        problems.append(f"exit status {proc.returncode}")
    problems += [f"did not print {text!r}" for text in program.expects if text not in output]
    if left:
        problems.append(f"left {len(left)} processes running after it exited")
    return Outcome(program, "failed" if problems else "passed", seconds, output, problems)


def outcome_of_skip(program: Program) -> Outcome:
    return Outcome(program, "skipped", problems=[program.not_run_reason or ""])


# -- the table ----------------------------------------------------------------------------------
def table(outcomes: Iterable[Outcome]) -> str:
    """The pass rate per area as a Markdown table (a skipped or pending program counts as held
    and not passed)."""
    by_area: dict[str, list[Outcome]] = {area: [] for area in AREAS}
    for outcome in outcomes:
        by_area[outcome.program.area].append(outcome)
    rows = ["| area | programs | pass | fail | skip or pending | pass rate |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    total = [0, 0, 0, 0]
    for area, items in by_area.items():
        if not items:
            continue
        counts = [len(items), sum(o.status == "passed" for o in items),
                  sum(o.status == "failed" for o in items),
                  sum(o.status == "skipped" for o in items)]
        total = [a + b for a, b in zip(total, counts, strict=True)]
        rows.append(f"| {area} | {counts[0]} | {counts[1]} | {counts[2]} | {counts[3]} | "
                    f"{_rate(counts[1], counts[0])} |")
    rows.append(f"| **all** | {total[0]} | {total[1]} | {total[2]} | {total[3]} | "
                f"{_rate(total[1], total[0])} |")
    return "\n".join(rows)


def _rate(passed: int, held: int) -> str:
    return f"{100 * passed / held:.0f}%" if held else "-"


def select(programs: Sequence[Program], patterns: Sequence[str]) -> list[Program]:
    """The programs whose id (``area/name``) contains one of ``patterns`` (all if none)."""
    if not patterns:
        return list(programs)
    return [p for p in programs if any(pattern in p.id for pattern in patterns)]
