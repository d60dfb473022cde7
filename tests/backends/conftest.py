"""The backend fixture of the contract suite: every test runs on ``local`` and on ``ray``.

Both backends get the same machine: 2 CPUs, 2 (fake) GPUs and 2 units of a custom resource.
The local runtime starts per test (it starts in a fraction of a second); the Ray instance starts
once per module (it takes seconds) and is shared, so contract tests clean up what they create
(named actors are killed, actors go out of scope) and poll where Ray reports state lazily. The ray
half is marked ``slow`` as well as ``ray``: it starts a Ray instance and Ray starts a worker
process for every blocked task.

Code that several tests ship to workers comes from fixtures here, made inside the fixture so that
cloudpickle ships it by value: ``wait_until_exists`` (for remote code to wait on a gate or a
marker file), ``blocker_class`` (an actor held up until a gate opens) and ``splitter_class`` (an
actor method with ``num_returns=2``).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import ember
from ember.testing import LeakCheck
from tests._support import Gate

CLUSTER = {"num_cpus": 2, "num_gpus": 2, "resources": {"widget": 2.0}}


def _ray_unavailable() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "the ray package is not installed (pip install 'ember-scale[ray]')"
    if importlib.util.find_spec("ember.core.ray_backend") is None:
        return ("ember.core.ray_backend does not exist yet: the contract suite runs against the "
                "ray backend once that module is written")
    return None


RAY = pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.slow])


@pytest.fixture(scope="module", params=["local", RAY])
def backend_name(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "local":
        yield "local"
        return
    reason = _ray_unavailable()
    if reason is not None:
        pytest.skip(reason)
    ember.init(backend="ray", include_dashboard=False, **CLUSTER)
    try:
        yield "ray"
    finally:
        LeakCheck(timeout=30).check()


@pytest.fixture
def backend(backend_name: str) -> Iterator[str]:
    """The running backend's name; a fresh local runtime per test, the shared Ray instance."""
    if backend_name == "local":
        ember.init(**CLUSTER)
        try:
            yield "local"
        finally:
            LeakCheck().check()
    else:
        yield backend_name


@pytest.fixture
def gate(tmp_path) -> Gate:
    return Gate(tmp_path)


@pytest.fixture
def wait_until_exists() -> Callable[..., bool]:
    """A function for remote code: ``wait_until_exists(path, timeout=60)`` polls until the file
    ``path`` exists (a gate opened, a peer's marker written) or ``timeout`` s pass, and returns
    whether it exists.

    It is made inside this fixture so that cloudpickle ships it by value with the task or actor
    that calls it (workers never import ``tests``). It polls instead of calling ``ember.get``, so a
    task waiting in it keeps its CPUs.
    """

    def wait_until_exists(path: str, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        return os.path.exists(path)

    return wait_until_exists


@pytest.fixture
def blocker_class(wait_until_exists: Callable[..., bool]) -> Any:
    """An actor class (made here, so it ships by value) whose ``block(gate_path, started)`` call
    creates the file ``started``, then holds the actor until the gate opens (60 s at most) and
    returns ``"unblocked"``; ``ping()`` returns ``"pong"``."""

    @ember.remote
    class Blocker:
        def block(self, gate_path: str, started: str) -> str:
            open(started, "w").close()
            wait_until_exists(gate_path)
            return "unblocked"

        def ping(self) -> str:
            return "pong"

    return Blocker


@pytest.fixture
def splitter_class() -> Any:
    """An actor class whose ``halves(word)`` method is declared with ``num_returns=2``: it returns
    the two halves of ``word`` as two refs."""

    @ember.remote
    class Splitter:
        @ember.method(num_returns=2)
        def halves(self, word: str) -> tuple[str, str]:
            middle = len(word) // 2
            return word[:middle], word[middle:]

    return Splitter
