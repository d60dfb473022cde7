"""The contract of the core API, run against every backend (``local`` and ``ray``).

Every test here states behaviour that a program written against ``ember`` may rely on whichever
backend runs it. Remote code is defined inside each test, or inside a function or fixture that
makes it (``_counter_class``, the fixtures of ``conftest.py``): cloudpickle ships such code by
value, so no worker has to import this module.

Where the backends legitimately differ, the test says so; local-only guarantees (shared-memory
segments, the fork server, worker reuse) live in ``tests/core/local/``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

import ember
from ember.errors import (
    ActorDiedError,
    EmberError,
    GetTimeoutError,
    ResourceError,
    SerializationError,
    TaskCancelledError,
    TaskError,
    WorkerCrashedError,
)
from ember.testing import eventually
from tests._support import Gate, settle

pytestmark = pytest.mark.usefixtures("backend")

GET_TIMEOUT = 60


def get(refs, timeout: float = GET_TIMEOUT):
    return ember.get(refs, timeout=timeout)


def call_until_served(method, *args, timeout: float = 60):
    """Call an actor method until the (restarting) actor serves it.

    Right after ``ember.kill(..., no_restart=False)`` a call may still reach the dying process
    and fail with ``ActorDiedError`` on both backends; calls made once the restart is under way
    must be served.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get(method.remote(*args))
        except ActorDiedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _counter_class():
    """An actor class that counts its ``increment()`` calls from 0; ``reconstructed()`` says
    whether this instance is a restart. Made inside a function, so it ships by value."""

    @ember.remote
    class Counter:
        def __init__(self):
            self.count = 0

        def increment(self):
            self.count += 1
            return self.count

        def reconstructed(self):
            return ember.get_runtime_context().was_current_actor_reconstructed

    return Counter


# -- tasks: values ---------------------------------------------------------------------------


def test_task_returns_its_value_for_args_and_kwargs():
    @ember.remote
    def combine(a, b, *, scale=1, extra=None):
        return {"sum": (a + b) * scale, "extra": extra}

    ref = combine.remote(2, 3, scale=10, extra=("x", [1.5, None]))

    assert isinstance(ref, ember.ObjectRef)
    assert get(ref) == {"sum": 50, "extra": ("x", [1.5, None])}


def test_get_of_a_list_returns_values_in_the_order_of_the_refs():
    @ember.remote
    def identity(x):
        return x

    refs = [identity.remote(i) for i in range(20)]

    assert get(refs) == list(range(20))
    assert get(list(reversed(refs))) == list(reversed(range(20)))


def test_top_level_ref_arguments_are_resolved_and_nested_ones_stay_refs():
    @ember.remote
    def inspect_args(top, nested):
        return (top, type(nested[0]).__name__, ember.get(nested[0], timeout=60))

    value = ember.put("payload")

    assert get(inspect_args.remote(value, [value])) == ("payload", "ObjectRef", "payload")


def test_output_of_one_task_feeds_another_without_a_get_in_between():
    @ember.remote
    def add(a, b):
        return a + b

    total = add.remote(add.remote(1, 2), add.remote(3, 4))

    assert get(total) == 10


def test_put_stores_a_value_that_many_tasks_read():
    @ember.remote
    def length(items):
        return len(items)

    ref = ember.put(list(range(1000)))

    assert isinstance(ref, ember.ObjectRef)
    assert get(ref) == list(range(1000))
    assert get([length.remote(ref) for _ in range(5)]) == [1000] * 5


def test_a_ref_created_inside_a_task_can_be_returned_and_read_by_the_caller():
    @ember.remote
    def make_inner():
        return [ember.put("made inside")]

    (inner,) = get(make_inner.remote())

    assert get(inner) == "made inside"


@pytest.mark.parametrize("k", [2, 3])
def test_num_returns_gives_one_ref_per_returned_value(k):
    @ember.remote(num_returns=k)
    def spread(n):
        return tuple(range(n))

    refs = spread.remote(k)

    assert isinstance(refs, list) and len(refs) == k
    assert get(refs) == list(range(k))


def test_num_returns_set_with_options():
    @ember.remote
    def pair():
        return "a", "b"

    first, second = pair.options(num_returns=2).remote()

    assert get(second) == "b" and get(first) == "a"


def test_large_numpy_arrays_round_trip_and_come_back_read_only():
    @ember.remote
    def double(array):
        return array * 2

    array = np.arange(2_000_000, dtype=np.float64)  # 16 MB: held in the object store
    ref = ember.put(array)
    doubled = get(double.remote(ref))
    stored = get(ref)

    np.testing.assert_array_equal(doubled, array * 2)
    np.testing.assert_array_equal(stored, array)
    assert not stored.flags.writeable
    with pytest.raises(ValueError):
        stored[0] = 1.0


def test_object_refs_are_awaitable_and_have_futures():
    @ember.remote
    def square(x):
        return x * x

    @ember.remote
    def fail():
        raise KeyError("missing")

    async def await_ref(ref):
        return await ref

    assert asyncio.run(asyncio.wait_for(await_ref(square.remote(7)), GET_TIMEOUT)) == 49
    assert square.remote(5).future().result(timeout=GET_TIMEOUT) == 25
    error = fail.remote().future().exception(timeout=GET_TIMEOUT)
    assert isinstance(error, KeyError) and isinstance(error, TaskError)
    with pytest.raises(KeyError, match="missing"):
        asyncio.run(asyncio.wait_for(await_ref(fail.remote()), GET_TIMEOUT))


# -- tasks: errors ---------------------------------------------------------------------------


def test_user_exception_is_both_its_own_type_and_task_error_with_remote_traceback():
    @ember.remote
    def reject_input(x):
        raise ValueError(f"bad input {x}")

    with pytest.raises(ValueError, match="bad input 42") as info:
        get(reject_input.remote(42))

    error = info.value
    assert isinstance(error, TaskError) and isinstance(error, EmberError)
    text = str(error)
    assert "Traceback" in text
    assert "reject_input" in text  # the remote frame
    assert "bad input 42" in text


def test_user_defined_exception_type_comes_back_as_that_type():
    class QuotaExceeded(Exception):
        def __init__(self, user, limit):
            super().__init__(user, limit)
            self.user = user
            self.limit = limit

    @ember.remote
    def spend():
        raise QuotaExceeded("ada", 3)

    with pytest.raises(QuotaExceeded) as info:
        get(spend.remote())

    assert isinstance(info.value, TaskError)
    assert (info.value.user, info.value.limit) == ("ada", 3)


def test_error_of_an_upstream_task_fails_the_dependent_task():
    @ember.remote
    def broken():
        raise ZeroDivisionError("upstream")

    @ember.remote
    def downstream(x):
        return x + 1

    with pytest.raises(ZeroDivisionError, match="upstream"):
        get(downstream.remote(broken.remote()))


