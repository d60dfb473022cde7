"""``ember.shutdown()`` on the local backend leaves nothing behind, whatever was going on; nor
does a driver program that is killed with its whole process group or interrupted with Ctrl-C.

Each test checks the two things a user would find: no process of the runtime still running and
no ``/dev/shm/ember-*`` segment of its session left.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest

import ember
from ember.errors import RuntimeNotInitializedError, WorkerCrashedError
from ember.testing import LeakCheck, eventually
from tests._support import SHM_DIR, alive_after, describe, ember_segments, is_gone, session_pids

MB = 1 << 20
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _stop_runtime_left_by_a_failed_test():
    yield
    ember.shutdown()


def start(**options):
    ember.init(num_cpus=2, **options)
    return ember.get_runtime_context().get_job_id()


def shut_down_and_assert_clean(session: str) -> None:
    started = psutil.Process().children(recursive=True)
    assert started, "the runtime had no processes to check"

    ember.shutdown()

    alive = alive_after(started)
    assert not alive, f"processes still running after shutdown: {describe(alive)}"
    assert not psutil.Process().children(recursive=True)
    left = [n for n in ember_segments() if n.startswith(f"ember-{session}-")]
    assert not left, f"segments left after shutdown: {left}"
    assert not ember.is_initialized()


def test_shutdown_after_work_with_large_objects():
    @ember.remote
    def make():
        return np.ones(MB)

    session = start()
    kept = [ember.put(np.zeros(MB)), make.remote()]
    ember.get(kept, timeout=60)
    assert [n for n in ember_segments() if n.startswith(f"ember-{session}-")]

    shut_down_and_assert_clean(session)


def test_shutdown_after_a_worker_was_sigkilled():
    @ember.remote(max_retries=0)
    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    session = start()
    with pytest.raises(WorkerCrashedError):
        ember.get(die.remote(), timeout=60)

    shut_down_and_assert_clean(session)


def test_shutdown_removes_a_segment_whose_writer_was_killed():
    @ember.remote(max_retries=0)
    def put_then_die():
        ember.put(np.ones(MB))  # written to shared memory by this worker ...
        os.kill(os.getpid(), signal.SIGKILL)  # ... which dies before it reports back

    session = start()
    with pytest.raises(WorkerCrashedError):
        ember.get(put_then_die.remote(), timeout=60)

    shut_down_and_assert_clean(session)


def test_shutdown_with_tasks_and_actor_calls_still_running(tmp_path):
    @ember.remote
    def forever(started):
        open(started, "w").close()
        time.sleep(300)

    @ember.remote
    class Busy:
        def forever(self, started):
            open(started, "w").close()
            time.sleep(300)

    session = start()
    running = forever.remote(str(tmp_path / "task"))
    actor = Busy.options(max_concurrency=2).remote()
    calls = [actor.forever.remote(str(tmp_path / "call"))]
    eventually(lambda: (tmp_path / "task").exists() and (tmp_path / "call").exists(),
               what="the work to start")

    shut_down_and_assert_clean(session)
    del running, calls


def test_shutdown_with_live_actors_and_a_paused_generator():
    @ember.remote
    class Idle:
        def ping(self):
            return "pong"

    @ember.remote
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    session = start()
    actors = [Idle.remote() for _ in range(3)]
    ember.get([a.ping.remote() for a in actors], timeout=60)
    gen = endless.remote()
    assert ember.get(next(gen), timeout=60) == 0

    shut_down_and_assert_clean(session)
    del gen


def test_get_blocked_in_another_thread_is_released_by_shutdown():
    @ember.remote
    def forever():
        time.sleep(300)

    session = start()
    ref = forever.remote()
    outcome: list[BaseException | object] = []

    def blocked_get():
        try:
            outcome.append(ember.get(ref, timeout=120))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=blocked_get)
    thread.start()
    try:
        shut_down_and_assert_clean(session)
    finally:
        thread.join(60)

    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], RuntimeNotInitializedError)


def test_generator_consumer_blocked_in_another_thread_is_released_by_shutdown():
    @ember.remote
    def slow():
        yield 0
        time.sleep(300)
        yield 1

    session = start()
    gen = slow.remote()
    assert ember.get(next(gen), timeout=60) == 0
    outcome: list[object] = []

    def blocked_next():
        try:
            outcome.append(next(gen))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=blocked_next)
    thread.start()
    try:
        shut_down_and_assert_clean(session)
    finally:
        thread.join(60)

    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], (StopIteration, RuntimeNotInitializedError))


def test_shutdown_twice_is_safe_and_a_new_runtime_starts_clean():
    session = start()
    shut_down_and_assert_clean(session)
    ember.shutdown()

    @ember.remote
    def one():
        return 1

    second = start()
    assert second != session
    assert ember.get(one.remote(), timeout=60) == 1
    shut_down_and_assert_clean(second)


# A driver program that leaves its runtime busy: segments written by the driver and by a worker,
# a live actor and a running task. It prints what the test must find afterwards: its session,
# the fork server's pid and two workers' pids. A tail (below) says how it then waits.
DRIVER = """
import json, os, time
import numpy as np
import ember

