"""The local backend's driver: worker pool, scheduling, GPUs, actors' processes, generators.

Behaviour that only the local backend promises (or that only it lets a test observe, such as
the worker processes themselves); the shared contract is in ``tests/backends/``.
"""

from __future__ import annotations

import gc
import os
import signal
import time

import psutil
import pytest

import ember
from ember.errors import GetTimeoutError, WorkerCrashedError
from ember.testing import eventually
from tests._support import is_gone, settle


def get(refs):
    return ember.get(refs, timeout=60)


@ember.remote
def pid():
    return os.getpid()


# -- the worker pool --------------------------------------------------------------------------


def test_workers_are_reused_across_tasks(ember_local):
    pids = {get(pid.remote()) for _ in range(20)}

    assert 1 <= len(pids) <= 2  # num_cpus=2: never more workers than tasks can run at once


def test_workers_are_not_children_of_the_driver(ember_local):
    worker = psutil.Process(get(pid.remote()))

    assert worker.ppid() != os.getpid()  # forked by the fork server, not by the driver
    assert worker.parent().ppid() == os.getpid()


def test_worker_killed_while_idle_is_replaced(ember_local):
    victim = get(pid.remote())
    os.kill(victim, signal.SIGKILL)
    eventually(lambda: is_gone(victim), what="the worker to die")

    assert victim not in get([pid.remote() for _ in range(5)])


def test_worker_killed_from_outside_mid_task_is_reported(ember_local, tmp_path):
    @ember.remote(max_retries=0)
    def report_and_wait(path):
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)

    path = tmp_path / "pid"
    ref = report_and_wait.remote(str(path))
    worker = int(eventually(lambda: path.exists() and path.read_text()))
    os.kill(worker, signal.SIGKILL)

    with pytest.raises(WorkerCrashedError, match="report_and_wait"):
        get(ref)


@pytest.mark.parametrize("ember_local", [{"num_cpus": 1}], indirect=True)
def test_nested_tasks_finish_on_a_single_cpu(ember_local):
    @ember.remote
    def leaf(x):
        return x + 1

    @ember.remote
    def middle(x):
        return sum(get([leaf.remote(x), leaf.remote(x + 10)]))

    @ember.remote
    def top():
        return get([middle.remote(i) for i in range(3)])

    assert get(top.remote()) == [12, 14, 16]


@pytest.mark.parametrize("ember_local", [{"num_cpus": 1}], indirect=True)
def test_many_short_tasks_and_a_nested_one_share_a_single_cpu(ember_local):
    @ember.remote
    def short(x):
        return x

    @ember.remote
    def nested(x):
        return get(short.remote(x)) * 2

    refs = [short.remote(i) for i in range(200)] + [nested.remote(i) for i in range(5)]

    assert get(refs) == [*range(200), 0, 2, 4, 6, 8]


def test_available_cpus_return_after_tasks_finish(ember_local):
    @ember.remote(num_cpus=2)
    def whole_machine():
        return ember.available_resources()["CPU"]

    assert get(whole_machine.remote()) == 0
    eventually(lambda: ember.available_resources()["CPU"] == 2, what="the CPUs to come back")


# -- GPUs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ember_local", [{"num_cpus": 2, "num_gpus": 2}], indirect=True)
def test_fake_gpus_are_usable_on_a_machine_without_gpus(ember_local):
    @ember.remote(num_gpus=2)
    def both():
        return (os.environ["CUDA_VISIBLE_DEVICES"],
                ember.get_runtime_context().get_accelerator_ids())

    assert ember.cluster_resources()["GPU"] == 2
    assert get(both.remote()) == ("0,1", {"GPU": ["0", "1"]})


@pytest.mark.parametrize("ember_local", [{"num_cpus": 2, "num_gpus": 1}], indirect=True)
def test_reused_worker_forgets_the_gpu_of_its_previous_task(ember_local):
    @ember.remote(num_gpus=1)
    def gpu_task():
        return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")

    @ember.remote
    def cpu_task():
        return (os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES"),
                ember.get_runtime_context().get_accelerator_ids()["GPU"])

    gpu_pid, visible = get(gpu_task.remote())
    later = get([cpu_task.remote() for _ in range(10)])

    assert visible == "0"
    assert any(p == gpu_pid for p, _, _ in later), "the GPU task's worker was not reused"
    for _, env, ids in later:
        assert ids == [] and env != "0"