def test_get_raises_get_timeout_error_and_the_task_still_finishes(gate: Gate, wait_until_exists):
    @ember.remote
    def wait_for_gate(path):
        wait_until_exists(path)
        return "opened"

    ref = wait_for_gate.remote(gate.path)

    with pytest.raises(GetTimeoutError) as info:
        ember.get(ref, timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    gate.open()
    assert get(ref) == "opened"


def test_worker_killed_mid_task_is_retried(tmp_path):
    @ember.remote(max_retries=1)
    def die_once(marker):
        if not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return "second attempt"

    assert get(die_once.remote(str(tmp_path / "attempted"))) == "second attempt"


@pytest.mark.parametrize("max_retries", [0, 2], ids=["max_retries=0", "max_retries=2"])
def test_worker_killed_with_no_retries_left_raises_worker_crashed_error(tmp_path, max_retries):
    attempts = tmp_path / "attempts"

    @ember.remote(max_retries=max_retries)
    def always_die(path):
        with open(path, "a") as f:
            f.write("attempt\n")
        os.kill(os.getpid(), signal.SIGKILL)

    @ember.remote
    def still_working():
        return "yes"

    with pytest.raises(WorkerCrashedError):
        get(always_die.remote(str(attempts)))
    # The first run and max_retries more: with max_retries=0 it fails at once.
    assert attempts.read_text().count("attempt") == 1 + max_retries
    assert get(still_working.remote()) == "yes"


def test_retry_exceptions_retries_user_errors(tmp_path):
    attempts = tmp_path / "attempts"

    @ember.remote(max_retries=3, retry_exceptions=True)
    def flaky(path):
        with open(path, "a") as f:
            f.write("attempt\n")
        with open(path) as f:
            count = f.read().count("attempt")
        if count < 3:
            raise ConnectionError(f"flaky attempt {count}")
        return count

    assert get(flaky.remote(str(attempts))) == 3


@pytest.mark.parametrize("retry_exceptions", [False, [KeyError]], ids=["off", "other-type"])
def test_user_errors_are_not_retried_unless_asked(tmp_path, retry_exceptions):
    attempts = tmp_path / "attempts"

    @ember.remote(max_retries=3, retry_exceptions=retry_exceptions)
    def fail(path):
        with open(path, "a") as f:
            f.write("attempt\n")
        raise ValueError("not retried")

    with pytest.raises(ValueError, match="not retried"):
        get(fail.remote(str(attempts)))
    assert attempts.read_text().count("attempt") == 1


@pytest.mark.parametrize(
    ("options", "resource", "asked", "total"),
    [
        ({"num_cpus": 3}, "CPU", 3, 2),
        ({"num_gpus": 4}, "GPU", 4, 2),
        ({"resources": {"unobtainium": 1}}, "unobtainium", 1, 0),
        ({"resources": {"widget": 5}}, "widget", 5, 2),
    ],
    ids=["cpus", "gpus", "unknown-resource", "too-much-custom"],
)
def test_impossible_task_request_returns_refs_that_raise_resource_error_at_once(
    options, resource, asked, total, caplog
):
    """As in Ray, submitting work that can never run is not an error in itself (a Ray program
    that submits and never waits carries on), but a warning; waiting on it fails at once."""

    @ember.remote
    def never():
        return "ran"

    with caplog.at_level(logging.WARNING, logger="ember"):
        ref = never.options(**options).remote()
    assert isinstance(ref, ember.ObjectRef)
    assert any("can never run" in r.getMessage() and resource in r.getMessage()
               for r in caplog.records)

    ready, _ = ember.wait([ref], timeout=GET_TIMEOUT)
    assert ready == [ref]
    with pytest.raises(ResourceError) as info:
        ember.get(ref, timeout=GET_TIMEOUT)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert resource in message
    assert str(asked) in message and str(total) in message  # what was asked for, what there is
    with pytest.raises(ResourceError):
        asyncio.run(asyncio.wait_for(_await(ref), GET_TIMEOUT))


async def _await(ref):
    return await ref


def test_impossible_request_of_other_shapes_raises_at_once_too():
    @ember.remote(num_cpus=3)
    def pair():
        return 1, 2

    @ember.remote(num_cpus=3)
    def stream():
        yield 1

    _, second = pair.options(num_returns=2).remote()
    with pytest.raises(ResourceError):
        get(second)
    with pytest.raises(ResourceError):
        get(next(stream.remote()))


def test_impossible_actor_request_returns_a_handle_whose_calls_raise_at_once(caplog):
    @ember.remote
    class Greedy:
        def ping(self):
            return "pong"

    with caplog.at_level(logging.WARNING, logger="ember"):
        greedy = Greedy.options(num_gpus=8).remote()
    assert isinstance(greedy, ember.ActorHandle)
    assert any("can never run" in r.getMessage() for r in caplog.records)
    with pytest.raises(ResourceError, match="GPU"):
        get(greedy.ping.remote())
    ember.kill(greedy)  # a no-op, not an error


def test_work_in_a_placement_group_sees_it_and_children_join_only_when_captured():
    """Ray's ``get_current_placement_group()``: ``None`` in the driver and outside a group; the
    group itself in a task or actor placed in it, and in the work they start when (and only
    when) their strategy captures child tasks. A group is found by its name and listed by
    ``placement_group_table`` until it is removed."""
    from ember.util import (
        get_current_placement_group,
        get_placement_group,
        placement_group,
        placement_group_table,
        remove_placement_group,
    )
    from ember.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    def current_id():
        group = get_current_placement_group()
        assert ember.get_runtime_context().get_placement_group_id() == (
            None if group is None else group.id)
        return None if group is None else group.id

    group_id = ember.remote(num_cpus=0)(current_id)

    @ember.remote(num_cpus=0)
    def starts_a_child():
        return current_id(), ember.get(group_id.remote())

    @ember.remote(num_cpus=0)
    class Member:
        def ids(self):
            return ember.get_runtime_context().get_placement_group_id(), ember.get(
                group_id.remote())

    name = unique("pg")
    pg = placement_group([{"CPU": 1}], name=name)
    get(pg.ready())
    assert get_current_placement_group() is None
    assert get(group_id.remote()) is None

    def in_pg(capture=None):
        return PlacementGroupSchedulingStrategy(
            pg, placement_group_capture_child_tasks=capture)

    assert get(group_id.options(scheduling_strategy=in_pg()).remote()) == pg.id
    assert tuple(get(starts_a_child.options(scheduling_strategy=in_pg()).remote())) == (
        pg.id, None)
    assert tuple(get(starts_a_child.options(scheduling_strategy=in_pg(True)).remote())) == (
        pg.id, pg.id)
    member = Member.options(scheduling_strategy=in_pg(True)).remote()
    assert tuple(get(member.ids.remote())) == (pg.id, pg.id)
    ember.kill(member)

    assert get_placement_group(name) == pg
    row = placement_group_table(pg)
    assert (row["name"], row["state"], row["bundles"]) == (name, "CREATED", {0: {"CPU": 1.0}})
    assert pg.id in placement_group_table()
    remove_placement_group(pg)
    eventually(lambda: placement_group_table(pg)["state"] == "REMOVED", timeout=30,
               what="the group to be removed")
    with pytest.raises(ValueError, match=name):
        get_placement_group(name)


def test_memory_is_a_resource_that_limits_what_runs_at_once(wait_until_exists, tmp_path):
    """Ray's ``memory=`` (bytes) is a resource: the node has ``cluster_resources()["memory"]``,
    work that asks for more than half of it runs one at a time, and more than all of it can
    never run."""
    total = ember.cluster_resources()["memory"]
    assert total > 0

    @ember.remote(num_cpus=0)
    def hold(name, folder, wait):
        import os

        open(os.path.join(folder, name), "w").close()
        wait(os.path.join(folder, "release"), timeout=60)
        return name

    big = hold.options(memory=int(total * 0.6))
    first = big.remote("first", str(tmp_path), wait_until_exists)
    second = big.remote("second", str(tmp_path), wait_until_exists)
    eventually(lambda: len(list(tmp_path.iterdir())) == 1, timeout=30,
               what="one of the two tasks starts")
    time.sleep(0.5)
    assert len(list(tmp_path.iterdir())) == 1  # the other waits for the memory to be free
    (tmp_path / "release").touch()
    assert sorted(get([first, second])) == ["first", "second"]

    with pytest.raises(ResourceError, match="memory"):
        get(hold.options(memory=int(total * 2)).remote("never", str(tmp_path), wait_until_exists))


def test_a_hard_node_affinity_to_a_node_that_does_not_exist_fails_and_a_soft_one_runs():
    """As Ray's TaskUnschedulableError and ActorUnschedulableError (both ``ResourceError``
    here): work that must run on a node the cluster does not have fails at once; with
    ``soft=True`` it runs elsewhere; the node that ``get_node_id`` names is accepted."""
    from ember.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ember.remote
    def where():
        return ember.get_runtime_context().get_node_id()

    @ember.remote
    class Pinned:
        def ping(self):
            return "pong"

    nowhere = "ab" * 28
    with pytest.raises(ResourceError):
        get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            nowhere, soft=False)).remote())
    with pytest.raises(ResourceError):
        pinned = Pinned.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            nowhere, soft=False)).remote()
        get(pinned.ping.remote())
    here = get(where.remote())
    assert get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        nowhere, soft=True)).remote()) == here
    assert get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        here, soft=False)).remote()) == here


def test_unpicklable_argument_raises_serialization_error_naming_it():
    @ember.remote
    def use(x, guard=None):
        return x

    with pytest.raises(SerializationError) as info:
        use.remote(1, guard=threading.Lock())

    assert isinstance(info.value, TypeError)
    assert "guard" in str(info.value)
    with pytest.raises(SerializationError, match="use"):
        use.remote(threading.Lock())


def test_errors_from_failed_work_survive_pickling(tmp_path, wait_until_exists):
    @ember.remote
    def user_error():
        raise ValueError("user error")

    @ember.remote(max_retries=0)
    def crash():
        os.kill(os.getpid(), signal.SIGKILL)

    @ember.remote
    class Dead:
        def ping(self):
            return "pong"

    @ember.remote
    def slow(path):
        wait_until_exists(path)

    actor = Dead.remote()
    ember.kill(actor)
    release = Gate(tmp_path)
    pending = slow.remote(release.path)
    caught = []
    for ref, timeout, expected in ((user_error.remote(), GET_TIMEOUT, ValueError),
                                   (crash.remote(), GET_TIMEOUT, WorkerCrashedError),
                                   (actor.ping.remote(), GET_TIMEOUT, ActorDiedError),
                                   (pending, 0.01, GetTimeoutError)):
        with pytest.raises(expected) as info:
            ember.get(ref, timeout=timeout)
        caught.append(info.value)
    release.open()

    for error in caught:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
    assert isinstance(pickle.loads(pickle.dumps(caught[0])), ValueError)


# -- cancellation ---------------------------------------------------------------------------


