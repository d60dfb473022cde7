"""Every example in ``examples/`` runs the way CI runs it (its ``--quick`` mode where it has
one, as its header says) and prints what its header promises.

Each runs in a subprocess of its own process session, with a temp folder of its own
(``TMPDIR``), and is then held to leaving nothing behind: no process of its session, no
``/dev/shm`` segment of its runtime, and no ``ember-*`` temp folder but the outputs it prints
(its checkpoints, its predictions). ``examples/llm_lifecycle.py`` (``make demo``) has its own
test, tests/e2e/test_demo.py.

The training examples start two workers that import torch and transformers or Lightning (and
most run twice, to resume): they are marked ``slow``. On 2 CPU cores shared with other test
runs (load ~12) the fast ones took 110 s together and the slow ones 265 s more.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ember.testing import LeakCheck, eventually
from tests._support import is_gone, session_pids

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TESTED_ELSEWHERE = {"llm_lifecycle.py": "tests/e2e/test_demo.py"}


@dataclass(frozen=True)
class Example:
    args: tuple[str, ...]
    check: Callable[[str, Path], None]  # (stdout, its temp folder) -> asserts
    outputs: tuple[str, ...] = ()  # prefixes of the ember-* temp folders it keeps on purpose
    slow: bool = False
    needs: tuple[str, ...] = ()  # modules it imports beyond the test extras' usual ones
    programs: tuple[str, ...] = ()  # programs it starts (on PATH)
    timeout: float = 110


def lines(pattern: str, text: str) -> list[re.Match[str]]:
    return list(re.finditer(pattern, text, re.MULTILINE))


def one(pattern: str, text: str) -> re.Match[str]:
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"no line matches {pattern!r} in:\n{text}"
    return found


def files_under(path: str) -> list[Path]:
    return [p for p in Path(path).rglob("*") if p.is_file()]


# -- what each example's header promises -----------------------------------------------------
def check_core_tour(out: str, _tmp: Path) -> None:
    headers = [one(rf"^{i}\. ", out).start() for i in range(1, 9)]
    assert headers == sorted(headers)
    one(r"ember\.init\(\) and a first task \(square\(7\) = 49\)", out)
    one(r"1000 tasks, sum of squares 0\.\.999 = 332833500", out)
    one(r"8 tasks read it \(zero-copy: True\)", out)
    one(r"running totals \[21\.5, 44\.5, 64\.0, 86\.0\], mean 21\.50", out)
    assert [m.group(1) for m in lines(r"got (\d) after", out)] == ["5", "4", "3", "2", "1"]
    one(r"caught ValueError \(also an ember\.errors\.TaskError: True\): .*expected a positive "
        r"number, got -3", out)
    assert sorted(m.group(1) for m in lines(r"^\s+(\d+) ready after", out)) == ["1", "4", "9"]
    one(r"4 x sum of squares 0\.\.31 = \[10416, 10416, 10416, 10416\] from 148 tasks", out)
    one(r"^tour finished in", out)


def check_data_batch_inference(out: str, _tmp: Path) -> None:
    import pyarrow.parquet as pq

    assert len(lines(r"^id=\s*\d+\s+score=[+-]\d+\.\d{4}$", out)) == 3
    folder = one(r"^8000 predictions written to (\S+)$", out).group(1)
    table = pq.read_table(folder)
    assert table.num_rows == 8000 and set(table.column_names) == {"id", "score"}
    assert sorted(table.column("id").to_pylist()) == list(range(8000))
    one(r"^Operator \d+ MapBatches\(Predictor\): .*8000 rows", out)


def check_data_text_inference(out: str, _tmp: Path) -> None:
    assert int(one(r"^corpus: ([\d,]+) bytes", out).group(1).replace(",", "")) > 10_000
    losses = [float(m.group(1)) for m in lines(r"^\s+step\s+\d+\s+loss (\d+\.\d+)", out)]
    assert len(losses) >= 2 and losses[-1] < losses[0]  # it learns, a little
    shown = lines(r"^\{'prompt': '(.*?)', 'completion': .+\}$", out)
    assert sorted(m.group(1) for m in shown) == sorted(
        ["Return a new ", "The default value ", "Raise ValueError if ", "This function ",
         "If the path ", "A list of ", "Create a ", "Open the "])
    one(r"^Operator \d+ MapBatches\(Completer\): .*8 rows", out)


def check_train_gpt_fsdp(out: str, _tmp: Path) -> None:
    losses = [float(m.group(1)) for m in lines(r"^step\s+\d+\s+loss (\d+\.\d+)$", out)]
    assert len(losses) == 10 and losses[-1] < losses[0]
    checkpoint = one(r"^checkpoints: (\S+) \(ranks \[0, 1\]\)$", out).group(1)
    assert {p.parent.name for p in files_under(checkpoint)} >= {"rank_0", "rank_1"}
    one(r"^resumed on 1 worker from step 9: loss \d+\.\d+$", out)


def check_air_2_5(out: str, _tmp: Path) -> None:
    epochs = lines(r"^epoch (\d)  loss (\d+\.\d+)  \((fresh start|resumed after epoch 1)\)$", out)
    assert [(int(m.group(1)), m.group(3)) for m in epochs] == [
        (0, "fresh start"), (1, "fresh start"), (2, "resumed after epoch 1"),
        (3, "resumed after epoch 1")]
    assert float(epochs[-1].group(2)) < float(epochs[0].group(2))
    checkpoint = one(r"^checkpoint (\S+): epoch 3, keys \['_preprocessor', 'epoch', 'model', "
                     r"'optimizer'\]$", out).group(1)
    assert {p.parent.name for p in files_under(checkpoint)} >= {"rank_0", "rank_1"}
    one(r"^y = 3\.0 x \+ 1\.0 learned as y = \d\.\d x \+ \d\.\d$", out)
    one(r"^preprocessor saved with it: BatchMapper\(fn=add_target, batch_format='pandas'\)$",
        out)


def check_accelerate_fsdp(out: str, _tmp: Path) -> None:
    held = lines(r"^rank 0 holds ([\d,]+) of ([\d,]+) parameters \(FSDP\)$", out)
    assert len(held) == 2 and all(m.group(1) != m.group(2) for m in held)
    steps = lines(r"^step\s+(\d+)\s+loss \d+\.\d+(   \(checkpoint\))?$", out)
    assert [int(m.group(1)) for m in steps] == list(range(10))
    one(r"^checkpoint (\S+)/gpt2_fsdp/checkpoint_\d+$", out)
    for rank in (0, 1):
        one(rf"^  rank {rank}: .*pytorch_model_fsdp_0/__{rank}_0\.distcp", out)
    one(r"^resumed at step 10: step 14 loss \d+\.\d+$", out)


def check_hf_transformers_gpt2(out: str, _tmp: Path) -> None:
    one(r"^step  10  loss \d+\.\d+$", out)
    one(r"^step  20  loss \d+\.\d+   eval_loss \d+\.\d+$", out)
    checkpoint = one(r"^checkpoint (\S+) \(HF step 20\)$", out).group(1)
    one(r"^  rank 0: .*checkpoint-20/model\.safetensors", out)
    one(r"^  rank 1: checkpoint-20/rng_state_1\.pth", out)
    assert any(p.name == "model.safetensors" for p in files_under(checkpoint))
    one(r"^rank 0's model reloaded with from_pretrained: loss \d+\.\d+ on the evaluation rows$",
        out)


def check_lightning_fsdp(out: str, _tmp: Path) -> None:
    held = one(r"^epoch 0  loss \d+\.\d+  \(rank 0 holds ([\d,]+) of ([\d,]+) parameters\)$",
               out)
    assert held.group(1) != held.group(2)  # sharded, not replicated
    one(r"^checkpoint (\S+):$", out)
    assert len(lines(r"^  rank_[01]/checkpoint\.ckpt/__[01]_0\.distcp\s+[\d,]+  bytes$", out)) == 2
    one(r"^resumed from epoch 0: epoch 1  loss \d+\.\d+$", out)


def check_ppo_cartpole(out: str, _tmp: Path) -> None:
    iters = lines(r"^iter  (\d)  return\s+(\d+\.\d)  steps\s+400  shares \[200, 200\]", out)
    assert [m.group(1) for m in iters] == ["1", "2"]
    assert Path(one(r"^saved to (\S+)$", out).group(1)).is_dir()
    assert int(one(r"^greedy episode with the restored policy: return (\d+)$", out).group(1)) >= 1


def check_rllib_2_5(out: str, _tmp: Path) -> None:
    iters = lines(r"^iter (\d)  episode_reward_mean\s+\d+\.\d  episodes_this_iter\s+(\d+)  "
                  r"timesteps_total\s+(\d+)  policy_loss [+-]\d+\.\d+  vf_loss \d+\.\d+  "
                  r"kl -?\d+\.\d+$", out)
    assert [(m.group(1), m.group(3)) for m in iters] == [("1", "400"), ("2", "800")]
    assert all(int(m.group(2)) >= 1 for m in iters)
    one(r"^evaluation: episode_reward_mean \d+\.\d over 5 episodes$", out)
    assert Path(one(r"^saved to (\S+)$", out).group(1)).is_dir()
    one(r"^restored: the same greedy actions on 20 observations: True$", out)


def check_ppo_breakout(out: str, _tmp: Path) -> None:
    one(r"^iter  1  return\s+\S+  episodes\s+\d+  steps\s+256  loss [+-]\d+\.\d+  entropy "
        r"\d+\.\d+ ", out)
    assert Path(one(r"^saved to (\S+)$", out).group(1)).is_dir()


def check_serve_multiplexed(out: str, _tmp: Path) -> None:
    one(r"^   replies: 12, all spam: True$", out)
    one(r"^   model loads: 1$", out)  # 12 concurrent requests, one load
    served = lines(r"^   (customer-\d):? served by (replica \d)$", out)
    assert len(served) == 8 + 2  # each of 8 customers on one replica, then the 2 newcomers
    holds = lines(r"^   replica \d: holds \[(.*)\], loaded (\d) models, closed 0 evicted ones$",
                  out)
    assert [int(m.group(2)) for m in holds] == [4, 4]  # each model loaded once, 4 per replica
    evicted = lines(r"^   replica \d: holds \[.*\], closed (\d) evicted models$", out)
    assert sum(int(m.group(1)) for m in evicted) == 2  # a newcomer each pushed one out
    one(r"^   \{'customer': 'customer-3', 'spam': True, 'score': \d+\.\d+, 'replica': \d+\}$",
        out)


def check_serve_graph_2_5(out: str, _tmp: Path) -> None:
    one(r"^   ember\.get\(handle\.predict\.remote\(3\)\) = "
        r"\{'features': 4, 'prediction': 40\}$", out)
    one(r"^   predictions for 0, 1, 2: \[10, 20, 30\]$", out)
    one(r"^   POST / 4 -> 200 \{'features': 5, 'prediction': 50\}$", out)
    one(r"^   POST / four -> 422 the request body is not JSON$", out)
    one(r"^   predict_with_route\('/add', 2, 3\) = 5$", out)
    one(r"^   POST /calc/scale \[2, 3\] -> 6$", out)


def check_serve_streaming(out: str, _tmp: Path) -> None:
    plain = one(r"^1\. .*\n((?:   .*\n)+)2\. ", out).group(1)
    events = one(r"^2\. .*\n((?:   .*\n)+)3\. ", out).group(1)
    tokens = [float(m.group(1)) for m in lines(r"^   \+(\d+\.\d+)s  '.+'$", plain)]
    arrivals = [float(m.group(1)) for m in lines(r"^   \+(\d+\.\d+)s  message: ", events)]
    assert len(tokens) == len(arrivals) == 8
    assert tokens[-1] > tokens[0] and arrivals[-1] > arrivals[0]  # streamed, not in one go
    one(r"^   content-type: text/plain", plain)
    one(r"^   content-type: text/event-stream", events)
    one(r"^   \+\d+\.\d+s  done: \{'tokens': 8, 'seconds': \d+\.\d+\}$", events)
    assert len(one(r"^3\. through a handle.*\n   (.*)$", out).group(1).split()) == 8
    one(r"^   generations the replica stopped early: 1$", out)
    one(r"^   app 'default': RUNNING, TextGenerator HEALTHY with 1 replicas$", out)


def check_dashboard_screenshots(out: str, tmp: Path) -> None:
    pages = ["overview", "actors", "tasks", "serve", "data", "train", "rl"]
    written = [Path(m.group(1)) for m in lines(r"^wrote (\S+)$", out)]
    assert [p.name for p in written] == [f"dashboard-{page}.png" for page in pages]
    for png in written:
        assert png.parent == tmp / "img"
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, png  # a page, not a blank


CASES = {
    "core_tour.py": Example(("--quick",), check_core_tour),
    "data_batch_inference.py": Example(("--quick",), check_data_batch_inference,
                                       outputs=("ember-inference-",)),
    "data_text_inference.py": Example(("--quick",), check_data_text_inference),
    "serve_multiplexed.py": Example((), check_serve_multiplexed),
    "serve_streaming.py": Example((), check_serve_streaming),
    "serve_graph_2_5.py": Example((), check_serve_graph_2_5),
    "ppo_cartpole.py": Example(("--quick",), check_ppo_cartpole, outputs=("ember-ppo-",)),
    "rllib_2_5.py": Example((), check_rllib_2_5, outputs=("ember-rllib-",)),
    # On the CPU (``--gpus-per-learner 0``, the default): its GPU settings need GPUs.
    "ppo_breakout.py": Example(("--quick",), check_ppo_breakout, outputs=("ember-ppo-breakout-",),
                               needs=("ale_py", "cv2")),
    "train_gpt_fsdp.py": Example(("--quick",), check_train_gpt_fsdp, outputs=("ember-gpt-",),
                                 slow=True, timeout=280),
    # Starts its 2 torch workers twice (one of them dies once, on purpose).
    "air_2_5.py": Example((), check_air_2_5, outputs=("ember-air-",), slow=True, timeout=200),
    "accelerate_fsdp.py": Example(("--quick",), check_accelerate_fsdp,
                                  outputs=("ember-accelerate-",), slow=True, timeout=280),
    "hf_transformers_gpt2.py": Example(("--quick",), check_hf_transformers_gpt2,
                                       outputs=("ember-hf-",), slow=True, timeout=280),
    "lightning_fsdp.py": Example(("--quick",), check_lightning_fsdp,
                                 outputs=("ember-lightning-",), slow=True, timeout=280),
    # Headless Chromium opens each page of a running program ({tmp}: the test's temp folder).
    "dashboard_screenshots.py": Example(("--out", "{tmp}/img"), check_dashboard_screenshots,
                                        slow=True, timeout=280,
                                        needs=("selenium",),
                                        programs=("chromium", "chromedriver")),
}


def test_every_example_has_a_smoke_test() -> None:
    on_disk = {p.name for p in EXAMPLES.glob("*.py")}
    assert on_disk - set(TESTED_ELSEWHERE) == set(CASES), (
        "add a smoke test to CASES for each new example (and a --quick mode if it is slow)")


def run_example(name: str, example: Example, tmp: Path) -> tuple[str, str, int]:
    """The example in a subprocess of its own session; (stdout, stderr, session id)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp)}
    args = [arg.replace("{tmp}", str(tmp)) for arg in example.args]
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / name), *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=example.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{name} did not finish in {example.timeout} s:\n{stdout}\n{stderr[-3000:]}")
    assert proc.returncode == 0, f"{name} exited with {proc.returncode}:\n{stdout}\n{stderr}"
    return stdout, stderr, proc.pid