ember.init(num_cpus=2)

@ember.remote
def where():
    return os.getpid(), os.getppid()

@ember.remote
def make():
    return np.ones(1 << 20)

@ember.remote
def forever():
    time.sleep(300)

@ember.remote
class Holder:
    def pid(self):
        return os.getpid()

kept = [ember.put(np.zeros(1 << 20)), make.remote()]
ember.get(kept, timeout=60)
task_worker, server = ember.get(where.remote(), timeout=60)
holder = Holder.remote()
actor_worker = ember.get(holder.pid.remote(), timeout=60)
running = forever.remote()
report = json.dumps({"session": ember.get_runtime_context().get_job_id(), "server": server,
                     "workers": [task_worker, actor_worker]})
"""

SLEEP = """
print(report, flush=True)
time.sleep(120)
"""


def interrupted_get(then: str) -> str:
    return f"""
try:
    print(report, flush=True)
    ember.get(running, timeout=120)
except KeyboardInterrupt:
    print("KeyboardInterrupt in ember.get", flush=True)
    {then}
"""


@dataclass
class Driver:
    """A driver program running in a process group (and session) of its own, and its report."""

    proc: subprocess.Popen[str]
    stderr: Path
    session: str = "?"
    server: int = 0
    workers: tuple[int, ...] = ()

    def segments(self) -> list[str]:
        return sorted(n for n in ember_segments() if n.startswith(f"ember-{self.session}-"))

    def processes(self) -> list[psutil.Process]:
        """The driver, its fork server and every worker (the fork server's children)."""
        children = [p.pid for p in psutil.Process(self.server).children()]
        pids = {self.proc.pid, self.server, *self.workers, *children}
        assert len(pids) >= 4, f"expected a driver, a fork server and two workers: {pids}"
        return [psutil.Process(pid) for pid in pids]

    def assert_nothing_left(self, processes: list[psutil.Process]) -> None:
        alive = alive_after(processes, timeout=10)
        assert not alive, f"processes still running: {describe(alive)}"
        late = [pid for pid in session_pids(self.server) if not is_gone(pid)]
        assert not late, f"workers started meanwhile are still running: {late}"
        eventually(lambda: not self.segments(), timeout=10,
                   what=f"the segments of session {self.session} to be removed")


@contextlib.contextmanager
def driver_program(tmp_path: Path, tail: str) -> Iterator[Driver]:
    """Run ``DRIVER + tail`` in a process group of its own, the way a shell or a job runner
    starts a program. Whatever is left when the test ends, failed or not, is killed and its
    segments removed, so a failing test leaks nothing."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER + tail)
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=err, text=True,
            cwd=tmp_path, start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    driver = Driver(proc, stderr)
    try:
        readable, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if readable else ""
        assert line, f"the driver printed no report; its stderr:\n{driver.stderr.read_text()}"
        report = json.loads(line)
        driver.session, driver.server = report["session"], report["server"]
        driver.workers = tuple(report["workers"])
        yield driver
    finally:
        left = [*session_pids(proc.pid), *driver.workers]
        if driver.server:
            left += [driver.server, *session_pids(driver.server)]
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        eventually(lambda: all(is_gone(pid) for pid in left), timeout=10,
                   what="the processes a failed test left to be killed")
        for name in driver.segments():
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(SHM_DIR, name))


def test_killing_the_drivers_process_group_leaves_no_process_and_no_segment(tmp_path):
    # kill -9 -PGID, as `timeout -s KILL` or a job runner ending the job's process group does.
    with driver_program(tmp_path, SLEEP) as driver:
        processes = driver.processes()
        assert len(driver.segments()) >= 2
        # In a session of their own, yet found by the driver's session id (EMBER_DRIVER_SID).
        assert {p.pid for p in processes} <= set(session_pids(driver.proc.pid))

        os.killpg(driver.proc.pid, signal.SIGKILL)

        assert driver.proc.wait(timeout=10) == -signal.SIGKILL
        driver.assert_nothing_left(processes)


def test_sigterm_to_every_process_of_the_runtime_leaves_no_process_and_no_segment(tmp_path):
    # What systemd does when it stops a service: SIGTERM to every process of its cgroup at once.
    # The driver last: were it first, a worker might see it go and sweep before its own SIGTERM.
    with driver_program(tmp_path, SLEEP) as driver:
        processes = driver.processes()
        assert len(driver.segments()) >= 2

        for process in sorted(processes, key=lambda p: p.pid == driver.proc.pid):
            with contextlib.suppress(ProcessLookupError):  # the server's SIGTERM took it along
                os.kill(process.pid, signal.SIGTERM)

        assert driver.proc.wait(timeout=10) == -signal.SIGTERM
        driver.assert_nothing_left(processes)


@pytest.mark.parametrize("then", ["ember.shutdown()", "raise"], ids=["shutdown", "atexit"])
def test_ctrl_c_in_a_driver_blocked_in_get_leaves_no_process_and_no_segment(tmp_path, then):
    with driver_program(tmp_path, interrupted_get(then)) as driver:
        processes = driver.processes()
        assert len(driver.segments()) >= 2
        # Blocked in ember.get by now, most likely; the driver catches the interrupt either way.
        eventually(lambda: psutil.Process(driver.proc.pid).status() == psutil.STATUS_SLEEPING,
                   timeout=10, what="the driver to block")

        os.killpg(driver.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does

        code = driver.proc.wait(timeout=30)
        assert driver.proc.stdout is not None
        assert "KeyboardInterrupt in ember.get" in driver.proc.stdout.read()
        assert code == (0 if then == "ember.shutdown()" else -signal.SIGINT), (
            driver.stderr.read_text())
        driver.assert_nothing_left(processes)


@pytest.mark.alone
def test_a_runtime_killed_whole_is_cleaned_up_by_the_next_one(tmp_path, caplog):
    # Every process of a runtime SIGKILLed at once (a whole cgroup killed, the OOM killer):
    # none is left to clean up, so the next runtime on the machine removes what it left.
    with driver_program(tmp_path, SLEEP) as driver:
        processes: list[psutil.Process] = []
        while True:  # stopped first, so that none sees another die (nor forks one more)
            more = [p for p in driver.processes() if p.pid not in {q.pid for q in processes}]
            if not more:
                break
            for process in more:
                os.kill(process.pid, signal.SIGSTOP)
            processes += more
        left = driver.segments()
        assert len(left) >= 2
        for process in processes:
            os.kill(process.pid, signal.SIGKILL)
        assert not alive_after(processes, timeout=10)
        assert driver.segments() == left  # nobody was there to remove them

        with caplog.at_level(logging.WARNING, logger="ember"):
            ember.init(num_cpus=1)
        try:
            assert driver.segments() == []
            assert f"removed {len(left)} shared-memory segment(s)" in caplog.text
        finally:
            LeakCheck().check()


@pytest.mark.alone
def test_a_runtime_that_cannot_write_its_lock_file_still_runs_and_says_so(
        monkeypatch, caplog):
    from ember.core import _shm

    def refuse(names):
        raise PermissionError(13, "Permission denied", _shm.SHM_DIR)

    monkeypatch.setattr(_shm, "hold_session_lock", refuse)
    with caplog.at_level(logging.WARNING, logger="ember"):
        ember.init(num_cpus=1)
    try:
        assert "cannot create this runtime's lock file" in caplog.text
        big = ember.put(np.ones(4 * MB))  # shared memory itself still works
        assert ember.get(ember.remote(lambda a: float(a.sum())).remote(big), timeout=60) == 4 * MB
    finally:
        LeakCheck().check()