def test_cancel_of_a_queued_task_raises_task_cancelled_error(tmp_path, gate: Gate,
                                                            wait_until_exists):
    @ember.remote(num_cpus=1)
    def hold_cpu(path, started):
        open(started, "w").close()
        wait_until_exists(path)
        return "held"

    @ember.remote(num_cpus=1)
    def queued(marker):
        open(marker, "w").close()
        return "ran"

    holders = [hold_cpu.remote(gate.path, str(tmp_path / f"started-{i}")) for i in range(2)]
    eventually(lambda: all((tmp_path / f"started-{i}").exists() for i in range(2)),
               what="both CPU holders to start")
    ref = queued.remote(str(tmp_path / "queued-ran"))
    ember.cancel(ref)

    with pytest.raises(TaskCancelledError) as caught:
        get(ref)
    assert not isinstance(caught.value, TaskError)  # it never ran: a plain cancel, as in Ray
    gate.open()
    assert get(holders) == ["held", "held"]
    assert not (tmp_path / "queued-ran").exists()


@pytest.mark.parametrize("force", [False, True], ids=["interrupt", "force"])
def test_cancel_of_a_running_task_raises_task_cancelled_error(tmp_path, gate: Gate, force,
                                                             wait_until_exists):
    started = tmp_path / "started"

    @ember.remote(max_retries=0)
    def long_running(path, started):
        open(started, "w").close()
        wait_until_exists(path)
        return "finished"

    @ember.remote
    def after():
        return "still working"

    ref = long_running.remote(gate.path, str(started))
    eventually(started.exists, what="the task to start")
    ember.cancel(ref, force=force)

    try:
        with pytest.raises(TaskCancelledError) as caught:
            get(ref)
    finally:
        gate.open()
    if not force:  # interrupted while it ran: Ray's RayTaskError(TaskCancelledError)
        assert isinstance(caught.value, ember.exceptions.RayTaskError)
    assert get(after.remote()) == "still working"


@pytest.mark.parametrize("force", [False, True], ids=["interrupt", "force"])
def test_cancel_right_after_submission_to_a_warm_worker_raises_at_once(force):
    """The task reaches an idle worker at once; the cancel that follows must still stop it
    (the worker gets the interrupt before the task's code starts) and free its CPU."""

    @ember.remote(max_retries=0)
    def block():
        # short sleeps: Ray interrupts between bytecodes, not in C. 30 s in all: longer than
        # the get below waits (a lost cancel still fails this test), short enough that such a
        # task does not hold its CPU through the tests after it.
        for _ in range(3_000):
            time.sleep(0.01)

    @ember.remote
    def quick():
        return "quick"

    get([quick.remote() for _ in range(4)])  # warm workers
    for _ in range(3):  # more than the 2 CPUs: each cancelled task must give its CPU back
        ref = block.remote()
        ember.cancel(ref, force=force)
        with pytest.raises(TaskCancelledError):
            ember.get(ref, timeout=20)
    eventually(lambda: ember.available_resources().get("CPU") == 2.0,
               what="the cancelled tasks' CPUs to come back")
    assert get(quick.remote()) == "quick"


def test_cancel_of_a_streaming_generator_stops_it(tmp_path, wait_until_exists):
    started = tmp_path / "started"

    @ember.remote(max_retries=0)
    def endless(started):
        yield "first"
        open(started, "w").close()
        while True:
            time.sleep(0.01)
            yield "more"

    gen = endless.remote(str(started))
    assert get(next(gen)) == "first"
    eventually(started.exists, what="the generator to run on")
    ember.cancel(gen)

    with pytest.raises(TaskCancelledError):
        for ref in gen:
            get(ref)
    eventually(lambda: ember.available_resources().get("CPU") == 2.0,
               what="the generator's CPU to come back")


def test_cancel_of_a_running_actor_call_sets_is_canceled_and_get_raises(tmp_path):
    started, saw_it = tmp_path / "started", tmp_path / "saw-cancel"

    @ember.remote
    class Worker:
        def long_job(self, started, saw_it):
            open(started, "w").close()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if ember.get_runtime_context().is_canceled():
                    open(saw_it, "w").close()
                    return "stopped early"
                time.sleep(0.01)
            return "ran to the end"

        def ping(self):
            return "pong"

    actor = Worker.remote()
    ref = actor.long_job.remote(str(started), str(saw_it))
    eventually(started.exists, what="the call to start")
    ember.cancel(ref)

    with pytest.raises(TaskCancelledError):
        get(ref)
    eventually(saw_it.exists, what="the method to see is_canceled()")
    assert get(actor.ping.remote()) == "pong"  # the actor was not interrupted


def test_cancel_of_a_running_async_actor_call_cancels_its_asyncio_task(tmp_path):
    started, cancelled = tmp_path / "started", tmp_path / "cancelled"

    @ember.remote
    class Sleeper:
        async def nap(self, started, cancelled):
            open(started, "w").close()
            try:
                await asyncio.sleep(600)
            except asyncio.CancelledError:
                open(cancelled, "w").close()
                raise

        async def ping(self):
            return "pong"

    actor = Sleeper.remote()
    ref = actor.nap.remote(str(started), str(cancelled))
    eventually(started.exists, what="the call to start")
    ember.cancel(ref)

    with pytest.raises(ember.exceptions.RayTaskError) as caught:  # as Ray's doc catches it
        get(ref)
    assert isinstance(caught.value, TaskCancelledError)
    eventually(cancelled.exists, what="asyncio.CancelledError in the call")
    assert get(actor.ping.remote()) == "pong"


def test_is_canceled_outside_a_task_raises_runtime_error():
    with pytest.raises(RuntimeError, match="driver"):
        ember.get_runtime_context().is_canceled()


# -- wait -----------------------------------------------------------------------------------


def test_wait_splits_ready_from_not_ready_in_input_order(gate: Gate, wait_until_exists):
    @ember.remote
    def quick(x):
        return x

    @ember.remote
    def slow(path):
        wait_until_exists(path)
        return "slow"

    blocked = slow.remote(gate.path)
    fast = [quick.remote(i) for i in range(3)]
    get(fast)
    refs = [fast[0], blocked, fast[1], fast[2]]

    ready, not_ready = ember.wait(refs, num_returns=2, timeout=GET_TIMEOUT)
    assert ready == [fast[0], fast[1]] and not_ready == [blocked, fast[2]]

    ready, not_ready = ember.wait(refs, num_returns=4, timeout=0.2)
    assert ready == fast and not_ready == [blocked]

    ready, not_ready = ember.wait([blocked], num_returns=1, timeout=0)
    assert ready == [] and not_ready == [blocked]

    gate.open()
    ready, not_ready = ember.wait(refs, num_returns=4, timeout=GET_TIMEOUT)
    assert ready == refs and not_ready == []


# -- actors ---------------------------------------------------------------------------------


def test_actor_keeps_state_and_runs_calls_in_submission_order():
    @ember.remote
    class Log:
        def __init__(self, first):
            self.items = [first]

        def append(self, x):
            self.items.append(x)
            return len(self.items)

        def items_(self):
            return self.items

    log = Log.remote("start")
    sizes = [log.append.remote(i) for i in range(50)]

    assert isinstance(log, ember.ActorHandle)
    assert get(sizes) == list(range(2, 52))
    assert get(log.items_.remote()) == ["start", *range(50)]


def test_actor_method_with_num_returns_two(splitter_class):
    left, right = splitter_class.remote().halves.remote("abcdef")

    assert get([left, right]) == ["abc", "def"]


def test_actor_survives_an_exception_in_a_method():
    @ember.remote
    class Fragile:
        def __init__(self):
            self.calls = 0

        def call(self, fail):
            self.calls += 1
            if fail:
                raise RuntimeError("method failed")
            return self.calls

    actor = Fragile.remote()

    with pytest.raises(RuntimeError, match="method failed") as info:
        get(actor.call.remote(True))
    assert isinstance(info.value, TaskError)
    assert get(actor.call.remote(False)) == 2


def test_failing_constructor_makes_calls_raise_actor_died_error():
    @ember.remote
    class BadInit:
        def __init__(self):
            raise OSError("cannot open the model file")

        def ping(self):
            return "pong"

    actor = BadInit.remote()

    with pytest.raises(ActorDiedError):
        get(actor.ping.remote())


def test_exit_actor_in_a_method_ends_the_actor_for_good_and_sys_exit_restarts_it():
    @ember.remote(max_restarts=2)
    class Quitter:
        def quit(self, how):
            if how == "exit_actor":
                ember.actor.exit_actor()
            raise SystemExit(1)

        def ping(self):
            return "pong"

    quitter = Quitter.remote()
    assert get(quitter.ping.remote()) == "pong"
    with pytest.raises(ActorDiedError):
        get(quitter.quit.remote("exit_actor"))
    with pytest.raises(ActorDiedError):  # not restarted, though max_restarts allows it
        get(quitter.ping.remote())

    # sys.exit(1) is a process exit like a crash: the call fails, the actor restarts.
    quitter = Quitter.remote()
    with pytest.raises(ActorDiedError):
        get(quitter.quit.remote("sys.exit"))
    assert call_until_served(quitter.ping) == "pong"
    with pytest.raises(TypeError, match="actor"):
        ember.actor.exit_actor()  # the driver is no actor


