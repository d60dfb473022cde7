"""`make demo`'s script, examples/llm_lifecycle.py, run the way CI runs it: ``--quick``.

One run (in a subprocess, its own process session) with the checkpoints in moto's local S3
server (``--local-s3``), then checks what a user sees: every stage's output, the artifacts it
says it wrote, exit code 0, and nothing left running or in /dev/shm afterwards.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests._support import SHM_DIR, ember_segments, session_pids

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "llm_lifecycle.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def script_constant(name: str) -> object:
    """A literal assigned at the top of the demo script (read, not imported)."""
    for node in ast.parse(SCRIPT.read_text()).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{SCRIPT} assigns no {name}")


def processes_in_session(sid: int) -> list[psutil.Process]:
    found = []
    for pid in session_pids(sid):
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(pid))
    return found


def run_demo(*args: str, timeout: float = 280) -> tuple[subprocess.CompletedProcess[str], int]:
    """The demo in a subprocess of its own process session; returns it and the session id."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for key in list(env):  # the demo must find its S3 settings itself (--local-s3)
        if key.startswith("AWS_"):
            del env[key]
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the demo did not finish in {timeout} s; output so far:\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), proc.pid


def assert_nothing_left(sid: int, text: str) -> None:
    """No process of the demo's session runs, no segment of its ember runtime is in /dev/shm."""
    session = re.search(r"\(session (\S+)\)", text)
    assert session, text
    deadline = time.monotonic() + 10
    while processes_in_session(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_in_session(sid), [p.cmdline() for p in processes_in_session(sid)]
    leaked = [s for s in ember_segments(SHM_DIR) if s.startswith(f"ember-{session.group(1)}-")]
    assert not leaked, leaked


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[subprocess.CompletedProcess[str], Path, int]:
    out = tmp_path_factory.mktemp("demo")
    run, sid = run_demo("--quick", "--local-s3", "--out", str(out))
    (out / "demo.stdout.txt").write_text(run.stdout)  # for a look after a failure
    (out / "demo.stderr.txt").write_text(run.stderr)
    return run, out, sid


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_demo_runs_every_stage_and_cleans_up(
        quick_run: tuple[subprocess.CompletedProcess[str], Path, int]) -> None:
    run, out, sid = quick_run
    assert run.returncode == 0, f"exit code {run.returncode}\n{run.stdout}\n{run.stderr}"
    text = run.stdout

    # every stage announced and finished, in order
    headers = [f"[{i}/5] {name}:" for i, name in
               enumerate(["data", "train", "batch inference", "serve", "rl"], start=1)]
    positions = [text.index(h) for h in headers]
    assert positions == sorted(positions)
    assert text.count("    done in ") == 5

    # data: tokenized windows in Parquet shards that exist where it says
    for split in ("pretrain", "finetune"):
        match = re.search(rf"{split}: \d+ docstrings .* -> ([\d,]+) windows of 64 tokens in "
                          rf"(\d+) Parquet shards: (\S+)", text)
        assert match, f"no data line for {split}:\n{text}"
        assert int(match.group(1).replace(",", "")) > 100
        shards = sorted(Path(match.group(3)).glob("*.parquet"))
        assert len(shards) == int(match.group(2)) > 0

    # train: two variants, each checkpoint holding shards uploaded by both ranks to S3
    for variant in ("base", "tuned"):
        match = re.search(rf"    {variant}: checkpoint (s3://\S+) \(shards from ranks \[0, 1\]\), "
                          rf"loss (\d+\.\d+)", text)
        assert match, f"no checkpoint line for {variant}:\n{text}"
    assert "tuned: fine-tune from s3://" in text
    losses = [float(m) for m in re.findall(r"\[base\] step +\d+ .* loss (\d+\.\d+)", text)]
    assert len(losses) >= 2 and losses[-1] < losses[0], losses  # the model learns

    # batch inference: show() prints every prompt with a completion from each variant
    prompts = script_constant("PROMPTS")
    assert isinstance(prompts, list) and prompts
    # show() prints each row as Python shows a dict (completions may hold quotes of either kind)
    rows = [ast.literal_eval(line) for line in text.splitlines() if line.startswith("{'prompt'")]
    by_prompt = {row["prompt"]: row for row in rows}
    for prompt in prompts:
        row = by_prompt.get(prompt)
        assert row is not None, f"no completion row for {prompt!r}:\n{text}"
        assert row["base"] and row["tuned"], row
    assert len(list((out / "completions").glob("*.json"))) > 0

    # serve: one OpenAI-compatible endpoint for both variants; each streamed chunk by chunk,
    # each chunk with its arrival time; then a burst that the engines batched together
    assert re.search(r"    serving http://127\.0\.0\.1:\d+/v1 \(OpenAI API; models: base, tuned\)",
                     text), text
    for variant in ("base", "tuned"):
        assert re.search(rf"    {variant}: loaded from its checkpoint in \d+\.\d s", text), text
        match = re.search(rf"    {variant}: 'Return the ' ->\n((?:      .*\n)+)     = (['\"])Return "
                          rf"the .*\2  \((\d+) chunks, (\d+) tokens\)", text)
        assert match, f"no stream for {variant}:\n{text}"
        times = [int(t) for t in re.findall(r"\+ *(\d+)ms", match.group(1))]
        assert len(times) == int(match.group(3)) > 1
        assert int(match.group(3)) <= int(match.group(4)) <= 16  # 16, or fewer at the eos
        assert times == sorted(times)
    burst = re.search(r"    burst: 16 concurrent streamed requests, (\d+) tokens in .* sequences "
                      r"decoded together at most: base (\d+), tuned (\d+)", text)
    assert burst, f"no burst line:\n{text}"
    assert 16 < int(burst.group(1)) <= 16 * 16
    assert int(burst.group(2)) > 1 and int(burst.group(3)) > 1  # batched, not one at a time

    # rl: a return curve, one line per iteration
    returns = [float(r) for r in re.findall(r"iter +\d+  return +(\d+\.\d+)", text)]
    assert len(returns) >= 1
    assert (out / "ppo_checkpoint").is_dir()

    # summary table, plots and the summary file
    for row in ("data", "train", "batch inference", "serve", "rl", "total"):
        assert re.search(rf"^\| {row} +\| +\d+\.\d s +\|", text, re.MULTILINE), row
    for name in ("training_loss.png", "ppo_return.png"):
        path = out / name
        assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"
        assert f"plot                {path}" in text
    assert "| rl " in (out / "summary.md").read_text()

    # nothing left behind: no process of its session, no shared-memory segment of its runtime
    assert_nothing_left(sid, text)


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_a_failing_stage_exits_1_naming_the_stage_and_cleans_up(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    run, sid = run_demo("--quick", "--out", str(tmp_path / "out"),
                        "--storage", str(not_a_folder / "checkpoints"), timeout=180)
    assert run.returncode == 1, f"{run.stdout}\n{run.stderr}"
    assert "[1/5] data:" in run.stdout and "[2/5] train:" in run.stdout
    assert "[3/5]" not in run.stdout  # it stops at the failed stage
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("DEMO FAILED: stage 'train' failed: StorageError: "), run.stderr
    assert str(not_a_folder) in last  # the message names the bad path
    assert_nothing_left(sid, run.stdout)
