"""``tests/compat/_runner.py``: the import change, the header, the judging of a run, the table."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.compat import _runner


def test_to_ember_maps_every_form_of_importing_ray_and_nothing_else() -> None:
    source = textwrap.dedent('''\
        import ray
        import ray as r, os
        import ray.train.torch
        import ray.data as rd
        from ray import serve
        from ray.serve.handle import (DeploymentHandle,
                                      DeploymentResponse)
        import rayon_like_name
        text = "import ray"  # import ray
        def f():
            from ray.util.queue import Queue
        ''')
    assert _runner.to_ember(source) == textwrap.dedent('''\
        import ember as ray
        import ember as r, os
        import ember.train.torch, ember as ray
        import ember.data as rd
        from ember import serve
        from ember.serve.handle import (DeploymentHandle,
                                      DeploymentResponse)
        import rayon_like_name
        text = "import ray"  # import ray
        def f():
            from ember.util.queue import Queue
        ''')


def write(folder: Path, area: str, name: str, text: str) -> Path:
    (folder / area).mkdir(parents=True, exist_ok=True)
    path = folder / area / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    return path


def test_header_is_read_and_checked(tmp_path: Path) -> None:
    program = _runner.load(write(tmp_path, "core", "p", """\
        # compat: topic doc/source/ray-core/x.rst
        # compat: change a -> b: the reason
        # compat: expect done
        # compat: timeout 90
        # compat: slow
        # compat: pending serve.batch (being added)
        import ray
        # compat: skip not header any more
        """))
    assert (program.id, program.topic, program.changes, program.expects) == (
        "core/p", "doc/source/ray-core/x.rst", ("a -> b: the reason",), ("done",))
    assert (program.timeout_s, program.slow, program.skip) == (90.0, True, None)
    assert program.not_run_reason == "pending: serve.batch (being added)"

    bad = {
        "no topic": "# compat: change a -> b: why\n",
        "no reason": "# compat: topic x\n# compat: change a -> b\n",
        "unknown key": "# compat: topic x\n# compat: skipped because\n",
        "copied code's origin": "# compat: origin doc/x.py (ray-project/ray)\n",
    }
    for problem, text in bad.items():
        name = "".join(c if c.isalnum() else "_" for c in problem)
        with pytest.raises(_runner.HeaderError):
            _runner.load(write(tmp_path, "core", name, text))
    with pytest.raises(_runner.HeaderError, match="programs live in one of"):
        _runner.load(write(tmp_path, "elsewhere", "p", "# compat: topic x\n"))


def run_text(tmp_path: Path, text: str) -> _runner.Outcome:
    return _runner.run(_runner.load(write(tmp_path, "core", "p", text)), timeout_s=60)


def test_a_ray_program_runs_on_ember_and_is_judged(tmp_path: Path) -> None:
    passed = run_text(tmp_path, """\
        # compat: topic x
        # compat: expect 3
        import ray
        print(ray.get(ray.remote(lambda: 3).remote()), ray.__name__)
        """)
    assert passed.status == "passed", passed.output
    assert "3 ember" in passed.output

    missing = run_text(tmp_path, "# compat: topic x\n# compat: expect never printed\n")
    assert missing.problems == ["did not print 'never printed'"]

    failing = run_text(tmp_path, "# compat: topic x\nraise SystemExit(3)\n")
    assert failing.problems == ["exit status 3"]


def test_a_program_that_reaches_the_real_ray_fails(tmp_path: Path) -> None:
    outcome = run_text(tmp_path, '# compat: topic x\n__import__("ray")\n')
    assert outcome.status == "failed"
    assert "reached the real `ray` package" in outcome.output


def test_a_program_that_leaves_a_process_running_fails(tmp_path: Path) -> None:
    outcome = run_text(tmp_path, """\
        # compat: topic x
        import subprocess
        subprocess.Popen(["sleep", "60"])
        """)
    assert outcome.problems == ["left 1 processes running after it exited"]


def test_table_counts_skips_as_held_and_not_passed(tmp_path: Path) -> None:
    program = _runner.load(write(tmp_path, "core", "p", "# compat: topic x\n"))
    served = _runner.load(write(tmp_path, "serve", "s", "# compat: topic x\n"))
    outcomes = [_runner.Outcome(program, "passed"), _runner.Outcome(program, "failed"),
                _runner.Outcome(program, "skipped"), _runner.Outcome(served, "passed")]
    assert _runner.table(outcomes).splitlines()[2:] == [
        "| core | 3 | 1 | 1 | 1 | 33% |",
        "| serve | 1 | 1 | 0 | 0 | 100% |",
        "| **all** | 4 | 2 | 1 | 1 | 50% |",
    ]


def test_every_program_of_the_suite_has_a_valid_header() -> None:
    programs = _runner.discover()
    assert {p.area for p in programs} == set(_runner.AREAS)
    for program in programs:
        _runner.to_ember(program.path.read_text())  # parses, and every ray import maps
