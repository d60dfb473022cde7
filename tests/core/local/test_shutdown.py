"""``ember.shutdown()`` on the local backend leaves nothing behind, whatever was going on.

Each test checks the two things a user would find: no process of the runtime still running and
no ``/dev/shm/ember-*`` segment of its session left.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest

import ember
from ember.errors import RuntimeNotInitializedError, WorkerCrashedError
from tests._support import alive_after, describe, ember_segments, wait_for

MB = 1 << 20


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
    wait_for(lambda: (tmp_path / "task").exists() and (tmp_path / "call").exists(),
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