def params() -> list[object]:
    out = []
    for name, example in CASES.items():
        marks = [pytest.mark.timeout(example.timeout + 30)]
        if example.slow:
            marks.append(pytest.mark.slow)
        missing = [m for m in example.needs if importlib.util.find_spec(m) is None]
        if missing:
            marks.append(pytest.mark.skip(reason=f"{name} needs {missing} (pip install "
                                                 "'ember-scale[rl]')"))
        absent = [program for program in example.programs if shutil.which(program) is None]
        if absent:
            marks.append(pytest.mark.skip(reason=f"{name} needs {absent} (apt-get install "
                                                 "chromium chromium-driver)"))
        out.append(pytest.param(name, marks=marks, id=name.removesuffix(".py")))
    return out


@pytest.mark.parametrize("name", params())
def test_example_runs_and_prints_what_its_header_says(name: str, tmp_path: Path) -> None:
    example = CASES[name]
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    check = LeakCheck(timeout=15)
    stdout, _stderr, sid = run_example(name, example, tmp)
    (tmp_path / "stdout.txt").write_text(stdout)  # for a look after a failure

    # Lines that workers print reach the driver prefixed "(Name pid=N) ", as with Ray.
    example.check(re.sub(r"^\(\S+ pid=\d+\) ", "", stdout, flags=re.MULTILINE), tmp)

    eventually(lambda: not [p for p in session_pids(sid) if not is_gone(p)],
               timeout=15, what=f"the processes of {name}'s session to exit")
    check.check()  # and no segment of its runtime is left in /dev/shm
    # The user's session folder (how the ember CLI finds running programs) may stay, empty.
    sessions = tmp / f"ember-{os.getuid()}"
    assert not sessions.exists() or not any(sessions.iterdir()), list(sessions.iterdir())
    left = sorted(entry.name for entry in tmp.iterdir() if entry.name.startswith("ember-")
                  and entry != sessions and not entry.name.startswith(example.outputs))
    assert not left, f"{name} left temp folders it does not print: {left}"
