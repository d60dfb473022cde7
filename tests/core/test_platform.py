"""The local backend says at once where it cannot run, and names what to use instead."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest

import ember
from ember.core._platform import local_backend_problem
from ember.errors import UnsupportedPlatformError


@pytest.mark.parametrize("platform", ["darwin", "win32", "freebsd14"])
def test_other_systems_are_refused_with_the_ray_backend_named(platform: str) -> None:
    problem = local_backend_problem(platform)
    assert problem is not None
    assert repr(platform) in problem
    assert "backend='ray'" in problem and "Linux" in problem


def test_a_linux_without_a_usable_shm_folder_is_refused(tmp_path: Path) -> None:
    problem = local_backend_problem("linux", shm_dir=str(tmp_path / "missing"))
    assert problem is not None and "missing" in problem and "--shm-size" in problem


def test_this_machine_runs_the_local_backend() -> None:
    assert local_backend_problem(sys.platform) is None


def test_init_on_an_unsupported_system_fails_before_starting_anything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    children_before = set(psutil.Process().children(recursive=True))
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(UnsupportedPlatformError, match="backend='ray'") as caught:
        ember.init(num_cpus=1)
    assert isinstance(caught.value, RuntimeError)
    assert not ember.is_initialized()
    assert set(psutil.Process().children(recursive=True)) == children_before