def test_an_actor_dies_with_the_actor_that_created_it_unless_it_is_detached():
    @ember.remote
    class Child:
        def ping(self):
            return "pong"

    @ember.remote
    class Parent:
        def make(self, name):
            self.child = Child.remote()
            self.detached = Child.options(name=name, lifetime="detached").remote()
            return self.child, self.detached

    parent = Parent.remote()
    child, detached = get(parent.make.remote(f"detached-{uuid.uuid4().hex[:8]}"))
    try:
        assert get(child.ping.remote()) == "pong"
        ember.kill(parent)

        def child_is_dead():
            try:
                get(child.ping.remote(), timeout=10)
            except ActorDiedError:
                return True
            return False

        eventually(child_is_dead, what="the child actor to die with its creator")
        assert get(detached.ping.remote()) == "pong"  # detached: owned by nobody
    finally:
        ember.kill(detached)


def test_kill_fails_pending_and_later_calls_with_actor_died_error(tmp_path, gate: Gate,
                                                                 blocker_class):
    started = tmp_path / "started"
    actor = blocker_class.remote()
    running = actor.block.remote(gate.path, str(started))
    queued = actor.ping.remote()
    eventually(started.exists, what="the actor call to start")
    ember.kill(actor)

    try:
        with pytest.raises(ActorDiedError):
            get(running)
        with pytest.raises(ActorDiedError):
            get(queued)
        with pytest.raises(ActorDiedError):
            get(actor.ping.remote())
    finally:
        gate.open()


def test_kill_with_no_restart_keeps_a_restartable_actor_dead():
    @ember.remote(max_restarts=2)
    class Service:
        def ping(self):
            return "pong"

    actor = Service.remote()
    assert get(actor.ping.remote()) == "pong"
    ember.kill(actor)

    with pytest.raises(ActorDiedError):
        get(actor.ping.remote())


def test_killed_actor_restarts_when_max_restarts_allows():
    counter = _counter_class().options(max_restarts=1).remote()
    assert get([counter.increment.remote() for _ in range(3)]) == [1, 2, 3]
    assert get(counter.reconstructed.remote()) is False
    ember.kill(counter, no_restart=False)

    assert call_until_served(counter.increment) == 1  # a fresh instance: __init__ ran again
    assert get(counter.reconstructed.remote()) is True


def test_actor_whose_process_exits_fails_the_call_and_later_ones():
    @ember.remote
    class Quitter:
        def quit(self):
            os._exit(3)

        def ping(self):
            return "pong"

    actor = Quitter.remote()
    assert get(actor.ping.remote()) == "pong"

    with pytest.raises(ActorDiedError):
        get(actor.quit.remote())
    with pytest.raises(ActorDiedError):
        get(actor.ping.remote())


def test_call_that_crashed_the_actor_is_retried_on_the_restarted_actor(tmp_path):
    marker = str(tmp_path / "crashed-once")

    @ember.remote(max_restarts=1, max_task_retries=1)
    class Resilient:
        def work(self, marker):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
            return ember.get_runtime_context().was_current_actor_reconstructed

    assert get(Resilient.remote().work.remote(marker)) is True


def test_actor_handle_can_be_passed_to_tasks_and_other_actors():
    @ember.remote
    class Tally:
        def __init__(self):
            self.total = 0

        def add(self, x):
            self.total += x
            return self.total

        def total_(self):
            return self.total

    @ember.remote
    def contribute(tally, x):
        return ember.get(tally.add.remote(x), timeout=60)

    @ember.remote
    class Relay:
        def forward(self, tally, x):
            return ember.get(tally.add.remote(x), timeout=60)

    tally = Tally.remote()
    get([contribute.remote(tally, i) for i in range(1, 5)])
    get(Relay.remote().forward.remote(tally, 100))

    assert get(tally.total_.remote()) == 110


# An actor handle that shipped code refers to as a module global (set by the test below).
_STORE = None


def _store_class():
    """An actor class that collects items; ``add(item)`` returns how many it holds."""

    @ember.remote
    class Store:
        def __init__(self):
            self.items = []

        def add(self, item):
            self.items.append(item)
            return len(self.items)

    return Store


@pytest.mark.parametrize("how", ["method-global", "default-argument", "closure", "task-global"])
def test_code_that_refers_to_another_actors_handle_ships_without_a_hang(how):
    """Ray's "async actor" pattern: a TaskStore handle used inside TaskExecutor.run. Pickling
    the executor's code pickles the handle; that must not wait for the runtime's own lock."""
    global _STORE
    store = _STORE = _store_class().remote()
    try:
        if how == "method-global":
            @ember.remote
            class Executor:
                def run(self, item):
                    return ember.get(_STORE.add.remote(item), timeout=60)
        elif how == "default-argument":
            @ember.remote
            class Executor:
                def run(self, item, store=store):
                    return ember.get(store.add.remote(item), timeout=60)
        elif how == "closure":
            def make_executor(store):
                @ember.remote
                class Executor:
                    def run(self, item):
                        return ember.get(store.add.remote(item), timeout=60)

                return Executor

            Executor = make_executor(store)
        else:
            @ember.remote
            def run(item):
                return ember.get(_STORE.add.remote(item), timeout=60)

            assert get([run.remote("a"), run.remote("b")]) in ([1, 2], [2, 1])
            return
        executor = Executor.remote()
        assert get(executor.run.remote("a")) == 1
        assert get(Executor.remote().run.remote("b")) == 2
    finally:
        _STORE = None


def test_an_exception_that_holds_a_ref_comes_back_without_a_hang():
    @ember.remote
    def fail_with_a_ref():
        raise LookupError(ember.put("inside"))

    with pytest.raises(LookupError) as info:
        get(fail_with_a_ref.remote())

    assert isinstance(info.value, TaskError)


def test_threaded_actor_runs_calls_concurrently_up_to_max_concurrency():
    @ember.remote(max_concurrency=2)
    class Pair:
        def __init__(self):
            # If the two calls ran one after the other, the first would break the barrier.
            self.barrier = threading.Barrier(2, timeout=20)

        def meet(self):
            return self.barrier.wait()

    pair = Pair.remote()

    assert sorted(get([pair.meet.remote(), pair.meet.remote()])) == [0, 1]


def test_async_actor_runs_calls_concurrently_on_its_event_loop():
    @ember.remote
    class Rendezvous:
        def __init__(self):
            self.released = asyncio.Event()

        async def wait(self):
            # Fails (rather than hangs) if release() cannot run while this call waits.
            await asyncio.wait_for(self.released.wait(), timeout=20)
            return "released"

        async def release(self):
            self.released.set()
            return "set"

    actor = Rendezvous.remote()
    waiting = actor.wait.remote()

    assert get(actor.release.remote()) == "set"
    assert get(waiting) == "released"


def test_async_actor_method_can_await_object_refs():
    @ember.remote
    def produce(x):
        return x * 10

    @ember.remote
    class Collector:
        async def total(self, refs):
            values = [await ref for ref in refs]
            return sum(values)

    refs = [produce.remote(i) for i in range(4)]

    assert get(Collector.remote().total.remote(refs)) == 60


def test_runtime_context_names_the_task_and_the_actor():
    @ember.remote
    def task_ids():
        ctx = ember.get_runtime_context()
        return ctx.get_task_id(), ctx.get_actor_id()

    @ember.remote
    class Who:
        def ids(self):
            ctx = ember.get_runtime_context()
            return ctx.get_task_id(), ctx.get_actor_id()

        def name(self):
            return ember.get_runtime_context().get_actor_name()

    driver = ember.get_runtime_context()
    task_id, actor_in_task = get(task_ids.remote())
    _, actor_id = get(Who.remote().ids.remote())
    named = Who.options(name=f"who-{uuid.uuid4().hex[:8]}").remote()

    assert driver.get_task_id() is None and driver.get_actor_id() is None
    assert task_id is not None and actor_in_task is None
    assert actor_id is not None
    assert driver.get_job_id()
    assert get(named.name.remote()).startswith("who-")
    assert get(Who.remote().name.remote()) == "" and driver.get_actor_name() is None
    ember.kill(named)


# -- named actors ---------------------------------------------------------------------------


class NamedCounters:
    """Counter actors (``_counter_class``) made under one fresh name, in any namespace."""

    def __init__(self) -> None:
        self.name = unique("counter")
        self.counter_class = _counter_class()
        self._namespaces: set[str | None] = set()

    def remote(self, **options):
        """``Counter.options(name=self.name, **options).remote()``."""
        self._namespaces.add(options.get("namespace"))
        return self.counter_class.options(name=self.name, **options).remote()

    def kill_all(self) -> None:
        for namespace in self._namespaces:
            try:
                ember.kill(ember.get_actor(self.name, namespace=namespace))
            except ValueError:  # killed by the test already, or never created
                pass


