"""Every ```python block in README.md runs, as a user would paste it, in a fresh interpreter.

A block may be skipped (it must still parse) only with a visible reason on the line just
above it::

    <!-- readme-test: skip (needs a running Ray cluster) -->

Each block runs in its own session in an empty folder; whatever processes it leaves running fail
the test (and are killed), so the README never shows a snippet that leaks.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._support import session_pids

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")
BLOCK_TIMEOUT_S = 100  # under the per-test timeout, so a hang fails with the block's output


@dataclass(frozen=True)
class Block:
    heading: str
    line: int  # of the opening fence, 1-based
    code: str
    skip_reason: str | None

    @property
    def id(self) -> str:
        words = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        return f"{words[:40]}-line{self.line}"


def python_blocks(text: str) -> list[Block]:
    """The ```python blocks of a Markdown text, each with its heading and skip marker."""
    blocks = []
    lines = text.splitlines()
    heading = "top"
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and not line.startswith("#!"):
            heading = line.lstrip("#").strip()
        if line.strip().startswith("```"):
            fence = line.strip()
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            if fence == "```python":
                above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
                match = SKIP.search(above)
                blocks.append(Block(heading, i + 1, "\n".join(lines[i + 1:end]) + "\n",
                                    match.group("reason").strip() if match else None))
            i = end
        i += 1
    return blocks


BLOCKS = python_blocks(README.read_text())


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return str(pid)
    return f"{pid} ({command[:100]})"


# Blocks under these headings import torch and start worker gangs: over ~10 s on 2 cores.
SLOW_HEADINGS = ("ember.train", "ember.rl", "DeepSpeed")


@pytest.mark.parametrize("block", [
    pytest.param(b, id=b.id, marks=[pytest.mark.slow] if b.heading.startswith(SLOW_HEADINGS)
                 else []) for b in BLOCKS])
def test_readme_python_block_runs(block: Block, tmp_path: Path) -> None:
    if block.skip_reason is not None:
        compile(block.code, f"README.md line {block.line}", "exec")  # a skipped block still parses
        pytest.skip(f"README line {block.line}: {block.skip_reason}")
    script = tmp_path / "snippet.py"
    script.write_text(block.code)
    scratch = tmp_path / "tmp"  # the snippets' tempfile.mkdtemp() folders, removed with it
    scratch.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(scratch)}
    for name in ("EMBER_BACKEND", "EMBER_ADDRESS"):  # the snippets show the default backend
        env.pop(name, None)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"README block at line {block.line} ({block.heading}) did not finish in "
                    f"{BLOCK_TIMEOUT_S} s; its output:\n{output[-4000:]}")
    finally:
        deadline = time.monotonic() + 10
        while (left := session_pids(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        described = [_describe(pid) for pid in left]
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, (
        f"README block at line {block.line} ({block.heading}) failed with exit code "
        f"{proc.returncode}; its output:\n{output[-4000:]}")
    assert not left, (f"README block at line {block.line} ({block.heading}) left processes "
                      f"running after it exited: {described}")


def test_readme_has_a_runnable_snippet_per_library() -> None:
    runnable = [b for b in BLOCKS if b.skip_reason is None]
    for library in ("Core", "ember.data", "ember.train", "ember.serve", "ember.rl"):
        assert any(b.heading.startswith(library) for b in runnable), (
            f"README has no runnable ```python block under a heading starting with {library!r}")
    assert "make demo" in README.read_text() and "make test" in README.read_text()


def test_parser_finds_blocks_headings_and_skip_reasons() -> None:
    text = "\n".join([
        "# Title", "```", "make demo", "```", "## Part one", "```python", "print(1)", "```",
        "## Part two", "<!-- readme-test: skip (needs a Ray cluster) -->", "",
        "```python", "import ray", "```", "```bash", "ls", "```",
    ])
    blocks = python_blocks(text)
    assert [(b.heading, b.line, b.code, b.skip_reason) for b in blocks] == [
        ("Part one", 6, "print(1)\n", None),
        ("Part two", 12, "import ray\n", "needs a Ray cluster"),
    ]
