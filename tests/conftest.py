"""Fixtures for the whole suite.

- ``ember_local``: a local runtime for one test (``num_cpus=2`` unless the test passes other
  ``ember.init`` arguments with ``@pytest.mark.parametrize("ember_local", [{...}], indirect=True)``),
  always shut down afterwards, and checked to leave no process of its own running.
- an autouse check that a test which ends with no runtime running left no new child process and
  no new ``/dev/shm/ember-*`` segment of its own behind (segments of other programs that use
  ember on the machine at the same time are told apart by their session's lock).

Both are ``ember.testing.LeakCheck``, without its temp-folder check: the suite shares the
machine's temp folder with other programs that use ember at the same time (and moving the
suite's ``TMPDIR`` would move Ray's session folders, whose socket paths have a length limit).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

import ember
from ember.testing import LeakCheck

# DeepSpeed builds its CPU comm op on first use (a minute or two) into TORCH_EXTENSIONS_DIR: keep
# it in the virtual environment, where the test set-up builds it (Makefile) and where the workers
# that the tests start look for it too. (Outside a venv, torch's default user cache stays.)
if sys.prefix != sys.base_prefix:
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch-extensions"))

# Examples touch files in /dev/shm and a loaded CI machine has slow moments: judge properties by
# their outcome, never by how long an example took.
settings.register_profile("ember", deadline=None)
settings.load_profile("ember")


@pytest.fixture
def ember_local(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    options: dict[str, Any] = {"num_cpus": 2, **getattr(request, "param", {})}
    check = LeakCheck()
    ember.init(**options)
    try:
        yield options
    finally:
        check.check()  # shuts the runtime down, then nothing of it may be left


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    check = LeakCheck()
    yield
    if ember.is_initialized():
        # A runtime that outlives this test (a module-scoped backend) is checked when it stops.
        return
    problems = check.leftovers()
    if problems:
        pytest.fail("the test left things behind after shutdown: " + "; ".join(problems))


# -- S3 --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def _moto_server() -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1 at a free port, for one test module."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(_moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket's ``s3://`` URL. The AWS variables are set before any ember runtime
    starts (request this fixture before ``ember_local``), so the workers inherit them."""
    import uuid

    import s3fs

    for key, value in {"AWS_ENDPOINT_URL": _moto_server, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_SESSION_TOKEN": "testing"}.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"ember-test-{uuid.uuid4().hex[:12]}"
    fs: Any = s3fs.S3FileSystem()
    fs.mkdir(bucket)
    try:
        yield f"s3://{bucket}"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


# -- leaving the test process -----------------------------------------------------------------
# Ray's Python side keeps gRPC threads (grpcio's event engine) that can crash the interpreter
# while it finalizes, after every test has passed and the summary is printed (seen once in a
# clean-clone run; the kernel log put the crash in gRPC's memory): a known gRPC/Ray problem
# (grpc/grpc#11804) that is not ember's. When Ray ran in this process, the session ends
# with os._exit once pytest is done, keeping pytest's exit status; ember's own teardown (and
# the leftover checks above) has already run by then.
_exit_status: int | None = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    import os
    import sys

    if _exit_status is not None and "grpc" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status)