@pytest.fixture
def named_counters(backend: str) -> Iterator[NamedCounters]:
    """Named Counter actors for one test, killed after it (even when it fails midway): the Ray
    instance is shared by the whole module."""
    counters = NamedCounters()
    try:
        yield counters
    finally:
        counters.kill_all()


def test_named_actor_is_found_by_name_and_shares_state(named_counters):
    counter = named_counters.remote()

    assert get(counter.increment.remote()) == 1
    found = ember.get_actor(named_counters.name)
    assert get(found.increment.remote()) == 2
    assert found == counter


def test_named_actor_outlives_the_handle_that_created_it(named_counters):
    handle = named_counters.remote()
    assert get(handle.increment.remote()) == 1
    del handle

    found = ember.get_actor(named_counters.name)
    assert get(found.increment.remote()) == 2


def test_second_actor_with_a_taken_name_is_refused_unless_get_if_exists(named_counters):
    first = named_counters.remote()
    get(first.increment.remote())

    with pytest.raises(ValueError, match=named_counters.name):
        get(named_counters.remote().increment.remote())
    again = named_counters.remote(get_if_exists=True)
    assert get(again.increment.remote()) == 2  # the same actor, not a new one


def test_named_actors_are_scoped_by_namespace(named_counters):
    name = named_counters.name
    in_a = named_counters.remote(namespace="team-a")
    in_b = named_counters.remote(namespace="team-b")

    get([in_a.increment.remote(), in_a.increment.remote(), in_b.increment.remote()])
    assert get(ember.get_actor(name, namespace="team-a").increment.remote()) == 3
    assert get(ember.get_actor(name, namespace="team-b").increment.remote()) == 2
    with pytest.raises(ValueError, match=name):
        ember.get_actor(name)  # not in the default namespace


def test_get_actor_of_an_unknown_or_killed_name_raises_value_error(named_counters):
    name = named_counters.name
    with pytest.raises(ValueError, match=name):
        ember.get_actor(name)

    actor = named_counters.remote()
    get(actor.increment.remote())
    ember.kill(actor)

    eventually(lambda: _lookup_fails(name), what="the killed actor's name to be released")


def _lookup_fails(name):
    try:
        ember.get_actor(name)
    except ValueError:
        return True
    return False


def test_list_named_actors_names_the_live_ones_by_namespace(named_counters):
    from ember.util import list_named_actors

    name = named_counters.name
    here = named_counters.remote()
    named_counters.remote(namespace="team-c")
    get(here.increment.remote())
    namespace = ember.get_runtime_context().namespace

    assert name in list_named_actors()  # this job's namespace only
    everywhere = list_named_actors(all_namespaces=True)
    assert {"name": name, "namespace": namespace} in everywhere
    assert {"name": name, "namespace": "team-c"} in everywhere

    @ember.remote
    def names_seen_by_a_task():
        from ember.util import list_named_actors

        return list_named_actors()

    assert name in get(names_seen_by_a_task.remote())
    ember.kill(here)
    eventually(lambda: name not in list_named_actors(),
               what="the killed actor to leave list_named_actors()")
    assert {"name": name, "namespace": "team-c"} in list_named_actors(all_namespaces=True)


def test_multiprocessing_pool_maps_over_its_processes_and_raises_the_functions_error(backend):
    from ember.util.multiprocessing import Pool

    def pid_unless_three(x):
        if x == 3:
            raise KeyError(x)
        time.sleep(0.02)
        return x, os.getpid()

    with Pool(processes=2) as pool:
        results = pool.map(pid_unless_three, [0, 1, 2, 4, 5, 6])
        assert [x for x, _ in results] == [0, 1, 2, 4, 5, 6]
        assert len({pid for _, pid in results}) == 2
        with pytest.raises(KeyError) as raised:
            list(pool.imap(pid_unless_three, range(5)))
        assert type(raised.value) is KeyError


# -- nesting --------------------------------------------------------------------------------


def test_task_that_holds_every_cpu_can_submit_and_get_subtasks():
    @ember.remote(num_cpus=1)
    def leaf(x):
        return x * x

    @ember.remote(num_cpus=2)  # the whole machine: the leaves can only run on lent CPUs
    def parent(n):
        return sum(ember.get([leaf.remote(i) for i in range(n)], timeout=60))

    assert get(parent.remote(3)) == 5


def test_more_blocked_parents_than_cpus_do_not_deadlock():
    @ember.remote
    def leaf(x):
        return x + 1

    @ember.remote
    def parent(x):
        return ember.get(leaf.remote(x), timeout=60)

    assert get([parent.remote(i) for i in range(4)]) == [1, 2, 3, 4]


def test_recursive_tasks_finish():
    @ember.remote
    def fib(n):
        if n < 2:
            return n
        return sum(ember.get([fib.remote(n - 1), fib.remote(n - 2)], timeout=60))

    assert get(fib.remote(4)) == 3


def test_tasks_and_actors_created_inside_actors_work():
    @ember.remote
    def square(x):
        return x * x

    @ember.remote
    class Helper:
        def neg(self, x):
            return -x

    @ember.remote
    class Boss:
        def delegate(self, x):
            helper = Helper.remote()
            return ember.get(helper.neg.remote(ember.get(square.remote(x), timeout=60)),
                             timeout=60)

    assert get(Boss.remote().delegate.remote(3)) == -9


# -- streaming generators ---------------------------------------------------------------------


def test_generator_task_streams_items_in_order():
    @ember.remote
    def count_up(n):
        for i in range(n):
            yield i * i

    gen = count_up.remote(10)

    assert isinstance(gen, ember.ObjectRefGenerator)
    assert [get(ref) for ref in gen] == [i * i for i in range(10)]


def test_num_returns_streaming_option_on_a_generator_task():
    @ember.remote(num_returns="streaming")
    def letters():
        yield from "abc"

    assert [get(ref) for ref in letters.remote()] == ["a", "b", "c"]


def test_generator_is_an_async_iterator():
    @ember.remote
    def count_up(n):
        yield from range(n)

    async def consume(gen):
        return [await ref async for ref in gen]

    values = asyncio.run(asyncio.wait_for(consume(count_up.remote(8)), GET_TIMEOUT))

    assert values == list(range(8))


def test_generator_items_arrive_before_the_generator_ends(gate: Gate, wait_until_exists):
    @ember.remote
    def first_then_wait(path):
        yield "first"
        wait_until_exists(path)
        yield "second"

    gen = first_then_wait.remote(gate.path)

    try:
        assert get(next(gen)) == "first"  # while the generator is still running
    finally:
        gate.open()
    assert [get(ref) for ref in gen] == ["second"]


def test_generator_error_is_raised_by_the_item_after_the_last_good_one():
    @ember.remote
    def breaks_at_two():
        yield 0
        yield 1
        raise ValueError("stream broke")

    refs = list(breaks_at_two.remote())

    assert len(refs) == 3
    assert get(refs[:2]) == [0, 1]
    with pytest.raises(ValueError, match="stream broke") as info:
        get(refs[2])
    assert isinstance(info.value, TaskError)


def _generators():
    """Generator objects a task could return by mistake, by kind (made here to ship by
    value)."""

    def numbers():
        yield 0
        yield 1

    def nones():  # a generator that yields None once ran as a coroutine without a word
        yield None
        return "its return value"

    async def async_numbers():
        yield 0

    return {"generator": numbers, "none-yielding": nones, "async-generator": async_numbers}


@pytest.mark.parametrize("kind", ["generator", "none-yielding", "async-generator"])
@pytest.mark.parametrize("where", ["task", "actor", "async-actor"])
def test_returning_a_generator_object_is_a_serialization_error_naming_the_function(
    kind, where
):
    make = _generators()[kind]

    @ember.remote
    def hands_back_a_generator():
        return make()

    @ember.remote
    class Holder:
        def hands_back_a_generator(self):
            return make()

    @ember.remote
    class AsyncHolder:
        async def hands_back_a_generator(self):
            return make()

        async def ping(self):
            return "pong"

    if where == "task":
        ref = hands_back_a_generator.remote()
    elif where == "actor":
        ref = Holder.remote().hands_back_a_generator.remote()
    else:
        ref = AsyncHolder.remote().hands_back_a_generator.remote()

    with pytest.raises(SerializationError, match=r"hands_back_a_generator.*generator") as info:
        get(ref)
    assert isinstance(info.value, TypeError)
    assert "generator function" in str(info.value)  # it says what to do


def test_a_generator_function_streams_and_an_async_one_too():
    @ember.remote
    def sync_gen():
        yield None
        yield 1

    @ember.remote
    async def async_gen():
        yield None
        yield 2

    assert [get(ref) for ref in sync_gen.remote()] == [None, 1]
    assert [get(ref) for ref in async_gen.remote()] == [None, 2]


