"""The backend fixture of the contract suite: every test runs on ``local`` and on ``ray``.

Both backends get the same machine: 2 CPUs, 2 (fake) GPUs and 2 units of a custom resource.
The local runtime starts per test (it starts in a fraction of a second); the Ray instance starts
once per module (it takes seconds) and is shared, so contract tests clean up what they create
(named actors are killed, actors go out of scope) and poll where Ray reports state lazily. The ray
half is marked ``slow`` as well as ``ray``: it starts a Ray instance and Ray starts a worker
process for every blocked task.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

import ember
from tests._support import Gate, shutdown_and_check

CLUSTER = {"num_cpus": 2, "num_gpus": 2, "resources": {"widget": 2.0}}


def _ray_unavailable() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "the ray package is not installed (pip install 'ember[ray]')"
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
        shutdown_and_check(timeout=30)


@pytest.fixture
def backend(backend_name: str) -> Iterator[str]:
    """The running backend's name; a fresh local runtime per test, the shared Ray instance."""
    if backend_name == "local":
        ember.init(**CLUSTER)
        try:
            yield "local"
        finally:
            shutdown_and_check()
    else:
        yield backend_name


@pytest.fixture
def gate(tmp_path) -> Gate:
    return Gate(tmp_path)
