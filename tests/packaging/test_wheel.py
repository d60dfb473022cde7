"""Build the wheel and the sdist as a user's ``python -m build`` would, install the wheel into a
fresh virtual environment outside the repository, and run what a new user runs first there:
a task, an actor, a data pipeline to Parquet, a serve request, a two-worker ``TorchTrainer``
step and the ``ember`` command. Nothing of the source tree (no editable install, no ``tests/``)
is on that environment's path."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import ember

REPO = Path(__file__).resolve().parents[2]
# The CPU build of torch that lies on this machine's disk (see the Makefile): the fresh venv
# takes it rather than the multi-GB CUDA build from PyPI.
TORCH = "torch==2.13.0"

pytestmark = pytest.mark.slow


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "VIRTUAL_ENV", "EMBER_"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args: list[str], cwd: Path, timeout: float) -> str:
    done = subprocess.run(args, cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}\n"
                             f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}")
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(REPO)],
         cwd=out, timeout=600)
    yield out


def _wheel(dist: Path) -> Path:
    (wheel,) = dist.glob("ember_scale-*.whl")
    return wheel


def test_the_wheel_holds_every_file_of_the_package(dist: Path) -> None:
    wheel = _wheel(dist)
    assert wheel.name.startswith(f"ember_scale-{ember.__version__}-py3-none-any")
    tracked = subprocess.run(["git", "ls-files", "ember"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = sorted(name for name in tracked if name not in names)
    assert not missing, f"the wheel lacks package files (package data?): {missing}"
    assert not any(name.startswith("tests/") for name in names)
    (sdist,) = dist.glob("ember_scale-*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"README.md", "pyproject.toml", "CHANGELOG.md", "ember/__init__.py"} <= members


@pytest.mark.timeout(1500)  # a fresh venv's installs: about 2 minutes with pip's cache, more without
def test_a_fresh_venv_runs_the_first_steps_from_the_wheel(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, timeout=120)
    python = str(venv / "bin" / "python")
    _run([python, "-m", "pip", "install", "-q", TORCH], cwd=tmp_path, timeout=600)
    _run([python, "-m", "pip", "install", "-q", f"{_wheel(dist)}[data,serve,train]"],
         cwd=tmp_path, timeout=900)
    workdir = tmp_path / "work"
    workdir.mkdir()
    program = workdir / "smoke_program.py"
    program.write_text((Path(__file__).parent / "smoke_program.py").read_text())
    out = _run([python, str(program)], cwd=workdir, timeout=600)
    first = out.splitlines()[0]
    assert str(venv) in first and str(REPO) not in first, first
    assert "ok task [0, 1, 4, 9]" in out
    assert "ok actor 5" in out
    assert "ok data 1000 332833500" in out
    assert "ok serve hello wheel" in out
    assert "ok train 2" in out
    version = _run([str(venv / "bin" / "ember"), "--version"], cwd=workdir, timeout=60)
    assert version.strip() == f"ember {ember.__version__}"
