"""Nothing happens at import time: ``import ember`` loads no heavy library and starts nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "pyarrow", "uvicorn", "ray", "numpy")


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("statement", ["import ember", "import ember.errors", "import ember.core",
                                       "import ember.util", "import ember.util.queue",
                                       "import ember.exceptions, ember.actor",
                                       "import ember.testing", "import ember.air",
                                       "import ember.dag", "import ember.rllib",
                                       "import ember; ember.air.session, ember.dag.InputNode"])
def test_import_loads_no_heavy_library(statement):
    code = (f"{statement}; import sys, json; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")

    assert json.loads(run_python(code)) == []


def test_import_starts_no_thread_and_no_process():
    code = ("import ember, threading, json, os, psutil; "
            "print(json.dumps([threading.active_count(), "
            "len(psutil.Process().children(recursive=True)), ember.is_initialized()]))")

    assert json.loads(run_python(code)) == [1, 0, False]


def test_import_creates_no_shared_memory_segment():
    # Segment names carry the creating process's pid; other programs on the machine may be
    # creating segments of their own meanwhile, so only this process's count.
    code = ("import os; mine = lambda: {n for n in os.listdir('/dev/shm') "
            "if n.startswith('ember-') and f'-{os.getpid()}-' in n}; before = mine(); "
            "import ember; print(sorted(mine() - before))")

    assert run_python(code).strip() == "[]"


def test_a_library_whose_extra_is_missing_names_the_extra_to_install():
    code = ("import sys; sys.modules['numpy'] = None; import ember\n"
            "try:\n    ember.data\nexcept ModuleNotFoundError as exc:\n    print(exc)\n")
    assert "ember.data needs 'numpy'" in run_python(code)
    assert "pip install 'ember-scale[data]'" in run_python(code)


def test_the_ray_backend_without_ray_names_the_extra_to_install():
    code = ("import sys; sys.modules['ray'] = None; import ember\n"
            "try:\n    ember.init(backend='ray')\nexcept ModuleNotFoundError as exc:\n"
            "    print(exc, ember.is_initialized())\n")
    out = run_python(code)
    assert "pip install 'ember-scale[ray]'" in out and out.strip().endswith("False")