def test_num_returns_dynamic_gives_a_ref_to_a_dynamic_object_ref_generator():
    @ember.remote(num_returns="dynamic")
    def split(n):
        for i in range(n):
            yield i * 10

    @ember.remote
    class Splitter:
        @ember.method(num_returns="dynamic")
        def split(self, n):
            yield from range(n)

    ref = split.remote(3)
    assert isinstance(ref, ember.ObjectRef)
    items = get(ref)
    assert isinstance(items, ember.DynamicObjectRefGenerator)
    assert len(items) == 3
    assert get(list(items)) == [0, 10, 20]
    assert get(list(get(Splitter.remote().split.remote(2)))) == [0, 1]
    assert len(get(split.options(num_returns="dynamic").remote(0))) == 0


def test_num_returns_n_on_a_generator_function_makes_its_items_the_n_returns():
    @ember.remote(num_returns=3)
    def three():
        for i in range(3):
            yield i * 10

    @ember.remote
    def two_then_fail():
        yield 0
        yield 1
        raise ValueError("boom")

    assert get(list(three.remote())) == [0, 10, 20]
    # An error after k < n items lands in the returns it did not fill; the first k stay.
    refs = two_then_fail.options(num_returns=4).remote()
    assert get(refs[:2]) == [0, 1]
    for ref in refs[2:]:
        with pytest.raises(ValueError, match="boom"):
            get(ref)
    # An error after all n items is not seen by the caller (Ray only logs it).
    assert get(list(two_then_fail.options(num_returns=2).remote())) == [0, 1]


def test_a_dynamic_generator_that_fails_keeps_its_items_and_ends_with_the_error():
    @ember.remote(num_returns="dynamic")
    def two_then_fail():
        yield 0
        yield 1
        raise ValueError("boom")

    first, second, last = get(two_then_fail.remote())
    assert get([first, second]) == [0, 1]
    with pytest.raises(ValueError, match="boom"):
        get(last)


def test_wait_takes_an_object_ref_generator_ready_when_its_next_item_is(
    gate: Gate, wait_until_exists
):
    @ember.remote
    def gated(path):
        yield "first"
        wait_until_exists(path)
        yield "second"

    gen = gated.remote(gate.path)
    ready, not_ready = ember.wait([gen], timeout=GET_TIMEOUT)
    assert ready == [gen] and not_ready == []
    assert get(next(gen)) == "first"
    try:
        ready, not_ready = ember.wait([gen], timeout=0.2)  # "second" waits for the gate
        assert ready == [] and not_ready == [gen]
    finally:
        gate.open()
    ready, _ = ember.wait([gen], timeout=GET_TIMEOUT)
    assert ready == [gen]
    assert [get(ref) for ref in gen] == ["second"]
    ready, _ = ember.wait([gen], timeout=GET_TIMEOUT)  # an ended generator is ready too
    assert ready == [gen]


def test_wait_mixes_refs_and_generators_inside_a_task():
    @ember.remote
    def numbers():
        yield 1

    @ember.remote
    def one():
        return 1

    @ember.remote
    def waits():
        gen, ref = numbers.remote(), one.remote()
        ready, _ = ember.wait([gen, ref], num_returns=2, timeout=60)
        return len(ready), ember.get(next(gen), timeout=60), ember.get(ref, timeout=60)

    assert get(waits.remote()) == (2, 1, 1)


def test_slow_consumer_pauses_the_producer(tmp_path):
    """Bounded buffering: the producer runs at most 16 items ahead of what was consumed."""
    progress = tmp_path / "produced"
    total = 60

    @ember.remote
    def produce(path, n):
        for i in range(n):
            with open(path, "a") as f:
                f.write(f"{i}\n")
            yield i

    def produced():
        try:
            return progress.read_text().count("\n")
        except FileNotFoundError:
            return 0

    gen = produce.remote(str(progress), total)
    values = [get(next(gen))]
    # Let the producer run as far ahead as it may; without backpressure it would finish.
    ahead = settle(produced)
    assert ahead <= len(values) + 16, f"produced {ahead} items with only 1 consumed"

    for ref in gen:
        values.append(get(ref))
        assert produced() <= len(values) + 16
    assert values == list(range(total))


def test_generator_actor_methods_stream_sync_and_async():
    @ember.remote
    class Source:
        def numbers(self, n):
            yield from range(n)

    @ember.remote
    class AsyncSource:
        async def numbers(self, n):
            for i in range(n):
                await asyncio.sleep(0)
                yield i

    async def consume(gen):
        return [await ref async for ref in gen]

    assert [get(ref) for ref in Source.remote().numbers.remote(5)] == list(range(5))
    values = asyncio.run(asyncio.wait_for(consume(AsyncSource.remote().numbers.remote(5)),
                                          GET_TIMEOUT))
    assert values == list(range(5))


# -- resources ------------------------------------------------------------------------------


def test_cluster_resources_report_what_the_runtime_was_started_with():
    total = ember.cluster_resources()

    assert total["CPU"] == 2 and total["GPU"] == 2 and total["widget"] == 2
    # As on Ray, the object store's size shows too (ember.data sizes its budget from it).
    assert total["object_store_memory"] > 0


def test_available_resources_drop_while_an_actor_holds_them():
    @ember.remote(num_cpus=1, resources={"widget": 1})
    class Holder:
        def ping(self):
            return "pong"

    holder = Holder.remote()
    get(holder.ping.remote())

    eventually(lambda: ember.available_resources().get("widget") == 1,
               what="the actor's widget to be counted as taken")
    assert ember.available_resources().get("CPU") == 1
    ember.kill(holder)
    eventually(lambda: ember.available_resources().get("widget") == 2,
               what="the killed actor's widget to be given back")


def test_task_waits_until_the_custom_resource_it_needs_is_free(tmp_path, gate: Gate,
                                                               wait_until_exists):
    started = tmp_path / "started"

    @ember.remote(num_cpus=1, resources={"widget": 2})
    def hold_all_widgets(path, started):
        open(started, "w").close()
        wait_until_exists(path)
        return "released"

    @ember.remote(num_cpus=0, resources={"widget": 1})
    def needs_one_widget():
        return "ran"

    holder = hold_all_widgets.remote(gate.path, str(started))
    eventually(started.exists, what="the holder to start")
    waiting = needs_one_widget.remote()

    try:
        ready, _ = ember.wait([waiting], timeout=0.5)
        assert ready == [], "a task ran while every widget was taken"
    finally:
        gate.open()
    assert get([holder, waiting]) == ["released", "ran"]


def test_gpu_tasks_get_distinct_gpu_ids_in_cuda_visible_devices(tmp_path, wait_until_exists):
    @ember.remote(num_gpus=1)
    def visible(folder, me, other):
        open(os.path.join(folder, me), "w").close()
        met = wait_until_exists(os.path.join(folder, other), timeout=30)
        return (os.environ.get("CUDA_VISIBLE_DEVICES"),
                ember.get_runtime_context().get_accelerator_ids()["GPU"], met)

    first, second = get([visible.remote(str(tmp_path), "a", "b"),
                         visible.remote(str(tmp_path), "b", "a")])

    assert first[2] and second[2], "the two 1-GPU tasks did not run at the same time"
    assert first[1] != second[1]
    for env, ids, _ in (first, second):
        assert len(ids) == 1 and ids[0] in {"0", "1"}
        assert env == ids[0]


