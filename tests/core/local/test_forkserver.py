"""``ember/core/local/_forkserver.py``: workers start from a fork server, not from ``__main__``.

Each test runs a small driver script in its own interpreter, the way a user runs a program.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import ember
from ember.testing import eventually
from tests._support import ember_segments, is_gone

ROOT = Path(__file__).resolve().parents[3]


def run_script(path: Path, body: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    path.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          timeout=timeout, cwd=path.parent, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_script_without_a_main_guard_runs_its_body_once(tmp_path):
    done = run_script(tmp_path / "no_guard.py", """
        import ember

        print("module body ran", flush=True)

        @ember.remote
        def add_one(x):
            return x + 1

        @ember.remote
        class Echo:
            def echo(self, x):
                return x

        print("task:", ember.get(add_one.remote(1), timeout=30), flush=True)
        print("actor:", ember.get(Echo.remote().echo.remote("hi"), timeout=30), flush=True)
        ember.shutdown()
    """)

    assert done.returncode == 0, done.stderr
    assert done.stdout.count("module body ran") == 1
    assert "task: 2" in done.stdout and "actor: hi" in done.stdout


def test_functions_and_classes_defined_in_main_reach_the_workers(tmp_path):
    done = run_script(tmp_path / "defs.py", """
        import ember

        SCALE = 3

        class Point:
            def __init__(self, x):
                self.x = x

        def helper(p):
            return Point(p.x * SCALE)

        @ember.remote
        def scale(p):
            return helper(p)

        print(ember.get(scale.remote(Point(2)), timeout=30).x)
    """)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6"


def test_program_that_exits_without_shutdown_leaves_nothing_running(tmp_path):
    done = run_script(tmp_path / "no_shutdown.py", """
        import json, os
        import ember

        @ember.remote
        def where():
            return os.getpid(), os.getppid()

        @ember.remote
        class Proc:
            def pid(self):
                return os.getpid()

        worker, server = ember.get(where.remote(), timeout=30)
        actor = ember.get(Proc.remote().pid.remote(), timeout=30)
        big = ember.put(bytearray(1 << 21))
        print(json.dumps({"pids": [worker, server, actor],
                          "session": ember.get_runtime_context().get_job_id()}))
    """)

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for pid in report["pids"]:
        eventually(lambda pid=pid: is_gone(pid), what=f"process {pid} to exit")
    assert not [n for n in ember_segments() if n.startswith(f"ember-{report['session']}-")]


def test_workers_die_with_a_driver_that_was_killed(tmp_path):
    script = tmp_path / "killed_driver.py"
    script.write_text(textwrap.dedent("""
        import json, os, sys, time
        import ember

        @ember.remote
        def where():
            return os.getpid(), os.getppid()

        @ember.remote
        class Proc:
            def pid(self):
                return os.getpid()

        worker, server = ember.get(where.remote(), timeout=30)
        actor = Proc.remote()
        print(json.dumps([worker, server, ember.get(actor.pid.remote(), timeout=30)]), flush=True)
        time.sleep(120)
    """))
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        pids = json.loads(driver.stdout.readline())
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        driver.stdout.close()

    for pid in pids:
        eventually(lambda pid=pid: is_gone(pid), what=f"process {pid} to exit after the driver")


def test_worker_does_not_inherit_the_drivers_modules(ember_local):
    """Workers fork from a small server process, not from the driver with all it imported."""

    @ember.remote
    def has_pytest():
        import sys

        return "_pytest" in sys.modules

    assert ember.get(has_pytest.remote(), timeout=30) is False


def test_workers_import_the_drivers_ember_not_one_in_the_current_directory(tmp_path):
    # `python -c` would put the current directory first on the fork server's path; a folder
    # named ember there (a checkout, an unrelated package) must not replace the driver's.
    work = tmp_path / "work"
    (work / "ember").mkdir(parents=True)
    (work / "ember" / "__init__.py").write_text("raise ImportError('the wrong ember')\n")
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        import ember

        @ember.remote
        def where():
            return ember.__file__

        print(ember.get(where.remote(), timeout=30) == ember.__file__)
        ember.shutdown()
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, cwd=work, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_a_dead_fork_server_fails_work_at_once_instead_of_hanging():
    from ember.core import _api
    from ember.errors import BackendError

    ember.init(num_cpus=2)
    try:
        @ember.remote
        def pid():
            return os.getpid()

        @ember.remote
        class Sleeper:
            def nap(self, seconds):
                import time

                time.sleep(seconds)

        worker_pid = ember.get(pid.remote(), timeout=30)
        sleeper = Sleeper.remote()
        ember.get(sleeper.nap.remote(0), timeout=30)
        pending = sleeper.nap.remote(3)
        os.kill(_api._backend._forkserver._proc.pid, signal.SIGKILL)

        def refused() -> bool:
            try:
                pid.remote()
            except BackendError:
                return True
            return False

        eventually(refused, what="submissions to be refused once the fork server died")
        try:
            ember.get(pending, timeout=10)
        except BackendError as exc:
            assert "fork server exited" in str(exc)
        else:
            raise AssertionError("the pending call did not fail")
    finally:
        ember.shutdown()
    eventually(lambda: is_gone(worker_pid), what="the orphaned worker to be killed by shutdown")