@pytest.mark.parametrize("ember_local", [{"num_cpus": 2, "num_gpus": 2}], indirect=True)
def test_fractional_gpu_tasks_share_one_device(ember_local, tmp_path):
    @ember.remote(num_gpus=0.5)
    def half(folder, me, other):
        open(os.path.join(folder, me), "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(folder, other)) and time.monotonic() < deadline:
            time.sleep(0.01)
        return os.environ["CUDA_VISIBLE_DEVICES"], os.path.exists(os.path.join(folder, other))

    (first, met_a), (second, met_b) = get([half.remote(str(tmp_path), "a", "b"),
                                          half.remote(str(tmp_path), "b", "a")])

    assert met_a and met_b
    assert first == second and first in {"0", "1"}


@pytest.mark.parametrize("ember_local", [{"num_cpus": 2, "num_gpus": 1}], indirect=True)
def test_gpu_of_a_killed_actor_is_given_back(ember_local):
    @ember.remote(num_gpus=1)
    class OnGpu:
        def ids(self):
            return ember.get_runtime_context().get_accelerator_ids()["GPU"]

    first = OnGpu.remote()
    assert get(first.ids.remote()) == ["0"]
    ember.kill(first)
    second = OnGpu.remote()

    assert get(second.ids.remote()) == ["0"]


# -- actors' processes ------------------------------------------------------------------------


def test_each_actor_has_its_own_process(ember_local):
    @ember.remote
    class Proc:
        def pid(self):
            return os.getpid()

    actors = [Proc.remote() for _ in range(3)]
    pids = get([a.pid.remote() for a in actors])

    assert len(set(pids)) == 3
    assert os.getpid() not in pids


def test_actor_out_of_scope_ends_its_process_after_its_calls(ember_local):
    @ember.remote
    class Proc:
        def pid(self):
            return os.getpid()

        def slow_echo(self, x):
            time.sleep(0.2)
            return x

    actor = Proc.remote()
    actor_pid = get(actor.pid.remote())
    last = actor.slow_echo.remote("submitted before the handle went away")
    del actor
    gc.collect()

    assert get(last) == "submitted before the handle went away"
    eventually(lambda: is_gone(actor_pid), what="the actor's process to exit")


def test_killed_actor_process_is_gone(ember_local):
    @ember.remote
    class Proc:
        def pid(self):
            return os.getpid()

    actor = Proc.remote()
    actor_pid = get(actor.pid.remote())

    ember.kill(actor)

    eventually(lambda: is_gone(actor_pid), what="the killed actor's process to exit")


def test_killing_queued_actors_is_bookkeeping_only(ember_local):
    """2,000 actors that wait for a CPU are killed: no process starts, the two running actors
    keep their CPUs, and the loop is quick (it took 54 s when each kill gave back CPUs that a
    queued actor never held, which started the next one in a new process)."""

    @ember.remote(num_cpus=1)
    class Slot:
        def ping(self):
            return "pong"

    running = [Slot.remote() for _ in range(2)]
    assert get([a.ping.remote() for a in running]) == ["pong", "pong"]
    queued = [Slot.remote() for _ in range(2000)]
    processes_before = len(psutil.Process().children(recursive=True))

    started = time.monotonic()
    for actor in queued:
        ember.kill(actor)
    elapsed = time.monotonic() - started

    assert elapsed < 10, f"killing 2,000 queued actors took {elapsed:.1f} s"
    assert ember.available_resources()["CPU"] == 0  # the running two still hold both CPUs
    assert len(psutil.Process().children(recursive=True)) <= processes_before
    with pytest.raises(ember.errors.ActorDiedError, match="killed"):
        get(queued[-1].ping.remote())
    assert get([a.ping.remote() for a in running]) == ["pong", "pong"]
    ember.kill(running[0])
    replacement = Slot.remote()  # the freed CPU goes to a new actor, not to a killed one
    assert get(replacement.ping.remote()) == "pong"


def test_an_actor_out_of_scope_before_it_started_never_starts(ember_local, tmp_path):
    @ember.remote(num_cpus=2)
    class Hog:
        def __init__(self, marker=None):
            if marker:
                open(marker, "w").close()

        def ping(self):
            return "pong"

    first = Hog.remote()
    assert get(first.ping.remote()) == "pong"
    marker = tmp_path / "constructed"
    waiting = Hog.remote(str(marker))  # queued behind the first: both CPUs are taken
    del waiting
    gc.collect()
    ember.kill(first)
    eventually(lambda: ember.available_resources()["CPU"] == 2,
               what="the CPUs to come back")
    second = Hog.remote()  # the next actor starts: the dropped one was not ahead of it
    assert get(second.ping.remote()) == "pong"
    assert not marker.exists()


def test_restarted_actor_runs_in_a_new_process(ember_local):
    @ember.remote(max_restarts=1)
    class Proc:
        def pid(self):
            return os.getpid()

    actor = Proc.remote()
    before = get(actor.pid.remote())
    os.kill(before, signal.SIGKILL)

    def new_pid():
        try:
            return get(actor.pid.remote())
        except ember.errors.ActorDiedError:
            return None

    after = eventually(new_pid, what="the actor to restart")
    assert after != before


def test_calls_to_a_threaded_actor_run_on_several_threads(ember_local):
    @ember.remote(max_concurrency=3)
    class Threads:
        def __init__(self):
            import threading

            self.barrier = threading.Barrier(3, timeout=20)

        def thread(self):
            import threading

            self.barrier.wait()
            return threading.get_ident()

    actor = Threads.remote()

    assert len(set(get([actor.thread.remote() for _ in range(3)]))) == 3


# -- synchronous actor calls -----------------------------------------------------------------
# The thread that submits a call to an idle actor reads the reply itself when it then waits for
# it; whatever it does instead, nothing the actor sends may be left unread for long.


def test_actor_call_whose_result_is_held_still_gets_answers_from_the_driver(ember_local, tmp_path):
    @ember.remote
    class Nested:
        def work(self, path):
            value = ember.get(ember.put(41)) + 1  # a request that only the driver can answer
            with open(path, "w") as f:
                f.write(str(value))
            return value

    actor = Nested.remote()
    assert get(actor.work.remote(str(tmp_path / "warm-up"))) == 42
    out = tmp_path / "out"

    ref = actor.work.remote(str(out))  # held; this thread makes no ember call while it waits
    eventually(out.exists, timeout=20, what="the actor's nested get to be answered")

    assert out.read_text() == "42"
    assert get(ref) == 42


def test_actor_call_result_can_be_read_by_another_thread(ember_local):
    import threading

    @ember.remote
    class Slow:
        def echo(self, x):
            time.sleep(0.2)
            return x

    actor = Slow.remote()
    ref = actor.echo.remote("hello")
    seen = []
    reader = threading.Thread(target=lambda: seen.append(get(ref)))
    reader.start()
    reader.join(60)

    assert seen == ["hello"]
    assert get(ref) == "hello"


def test_actor_call_result_passed_on_or_waited_for_right_away(ember_local):
    @ember.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def incr(self):
            time.sleep(0.05)
            self.n += 1
            return self.n

    @ember.remote
    def double(x):
        return 2 * x

    @ember.remote
    def unbox(box):
        return ember.get(box[0]) + 100

    actor = Counter.remote()
    assert get(double.remote(actor.incr.remote())) == 2
    ready, _ = ember.wait([actor.incr.remote()], timeout=60)
    assert get(ready) == [2]
    assert get(unbox.remote([actor.incr.remote()])) == 103
    actor.incr.remote()  # dropped at once
    assert get(actor.incr.remote()) == 5


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


@ember.remote
class Echo:
    def ping(self, x=None):
        return x

    def pid(self):
        return os.getpid()


def test_quick_calls_poll_but_an_idle_actor_and_its_caller_use_no_cpu(ember_local):
    # Both ends of a quick exchange poll for a moment before blocking (EMBER_SPIN_US); once
    # the calls stop, neither the actor nor the driver may keep spinning.
    actor = Echo.remote()
    worker = psutil.Process(get(actor.pid.remote()))
    driver = psutil.Process()
    for i in range(3000):
        assert ember.get(actor.ping.remote(i)) == i

    # A thread left spinning burns about a whole CPU second per second; the driver here is the
    # test process, whose other threads and garbage collector (after many earlier tests) may
    # take a few tens of milliseconds, so measure after the replies' clean-up has settled and
    # judge with a bound far below a spinning thread's.
    gc.collect()
    time.sleep(0.3)
    actor_before, driver_before = _cpu_seconds(worker), _cpu_seconds(driver)
    time.sleep(1.0)

    assert _cpu_seconds(worker) - actor_before < 0.1
    assert _cpu_seconds(driver) - driver_before < 0.25
    assert get(actor.ping.remote("still there")) == "still there"


def test_calls_with_slow_and_quick_replies_mixed_keep_their_answers(ember_local):
    # Replies slower than the spin make both ends block; quick ones make them spin again.
    @ember.remote
    class Mixed:
        def run(self, i):
            if i % 7 == 0:
                time.sleep(0.002)
            return i * i

    actor = Mixed.remote()
    answers = []
    for i in range(300):
        answers.append(ember.get(actor.run.remote(i), timeout=60))
        if i % 50 == 0:
            time.sleep(0.01)  # a gap: the actor stops spinning and blocks

    assert answers == [i * i for i in range(300)]


def test_actor_calls_work_with_spinning_turned_off(monkeypatch):
    monkeypatch.setenv("EMBER_SPIN_US", "0")
    ember.init(num_cpus=2)
    try:
        actor = Echo.remote()
        assert [ember.get(actor.ping.remote(i), timeout=60) for i in range(200)] == list(range(200))
        with pytest.raises(GetTimeoutError):
            ember.get(ember.remote(lambda: time.sleep(5)).remote(), timeout=0.05)
    finally:
        ember.shutdown()


def test_cancel_of_an_actor_call_waiting_for_its_argument_names_the_method(ember_local, tmp_path):
    gate = tmp_path / "gate"

    @ember.remote
    def blocked(path):
        while not os.path.exists(path):
            time.sleep(0.01)
        return 1

    @ember.remote
    class Adder:
        def add(self, x):
            return x + 1

    actor = Adder.remote()
    call = actor.add.remote(blocked.remote(str(gate)))

    ember.cancel(call)
    gate.touch()

    with pytest.raises(ember.errors.TaskCancelledError, match=r"Adder\.add was cancelled"):
        get(call)
    assert get(actor.add.remote(1)) == 2


def test_a_task_cancelled_during_an_import_leaves_its_worker_able_to_import_it(tmp_path):
    # pandas' __init__ imports pandas.core, then pandas.testing reads pd.core: stopped between
    # the two, the package leaves sys.modules and pandas.core stays, and every later import in
    # that worker failed with "partially initialized module 'pandas' has no attribute 'core'"
    # (seen when Dataset.limit cancelled the reads it no longer needed).
    package = tmp_path / "slowpkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import pathlib, time\nimport slowpkg.core\n"
        f"pathlib.Path({str(tmp_path / 'importing')!r}).touch()\ntime.sleep(3)\n"
        "from slowpkg import late\n")
    (package / "core.py").write_text("x = 41\n")
    (package / "late.py").write_text("import slowpkg\ny = slowpkg.core.x + 1\n")

    @ember.remote
    def use(path):
        import sys
        sys.path.insert(0, path)
        import slowpkg
        return os.getpid(), slowpkg.late.y

    ember.init(num_cpus=1)  # one worker: the second task runs where the first was cancelled
    try:
        first = use.remote(str(tmp_path))
        eventually(lambda: (tmp_path / "importing").exists(), what="the import to start")
        ember.cancel(first)
        with pytest.raises(ember.errors.TaskCancelledError):
            get(first)
        worker, answer = get(use.remote(str(tmp_path)))
        assert answer == 42
        assert worker == get(ember.remote(os.getpid).remote())
    finally:
        ember.shutdown()


# -- generators -------------------------------------------------------------------------------


def test_dropping_a_generator_stops_its_producer(ember_local, tmp_path):
    closed = tmp_path / "closed"
    produced = tmp_path / "produced"

    @ember.remote
    def endless(closed, produced):
        try:
            i = 0
            while True:
                with open(produced, "a") as f:
                    f.write("x")
                yield i
                i += 1
        finally:
            open(closed, "w").close()

    gen = endless.remote(str(closed), str(produced))
    assert [get(next(gen)) for _ in range(3)] == [0, 1, 2]
    del gen
    gc.collect()

    eventually(closed.exists, what="the producer to be closed")
    count = settle(lambda: len(produced.read_text()))
    assert count <= 3 + 16 + 1


def test_generator_task_frees_its_worker_for_other_tasks(ember_local):
    @ember.remote
    def numbers(n):
        yield from range(n)

    for _ in range(3):
        assert [get(r) for r in numbers.remote(5)] == list(range(5))
    assert get(pid.remote())