def test_gpu_actor_keeps_its_gpus_and_cpu_task_has_none():
    @ember.remote(num_gpus=2)
    class TwoGpus:
        def ids(self):
            return (sorted(ember.get_runtime_context().get_accelerator_ids()["GPU"]),
                    sorted(os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")))

    @ember.remote
    def cpu_only():
        return ember.get_runtime_context().get_accelerator_ids()["GPU"]

    actor = TwoGpus.remote()

    assert get(actor.ids.remote()) == (["0", "1"], ["0", "1"])
    assert get(actor.ids.remote()) == (["0", "1"], ["0", "1"])
    assert get(cpu_only.remote()) == []
    ember.kill(actor)


def test_a_cancelled_await_of_a_ref_leaves_the_awaiting_actor_alive(gate: Gate,
                                                                    wait_until_exists):
    """An async actor that gives up on a reference (timeout) keeps serving when it arrives."""

    @ember.remote
    def slow(path):
        wait_until_exists(path, timeout=30)
        return "late"

    @ember.remote
    class Caller:
        async def give_up(self, path):
            import asyncio

            try:
                await asyncio.wait_for(slow.remote(path), timeout=0.2)
            except asyncio.TimeoutError:
                return "gave up"

        def ping(self):
            return "pong"

    caller = Caller.remote()
    assert ember.get(caller.give_up.remote(gate.path), timeout=GET_TIMEOUT) == "gave up"
    gate.open()  # the abandoned value arrives now
    time.sleep(0.3)
    assert ember.get(caller.ping.remote(), timeout=GET_TIMEOUT) == "pong"


def test_a_users_thread_inside_an_actor_can_call_ember_while_the_main_thread_waits():
    """A thread started by user code may get() while the method waits on that thread."""

    @ember.remote
    def square(x):
        return x * x

    @ember.remote
    class Prefetcher:
        def run(self):
            import queue

            results = queue.Queue()
            worker = threading.Thread(
                target=lambda: results.put(ember.get(square.remote(7), timeout=GET_TIMEOUT)))
            worker.start()
            value = results.get(timeout=GET_TIMEOUT)  # the main thread blocks outside ember
            worker.join()
            return value

    assert get(Prefetcher.remote().run.remote()) == 49


def test_a_users_thread_inside_a_task_can_call_ember_while_the_task_waits():
    @ember.remote
    def square(x):
        return x * x

    @ember.remote
    def outer():
        box = []
        worker = threading.Thread(target=lambda: box.append(ember.get(square.remote(6))))
        worker.start()
        worker.join(GET_TIMEOUT)
        return box

    assert get(outer.remote()) == [36]


# -- Ray's names: a Ray program that only changes its import ------------------------------------


def test_ray_exception_names_catch_what_ember_raises(tmp_path, named_counters):
    from ember import exceptions as rx

    @ember.remote(max_retries=0)
    def fails():
        raise KeyError("user bug")

    @ember.remote(max_retries=0)
    def crashes():
        os.kill(os.getpid(), signal.SIGKILL)

    @ember.remote
    def slow(started):
        open(started, "w").close()
        # short sleeps: Ray interrupts between bytecodes, not in C. 30 s in all: longer than
        # the get below waits (a lost cancel still fails this test), short enough that such a
        # task does not hold its CPU through the tests after it.
        for _ in range(3_000):
            time.sleep(0.01)

    with pytest.raises(rx.RayTaskError) as info:
        get(fails.remote())
    assert isinstance(info.value.cause, KeyError) and info.value.cause.args == ("user bug",)
    assert isinstance(info.value.as_instanceof_cause(), KeyError)
    assert "user bug" in info.value.traceback_str
    with pytest.raises(rx.WorkerCrashedError):
        get(crashes.remote())
    started = tmp_path / "started"
    ref = slow.remote(str(started))
    with pytest.raises(rx.GetTimeoutError):
        ember.get(ref, timeout=0.05)
    eventually(started.exists, what="the task to start")
    ember.cancel(ref)
    with pytest.raises(rx.TaskCancelledError):
        get(ref)
    with pytest.raises(rx.TaskUnschedulableError):
        get(fails.options(num_cpus=64).remote())

    counter = named_counters.remote()
    get(counter.increment.remote())
    with pytest.raises(rx.ActorAlreadyExistsError):
        get(named_counters.remote().increment.remote())
    ember.kill(counter)
    with pytest.raises(rx.RayActorError):
        get(counter.increment.remote())
    with pytest.raises(rx.ActorDiedError):
        get(counter.increment.remote())
    for error in (rx.RayTaskError, rx.RayActorError, rx.TaskCancelledError,
                  rx.GetTimeoutError, rx.WorkerCrashedError):
        assert issubclass(error, rx.RayError)


def test_actor_module_names_serve_for_isinstance_and_annotations():
    from ember.actor import ActorClass, ActorHandle

    @ember.remote
    class Pinger:
        def ping(self) -> str:
            return "pong"

    def ping(handle: ActorHandle[Pinger]) -> str:
        return get(handle.ping.remote())

    handle = Pinger.remote()
    assert isinstance(Pinger, ActorClass)
    assert isinstance(handle, ActorHandle)
    assert ping(handle) == "pong"


def test_get_if_exists_with_a_detached_lifetime_returns_the_one_actor(named_counters):
    first = named_counters.remote(get_if_exists=True, lifetime="detached")
    assert get(first.increment.remote()) == 1
    del first  # detached: it outlives its handles
    again = named_counters.remote(get_if_exists=True, lifetime="detached")
    assert get(again.increment.remote()) == 2


def test_nodes_gpu_ids_and_timeline(tmp_path):
    @ember.remote(num_gpus=1)
    def my_gpus():
        return ember.get_gpu_ids()

    nodes = ember.nodes()
    assert nodes and all(node["Alive"] for node in nodes)
    assert sum(node["Resources"].get("CPU", 0) for node in nodes) == 2
    assert ember.get_gpu_ids() == []  # the driver holds none
    gpus = get(my_gpus.remote())
    assert len(gpus) == 1 and isinstance(gpus[0], int)
    trace = tmp_path / "trace.json"
    assert ember.timeline(str(trace)) is None
    import json

    assert isinstance(json.loads(trace.read_text()), list)  # a Chrome trace (maybe empty)


def test_node_resource_pins_work_to_the_node_whose_address_it_names():
    ip = ember.util.get_node_ip_address()

    @ember.remote
    def where():
        return ember.util.get_node_ip_address()

    assert ember.cluster_resources().get(f"node:{ip}") == 1
    assert any(node["NodeManagerAddress"] == ip for node in ember.nodes())
    assert get(where.options(resources={f"node:{ip}": 0.01}).remote()) == ip


def test_actor_pool_maps_values_over_its_actors_in_order_and_as_they_finish():
    from ember.util import ActorPool

    @ember.remote
    class Doubler:
        def double(self, value):
            time.sleep(0.01 * (value % 3))  # finish out of order
            return 2 * value

    actors = [Doubler.remote(), Doubler.remote()]
    pool = ActorPool(actors)

    assert list(pool.map(lambda a, v: a.double.remote(v), range(8))) == [2 * v for v in range(8)]
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), range(8))) == [
        2 * v for v in range(8)]
    for value in range(3):  # more values than actors: the third waits for a free one
        pool.submit(lambda a, v: a.double.remote(v), value)
    assert not pool.has_free()
    assert [pool.get_next() for _ in range(3)] == [0, 2, 4]
    assert not pool.has_next()
    idle = pool.pop_idle()
    assert idle in actors and pool.pop_idle() is not None and pool.pop_idle() is None
    pool.push(idle)
    with pytest.raises(ValueError, match="already"):
        pool.push(idle)
    assert pool.has_free()


def test_actor_pool_map_submits_at_once_and_a_new_map_skips_unread_submissions(gate: Gate):
    from ember.util import ActorPool

    @ember.remote
    class Echo:
        async def echo(self, value, path=None):
            while path is not None and not os.path.exists(path):
                await asyncio.sleep(0.01)
            return value

    submitted = []
    pool = ActorPool([Echo.remote(), Echo.remote()])
    results = pool.map(lambda a, v: submitted.append(v) or a.echo.remote(v), [1, 2])
    assert submitted == [1, 2]  # before the first result is asked for, as in Ray
    assert list(results) == [1, 2]

    pool.submit(lambda a, v: a.echo.remote(v, gate.path), "stuck")
    pool.submit(lambda a, v: a.echo.remote(v, gate.path), "stuck too")
    try:
        with pytest.raises(TimeoutError, match="skipped"):
            pool.get_next_unordered(timeout=0.1, ignore_if_timedout=True)
        assert pool.has_next()  # only the oldest was skipped
        # A new map drops what nobody read (Ray issue 23107): it does not wait for it.
        assert list(pool.map(lambda a, v: a.echo.remote(v), [3, 4, 5])) == [3, 4, 5]
    finally:
        gate.open()


def test_queue_is_shared_by_tasks_and_raises_empty_and_full():
    from ember.util.queue import Empty, Full, Queue

    @ember.remote
    def produce(queue, n):
        for i in range(n):
            queue.put(i)  # blocks while the queue is full
        return "done"

    queue = Queue(maxsize=2)
    try:
        done = produce.remote(queue, 5)
        assert [queue.get(timeout=GET_TIMEOUT) for _ in range(5)] == list(range(5))
        assert get(done) == "done"
        with pytest.raises(Empty):
            queue.get(timeout=0.05)
        queue.put_nowait_batch(["a", "b"])
        assert queue.full() and len(queue) == 2
        with pytest.raises(Full):
            queue.put_nowait("c")
        with pytest.raises(Full):
            queue.put("c", timeout=0.05)
        assert queue.get_nowait_batch(2) == ["a", "b"]
        assert queue.empty()
        with pytest.raises(Empty):
            queue.get_nowait()
    finally:
        queue.shutdown()


def test_runtime_env_vars_apply_to_the_task_only_and_to_an_actor_for_life():
    @ember.remote
    def read(name):
        return os.environ.get(name)

    @ember.remote
    def read_in_child(name):
        return ember.get(read.remote(name), timeout=60)

    @ember.remote
    class Reader:
        def read(self, name):
            return os.environ.get(name)

    with_env = read.options(runtime_env={"env_vars": {"EMBER_TEST_VAR": "task"}})
    assert get(with_env.remote("EMBER_TEST_VAR")) == "task"
    assert get([read.remote("EMBER_TEST_VAR") for _ in range(4)]) == [None] * 4  # put back
    inherits = read_in_child.options(runtime_env={"env_vars": {"EMBER_TEST_VAR": "parent"}})
    assert get(inherits.remote("EMBER_TEST_VAR")) == "parent"  # children inherit it
    actor = Reader.options(runtime_env={"env_vars": {"EMBER_TEST_VAR": "actor"}}).remote()
    assert get([actor.read.remote("EMBER_TEST_VAR") for _ in range(2)]) == ["actor"] * 2


def test_runtime_env_with_an_unknown_key_or_bad_values_is_refused_at_once():
    @ember.remote
    def noop():
        return None

    with pytest.raises(ValueError, match=r"env_var.*did you mean 'env_vars'"):
        noop.options(runtime_env={"env_var": {"A": "1"}})
    with pytest.raises(TypeError, match="str -> str"):
        noop.options(runtime_env={"env_vars": {"A": 1}})
    with pytest.raises(ValueError, match="unknown runtime_env key"):
        ember.remote(runtime_env={"pipp": ["x"]})(noop._function)


def test_iterating_local_parquet_gives_every_row_in_writable_batches(tmp_path):
    # Read by threads of this process on either backend (no transform), by tasks with one.
    import pyarrow as pa
    import pyarrow.parquet as pq

    import ember.data as ed

    for i in range(3):
        pq.write_table(pa.table({"id": np.arange(i * 1000, (i + 1) * 1000)}),
                       tmp_path / f"{i}.parquet", row_group_size=300)
    seen = []
    for batch in ed.read_parquet(str(tmp_path)).iter_batches(batch_size=256):
        batch["id"] *= 2  # writable, as a loop that normalises in place expects
        seen.append(batch["id"])
    assert sorted(np.concatenate(seen).tolist()) == list(range(0, 6000, 2))
    tripled = ed.read_parquet(str(tmp_path)).map_batches(lambda b: {"id": b["id"] * 3})
    assert sorted(row["id"] for row in tripled.iter_rows()) == list(range(0, 9000, 3))


class _KillsItsActorOnce:
    """A pool UDF whose process is killed (as by the OOM killer) at the block with id 40, the
    first time only: the marker file says it happened."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __call__(self, batch):
        if batch["id"][0] == 40 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return {"id": batch["id"], "pid": np.full(len(batch["id"]), os.getpid())}


def test_an_actor_pool_whose_actor_is_killed_still_gives_every_row(tmp_path):
    import ember.data as ed

    marker = str(tmp_path / "killed")
    ds = ed.range(100, parallelism=10).map_batches(
        _KillsItsActorOnce, fn_constructor_args=(marker,), batch_size=10,
        compute=ed.ActorPoolStrategy(size=1))
    rows = ds.take_all()
    assert os.path.exists(marker)
    assert sorted(r["id"] for r in rows) == list(range(100))  # nothing lost, none twice
    assert len({r["pid"] for r in rows}) == 2  # a new actor took the dead one's place
    assert ds.stats().operators[1].actors_died == 1


def test_data_operators_pass_ray_remote_args_to_their_tasks_and_actors(tmp_path):
    import ember.data as ed

    def stage(batch):
        return {"id": batch["id"], "env": np.array([os.environ.get("EMBER_CONTRACT", "-")]
                                                   * len(batch["id"]))}

    tasks = ed.range(20, parallelism=2).map_batches(
        stage, runtime_env={"env_vars": {"EMBER_CONTRACT": "task"}}, max_retries=1)
    assert {r["env"] for r in tasks.take_all()} == {"task"}
    pooled = ed.range(20, parallelism=2).map_batches(
        _EnvOfActor, compute=ed.ActorPoolStrategy(size=1), max_restarts=1,
        runtime_env={"env_vars": {"EMBER_CONTRACT": "actor"}})
    assert {r["env"] for r in pooled.take_all()} == {"actor"}


class _EnvOfActor:
    def __call__(self, batch):
        return {"env": np.array([os.environ.get("EMBER_CONTRACT", "-")] * len(batch["id"]))}


def _alive_actor_pids(backend: str, class_name: str) -> list[int]:
    """PIDs of the alive actors of a class (Ray's state API needs its dashboard, which these
    tests start without: there, the GCS's own table)."""
    if backend == "ray":
        from ray._private import state

        return sorted(int(a["Pid"]) for a in state.actors().values()
                      if a["ActorClassName"] == class_name and a["State"] == "ALIVE")
    from ember.util.state import list_actors

    return sorted(a.pid for a in list_actors() if a.class_name == class_name
                  and a.state == "ALIVE")


def test_serve_keeps_serving_through_a_controller_killed_by_the_os_and_takes_it_up_again(
        backend):
    import httpx

    from ember import serve

    @serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0})
    class Echo:
        async def __call__(self, request=None):
            return f"echo {os.getpid()}"

    def pids(cls):
        return _alive_actor_pids(backend, cls)

    try:
        handle = serve.run(Echo.bind(), port=0)
        port = serve.status().http_port
        replicas, proxies = pids("Replica"), pids("Proxy")
        assert len(replicas) == 2 and len(proxies) == 1
        [controller] = pids("Controller")
        os.kill(controller, signal.SIGKILL)  # the OOM killer, say
        # Requests go on at once, to the same replicas through the same proxy...
        served = {httpx.get(f"http://127.0.0.1:{port}/", timeout=30).text for _ in range(20)}
        assert served <= {f"echo {pid}" for pid in replicas}
        assert handle.remote().result(timeout_s=60) in {f"echo {pid}" for pid in replicas}
        # ...and a controller restarted from its checkpoint runs the applications again.
        eventually(lambda: pids("Controller") not in ([], [controller]), timeout=60,
                   what="a new controller")
        status = serve.status()
        assert status.applications["default"].status == "RUNNING"
        assert status.http_port == port and pids("Replica") == replicas
        assert pids("Proxy") == proxies
        # It manages them again: a replica that dies now is replaced.
        os.kill(replicas[0], signal.SIGKILL)
        eventually(lambda: len(pids("Replica")) == 2 and replicas[0] not in pids("Replica"),
                   timeout=60, what="the dead replica to be replaced")
        serve.run(Echo.options(name="later").bind(), name="later", route_prefix="/later",
                  port=0)
        assert httpx.get(f"http://127.0.0.1:{port}/later", timeout=30).text.startswith("echo")
    finally:
        serve.shutdown()
    assert pids("Replica") == pids("Proxy") == pids("Controller") == pids("Keeper") == []


def test_a_redeploy_loses_no_call_and_then_serves_the_new_version(backend, tmp_path):
    import httpx

    from ember import serve

    gate = tmp_path / "gate"

    def version(v):
        @serve.deployment(name="Versioned", num_replicas=2, ray_actor_options={"num_cpus": 0})
        class Versioned:
            async def __call__(self, request=None, hold=False):
                while hold and not os.path.exists(gate):
                    await asyncio.sleep(0.01)
                return f"v{v}"

        return Versioned

    answers, errors, stop = [], [], threading.Event()

    def call_all_along(handle):
        while not stop.is_set():
            try:
                answers.append(handle.remote().result(timeout_s=60))
            except BaseException as exc:
                errors.append(exc)

    try:
        handle = serve.run(version(1).bind(), port=0)
        held = handle.remote(hold=True)  # in a replica of the old version during the redeploy
        caller = threading.Thread(target=call_all_along, args=(handle,))
        caller.start()
        eventually(lambda: len(answers) > 5, timeout=60, what="calls to the first version")
        handle = serve.run(version(2).bind(), port=0)
        port = serve.status().http_port
        assert handle.remote().result(timeout_s=60) == "v2"  # at once: by handle, by HTTP
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).text == "v2"
        seen = len(answers)
        eventually(lambda: len(answers) > seen + 5, timeout=60, what="calls after it")
        stop.set()
        caller.join(60)
        assert errors == [] and answers[-1] == "v2"
        gate.touch()
        assert held.result(timeout_s=60) == "v1"
    finally:
        stop.set()
        serve.shutdown()


def test_get_and_wait_take_serve_responses_as_ray_2_5_programs_wrote_them(backend):
    """``ray.get(handle.remote(x))`` (Ray 2.5's handles gave ObjectRefs) with ember for ray:
    ``ember.get`` and ``ember.wait`` resolve a DeploymentResponse on either backend."""
    from ember import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Double:
        def __call__(self, x):
            return 2 * x

    try:
        handle = serve.run(Double.bind(), http=False)
        assert ember.get(handle.remote(21)) == 42
        assert ember.get([handle.remote(1), ember.put(7), handle.remote(2)],
                         timeout=60) == [2, 7, 4]
        response = handle.remote(5)
        ready, not_ready = ember.wait([response], timeout=60)
        assert ready == [response] and not_ready == []
    finally:
        serve.shutdown()
