"""``ember/core/local/_scheduler.py``: the local scheduler as a pure state machine.

No processes, sockets or clocks: a fake I/O layer (``Cluster``) carries out the scheduler's
instructions and plays its workers, and the tests deliver events in the orders they choose.
The unit tests pin single decisions; ``SchedulerMachine`` lets hypothesis generate orders of
events (submissions, completions, crashes, kills, cancellations, nested gets, timeouts) and
checks after every step that no task is lost, that no resource leaks, that retries and
restarts stay within their bounds and that each actor receives its calls in order; at the end
it drains the cluster and checks that every task and call finished exactly once and that
every resource and object came back.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ember.core import _serialization as ser
from ember.core._remote import ActorMeta
from ember.core.local._protocol import EMPTY_ARGS, RemoteFailure
from ember.core.local._records import _Worker
from ember.core.local._scheduler import INTERRUPT, KILL, SPAWN, TIMER, WAKE, Scheduler
from ember.core.local._store import ObjectTable
from ember.errors import (
    ActorDiedError,
    GetTimeoutError,
    ResourceError,
    TaskCancelledError,
    TaskError,
    WorkerCrashedError,
)

EPS = 1e-6
VALUE = ser.dumps("value", None, 0)


def stored_error(exc: BaseException) -> ser.Stored:
    return ser.dumps(exc, None, 0)


class Proc:
    """A worker process as the fake I/O layer plays it."""

    def __init__(self, worker: _Worker) -> None:
        self.worker = worker
        self.alive = True
        self.ready = False  # it said "ready"
        self.doomed = False  # killed, or told to exit: it exits at its next step
        self.tasks: deque[int] = deque()  # task ids received, the running one first
        self.cancelled: set[int] = set()
        self.constructed = False
        self.calls: deque[int] = deque()  # actor calls received and not answered
        self.received_calls: list[int] = []
        self.waiting: int | None = None  # the id of a request it waits for
        self.holds: list[int] = []  # objects its running task holds references to
        self.replies: dict[int, Any] = {}


class Cluster:
    """The fake I/O layer: runs the scheduler's instructions and holds its fake processes."""

    def __init__(self, cpus: float = 2, gpus: int = 0, **resources: float) -> None:
        self.store = ObjectTable(capacity=1 << 40)
        self.last_work: dict[int, Any] = {}
        self.finished: Counter[int] = Counter()  # work id -> times it finished
        self.errors: dict[int, BaseException | None] = {}  # work id -> its (last) outcome
        self.sched = Scheduler({"CPU": float(cpus), **resources},
                               tuple(str(i) for i in range(gpus)), self.store, listener=self)
        self.sched.fn_code.update({"f": b"f-code", "g": b"g-code"})
        self.procs: dict[int, Proc] = {}
        self.every_proc: list[Proc] = []  # alive or not
        self.kills: list[int] = []
        self.interrupts: list[int] = []
        self.wakes: list[int] = []
        self.timers: list[Any] = []
        self.spawned_for: Counter[int] = Counter()  # actor id -> processes started for it
        self.task_messages: list[tuple[Any, ...]] = []
        self.exits_sent: list[int] = []
        self.exitcodes: dict[int, int] = {}  # worker uid -> its process's exit code
        self._rids = itertools.count(1)

    # -- the Listener protocol (observe) --------------------------------------------------------
    def on_finish(self, work: Any, error: ser.Stored | None) -> None:
        self.finished[work.id] += 1
        self.errors[work.id] = None if error is None else ser.loads(error, None)

    # -- the I/O layer ------------------------------------------------------------------------
    def flush(self) -> None:
        """Carry out the instructions and deliver the messages, as ``DriverIO.leave`` does."""
        sched = self.sched
        while sched.instructions or sched.dirty:
            batch = sched.instructions[:]
            sched.instructions.clear()
            for instruction in batch:
                self._instruction(instruction)
            dirty = list(sched.dirty)
            sched.dirty.clear()
            handed_back: list[tuple[Proc, int]] = []
            for worker in dirty:
                messages, worker.outbox = worker.outbox, []
                proc = self.procs.get(worker.uid)
                for message in messages:
                    if proc is None or not proc.alive:
                        continue
                    if message[0] == "task" and proc.waiting is not None:
                        # Its task waits in a nested get: the task goes straight back, as
                        # _worker does with a task that arrives then.
                        self.task_messages.append(message)
                        handed_back.append((proc, message[1]))
                    else:
                        self._deliver(proc, message)
            for proc, work_id in handed_back:
                sched.on_requeue(proc.worker, [work_id])

    def _instruction(self, instruction: tuple[Any, ...]) -> None:
        kind = instruction[0]
        if kind == SPAWN:
            worker = instruction[1]
            self.procs[worker.uid] = proc = Proc(worker)
            self.every_proc.append(proc)
            if worker.actor is not None:
                self.spawned_for[worker.actor.id] += 1
        elif kind == KILL:
            self.kills.append(instruction[1].uid)
            proc = self.procs.get(instruction[1].uid)
            if proc is not None:
                proc.doomed = True
        elif kind == INTERRUPT:
            self.interrupts.append(instruction[1].uid)
        elif kind == WAKE:
            self.wakes.append(instruction[1].uid)
        elif kind == TIMER:
            self.timers.append(instruction)
        else:  # pragma: no cover - a new instruction this fake does not know
            raise AssertionError(f"unknown instruction {instruction!r}")

    def _deliver(self, proc: Proc, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "task":
            self.task_messages.append(message)
            proc.tasks.append(message[1])
        elif kind == "actor":
            pass
        elif kind == "call":
            proc.calls.append(message[1])
            proc.received_calls.append(message[1])
        elif kind == "exit":
            self.exits_sent.append(proc.worker.uid)
            proc.doomed = True
        elif kind == "cancel":
            proc.cancelled.add(message[1])
        elif kind == "reply":
            proc.replies[message[1]] = message[2]
            if proc.waiting == message[1]:
                proc.waiting = None
        elif kind in ("ack", "close_generator"):
            pass
        else:  # pragma: no cover
            raise AssertionError(f"unknown message {message!r}")

    # -- events, as the workers would cause them -------------------------------------------------
    def ready(self, proc: Proc) -> None:
        proc.ready = True
        self.sched.on_ready(proc.worker)
        self.flush()

    def construct(self, proc: Proc, ok: bool = True) -> None:
        actor = proc.worker.actor
        assert actor is not None
        proc.constructed = True
        if ok:
            self.sched.on_actor_ready(actor.id)
        else:
            self.sched.on_actor_failed(actor.id, stored_error(ValueError("bad init")))
        self.flush()

    def finish_task(self, proc: Proc, error: BaseException | None = None,
                    seconds: float = 0.1) -> int:
        if proc.holds:  # the task's references go with it (a "refs" message)
            self.sched.on_refs(proc.worker, [(oid, -1) for oid in proc.holds])
            proc.holds.clear()
        work_id = proc.tasks.popleft()
        if work_id in proc.cancelled:
            error = TaskCancelledError("cancelled")
        work = next(w for w in proc.worker.inflight if w.id == work_id)
        results = None if error is not None else [VALUE] * len(work.return_ids)
        self.sched.on_done(proc.worker, work_id, results,
                           None if error is None else stored_error(error), seconds)
        self.flush()
        return work_id

    def finish_call(self, proc: Proc, error: BaseException | None = None) -> int:
        call_id = proc.calls.popleft()
        self.sched.on_done(proc.worker, call_id, None if error else [VALUE],
                           None if error is None else stored_error(error), 0.001)
        self.flush()
        return call_id

    def exit(self, proc: Proc, exitcode: int = -9) -> None:
        proc.alive = False
        del self.procs[proc.worker.uid]
        self.exitcodes[proc.worker.uid] = exitcode
        self.sched.worker_exited(proc.worker, exitcode)
        self.flush()

    def nested_get(self, proc: Proc, ids: list[int], timeout: float | None = None) -> int:
        """The running task of ``proc`` calls ``ember.get(ids)``: what a worker sends."""
        queued = list(proc.tasks)[1:]
        if queued:  # pipelined tasks behind it go back first (see _worker)
            for work_id in queued:
                proc.tasks.remove(work_id)
            self.sched.on_requeue(proc.worker, queued)
        # The task holds references to what it waits for (they came to it somehow).
        self.sched.on_refs(proc.worker, [(oid, +1) for oid in ids])
        proc.holds.extend(ids)
        rid = next(self._rids)
        proc.waiting = rid
        self.sched.on_request(proc.worker, rid, "get", (ids, timeout))
        self.flush()
        return rid

    def create_actor_from(self, proc: Proc, max_restarts: int = 0, detached: bool = False
                          ) -> int:
        """The running task or actor of ``proc`` creates an actor (a "create_actor" request;
        the worker allocates its id)."""
        actor_id = next(self.sched.ids)
        settings: dict[str, Any] = {"max_restarts": max_restarts}
        if detached:
            settings["lifetime"] = "detached"
        rid = next(self._rids)
        self.sched.on_request(proc.worker, rid, "create_actor", (
            actor_id, "A", b"A-code", EMPTY_ARGS, [], {"CPU": 1.0}, settings, ActorMeta("A")))
        self.flush()
        assert proc.replies.pop(rid) is None  # a new actor: nothing to report back
        return actor_id

    def exit_actor(self, proc: Proc) -> int:
        """The running call of ``proc`` calls ``exit_actor()``: what the worker sends before
        its process exits (code 0)."""
        reason = "A.m called exit_actor()"
        self.sched.on_actor_exit(proc.worker, reason)
        call_id = proc.calls.popleft()
        self.sched.on_done(proc.worker, call_id, None,
                           stored_error(ActorDiedError(f"the actor exited: {reason}")), 0.001)
        self.flush()
        self.exit(proc, exitcode=0)
        return call_id

    def fire_timer(self, index: int = 0) -> None:
        _, _delay, callback = self.timers.pop(index)
        callback()
        self.flush()

    # -- the API's events ---------------------------------------------------------------------
    def submit(self, fn: str = "f", cpus: float = 1, deps: list[int] | None = None,
               max_retries: int = 0, retry_exceptions: Any = False, num_returns: Any = 1,
               **resources: float) -> Any:
        request = {"CPU": float(cpus), **resources} if cpus else dict(resources)
        work = self.sched.submit_task(fn, fn, EMPTY_ARGS, list(deps or []), num_returns,
                                      request, max_retries, retry_exceptions, None)
        self.flush()
        return work

    def put(self) -> int:
        oid = next(self.sched.ids)
        self.sched.put(oid, VALUE)
        self.flush()
        return oid

    def release(self, oid: int) -> None:
        self.sched.release(oid)
        self.flush()

    def create_actor(self, cpus: float = 1, deps: list[int] | None = None,
                     **settings: Any) -> int:
        actor_id = self.sched.create_actor(next(self.sched.ids), "A", b"A-code", EMPTY_ARGS,
                                           list(deps or []), {"CPU": float(cpus)} if cpus else {},
                                           settings, ActorMeta("A"))
        self.sched.add_handle(actor_id)
        self.flush()
        return actor_id

    def call(self, actor_id: int, deps: list[int] | None = None) -> Any:
        work = self.sched.submit_call(actor_id, "m", EMPTY_ARGS, list(deps or []), 1)
        self.flush()
        return work

    def proc_of(self, actor_id: int) -> Proc:
        worker = self.sched.actors[actor_id].worker
        assert worker is not None
        return self.procs[worker.uid]

    def task_procs(self) -> list[Proc]:
        return [p for p in self.procs.values() if p.worker.actor is None]

    def start_all(self) -> None:
        """Every process started says "ready" (and constructs its actor), until none is new."""
        while True:
            new = [p for p in self.procs.values() if not p.doomed and (
                not p.ready or (p.worker.actor is not None and not p.constructed))]
            if not new:
                return
            for proc in new:
                if not proc.ready:
                    self.ready(proc)
                if proc.worker.actor is not None and not proc.constructed and not proc.doomed:
                    self.construct(proc)

    def value(self, oid: int) -> Any:
        entry = self.store.value(oid)
        assert entry is not None, f"object {oid} is not ready"
        stored, is_error = entry
        value = ser.loads(stored, None)
        return value if not is_error else ("error", value)


def held(sched: Scheduler) -> dict[str, float]:
    """What the running tasks, the blocked workers and the started actors hold now."""
    taken: Counter[str] = Counter()
    for worker in sched.workers.values():
        if worker.actor is None and worker.inflight:
            for key, amount in worker.inflight[0].request.items():
                taken[key] += amount
            if worker.blocked:
                taken["CPU"] -= worker.inflight[0].request.get("CPU", 0.0)
    for actor in sched.actors.values():
        if actor.holds:
            for key, amount in actor.request.items():
                taken[key] += amount
    return dict(taken)


def assert_pool_matches(sched: Scheduler) -> None:
    taken = held(sched)
    for key, total in sched.pool.totals.items():
        assert sched.pool.available[key] == pytest.approx(total - taken.get(key, 0.0), abs=EPS), (
            key, sched.pool.available, taken)


# -- tasks: placement, dependencies, workers ------------------------------------------------------


def test_a_task_starts_a_worker_and_runs_once_it_is_ready():
    cluster = Cluster(cpus=2)
    work = cluster.submit()
    assert [p.worker.actor for p in cluster.procs.values()] == [None]  # one SPAWN, for a task

    (proc,) = cluster.procs.values()
    cluster.ready(proc)
    assert list(proc.tasks) == [work.id]
    assert cluster.sched.pool.available["CPU"] == 1

    cluster.finish_task(proc)
    assert cluster.value(work.return_ids[0]) == "value"
    assert cluster.sched.pool.available["CPU"] == 2
    assert cluster.sched.idle == [proc.worker]


def test_a_task_waits_for_its_dependencies_and_fails_with_a_failed_one():
    cluster = Cluster(cpus=2)
    first = cluster.submit()
    second = cluster.submit(deps=first.return_ids)
    cluster.start_all()
    running = {p.tasks[0] for p in cluster.procs.values() if p.tasks}
    assert running == {first.id}  # the second waits for its argument

    proc = next(p for p in cluster.procs.values() if p.tasks)
    cluster.finish_task(proc, error=KeyError("boom"))

    assert cluster.finished[second.id] == 1  # never ran: it failed with its argument's error
    assert second.id not in [m[1] for m in cluster.task_messages]
    kind, error = cluster.value(second.return_ids[0])
    assert kind == "error" and isinstance(error, KeyError)


def test_a_request_that_can_never_fit_fails_at_once_with_resource_error():
    cluster = Cluster(cpus=2)
    work = cluster.submit(cpus=3)

    assert cluster.procs == {}  # no process started for it
    kind, error = cluster.value(work.return_ids[0])
    assert kind == "error" and isinstance(error, ResourceError)
    assert "CPU=3" in str(error)


def test_tasks_wait_for_cpus_and_run_when_they_free_up():
    cluster = Cluster(cpus=2)
    works = [cluster.submit(cpus=1) for _ in range(3)]
    cluster.start_all()
    busy = [p for p in cluster.procs.values() if p.tasks]
    assert len(busy) == 2 and cluster.sched.pool.available["CPU"] == 0

    cluster.finish_task(busy[0])

    assert sum(len(p.tasks) for p in cluster.procs.values()) == 2
    assert {m[1] for m in cluster.task_messages} == {w.id for w in works}


def test_short_tasks_are_pipelined_behind_a_busy_worker():
    cluster = Cluster(cpus=1)
    first = cluster.submit()
    cluster.start_all()
    (proc,) = cluster.procs.values()
    cluster.finish_task(proc, seconds=0.0001)  # now known to be short
    works = [cluster.submit() for _ in range(5)]

    assert list(proc.tasks) == [w.id for w in works]  # queued on the one worker, in order
    assert first.id not in proc.tasks
    assert cluster.sched.pool.available["CPU"] == 0  # they share the first one's CPU


def test_a_nested_get_lends_the_cpu_of_the_waiting_task():
    cluster = Cluster(cpus=1)
    parent = cluster.submit()
    cluster.start_all()
    (proc,) = cluster.procs.values()
    child = cluster.submit()
    cluster.nested_get(proc, child.return_ids)
    assert cluster.sched.pool.available["CPU"] == 1  # lent out: a worker starts for the child
    assert len(cluster.procs) == 2

    cluster.start_all()
    child_proc = next(p for p in cluster.procs.values() if p.tasks and p is not proc)
    assert cluster.sched.pool.available["CPU"] == 0
    cluster.finish_task(child_proc)

    assert proc.waiting is None and proc.replies  # the answer came
    cluster.finish_task(proc)
    assert cluster.finished[parent.id] == cluster.finished[child.id] == 1
    assert cluster.sched.pool.available["CPU"] == 1


def test_a_nested_get_that_times_out_is_answered_with_get_timeout_error():
    cluster = Cluster(cpus=2, widget=1)
    cluster.submit(cpus=1, widget=1)  # holds the only widget
    parent = cluster.submit(cpus=1)
    cluster.start_all()
    proc = next(p for p in cluster.procs.values() if p.tasks and p.tasks[0] == parent.id)
    pending = cluster.submit(cpus=0, widget=1)  # waits for the widget
    rid = cluster.nested_get(proc, pending.return_ids, timeout=2.5)
    assert [t[1] for t in cluster.timers] == [2.5] and proc.worker.blocked

    cluster.fire_timer()

    answer = proc.replies[rid]
    assert isinstance(answer, RemoteFailure) and isinstance(answer.error, GetTimeoutError)
    assert not proc.worker.blocked


def test_an_idle_worker_beyond_twice_the_cpus_is_told_to_exit():
    cluster = Cluster(cpus=1)
    cluster.sched.prestart(3)  # as a burst of nested tasks leaves behind
    cluster.flush()
    cluster.start_all()
    assert len(cluster.sched.idle) == 3  # "ready" parks every new worker

    cluster.submit()
    proc = next(p for p in cluster.procs.values() if p.tasks)
    cluster.finish_task(proc)

    assert cluster.exits_sent == [proc.worker.uid]  # two idle already: this one goes


# -- retries ----------------------------------------------------------------------------------


def test_a_crashed_task_is_retried_up_to_max_retries_then_fails():
    cluster = Cluster(cpus=1)
    work = cluster.submit(max_retries=1)
    for _ in range(2):
        cluster.start_all()
        proc = next(p for p in cluster.procs.values() if p.tasks)
        cluster.exit(proc)

    assert [m[1] for m in cluster.task_messages] == [work.id, work.id]
    kind, error = cluster.value(work.return_ids[0])
    assert kind == "error" and isinstance(error, WorkerCrashedError)
    assert "exit code -9" in str(error) and "raise max_retries" in str(error)


@pytest.mark.parametrize(("retry_exceptions", "runs"), [
    (False, 1), (True, 3), ([KeyError], 3), ([ValueError], 1),
])
def test_errors_are_retried_only_as_retry_exceptions_allows(retry_exceptions, runs):
    cluster = Cluster(cpus=1)
    work = cluster.submit(max_retries=2, retry_exceptions=retry_exceptions)
    for _ in range(runs):
        cluster.start_all()
        proc = next(p for p in cluster.procs.values() if p.tasks)
        cluster.finish_task(proc, error=KeyError("flaky"))

    assert [m[1] for m in cluster.task_messages] == [work.id] * runs
    assert cluster.finished[work.id] == 1
    assert isinstance(cluster.value(work.return_ids[0])[1], KeyError)


def test_tasks_pipelined_behind_a_crashed_one_run_again_without_using_a_retry():
    cluster = Cluster(cpus=1)
    cluster.submit()
    cluster.start_all()
    (proc,) = cluster.procs.values()
    cluster.finish_task(proc, seconds=0.0001)
    first, behind = cluster.submit(max_retries=0), cluster.submit(max_retries=0)
    assert list(proc.tasks) == [first.id, behind.id]

    cluster.exit(proc)
    cluster.start_all()

    assert isinstance(cluster.value(first.return_ids[0])[1], WorkerCrashedError)
    new = next(p for p in cluster.procs.values() if p.tasks)
    assert list(new.tasks) == [behind.id]


def test_a_generator_with_num_returns_n_that_failed_early_keeps_the_items_it_yielded():
    cluster = Cluster(cpus=1)
    work = cluster.submit(num_returns=3)
    cluster.start_all()
    (proc,) = cluster.procs.values()

    # The worker stores the first item, then the error (see _worker._store_yielded).
    cluster.sched.on_done(proc.worker, proc.tasks.popleft(), [VALUE],
                          stored_error(ValueError("third time")), 0.1)
    cluster.flush()

    first, *rest = (cluster.value(oid) for oid in work.return_ids)
    assert first == "value"
    assert [type(error) for _, error in rest] == [ValueError, ValueError]
    assert cluster.sched.pool.available["CPU"] == 1 and work.id not in cluster.sched.tasks


def test_an_error_a_worker_puts_reads_back_as_an_error():
    cluster = Cluster(cpus=1)
    cluster.submit()
    cluster.start_all()
    (proc,) = cluster.procs.values()
    oid = next(cluster.sched.ids)

    cluster.sched.on_put(proc.worker, oid, stored_error(KeyError("lost")), True)

    assert cluster.value(oid)[0] == "error" and isinstance(cluster.value(oid)[1], KeyError)
    assert proc.worker.held == {oid: 1}  # the worker holds the one reference


def test_a_worker_asks_for_the_resources_assigned_to_its_task_or_actor():
    cluster = Cluster(cpus=4)
    work = cluster.submit(cpus=2)
    actor_id = cluster.create_actor(cpus=1)
    cluster.start_all()
    task_proc = next(p for p in cluster.task_procs() if p.tasks)
    actor_proc = cluster.proc_of(actor_id)

    cluster.sched.on_request(task_proc.worker, 1, "assigned", work.id)
    cluster.sched.on_request(actor_proc.worker, 2, "assigned", None)
    cluster.flush()

    assert task_proc.replies[1] == {"CPU": 2.0}
    assert actor_proc.replies[2] == {"CPU": 1.0}


# -- cancellation -----------------------------------------------------------------------------


def test_cancelling_a_queued_task_fails_it_and_it_never_runs():
    cluster = Cluster(cpus=1)
    cluster.submit(cpus=1)
    queued = cluster.submit(cpus=1)
    cluster.sched.cancel(queued.return_ids[0], force=False, recursive=False)
    cluster.flush()
    cluster.start_all()

    assert queued.id not in [m[1] for m in cluster.task_messages]
    assert isinstance(cluster.value(queued.return_ids[0])[1], TaskCancelledError)


@pytest.mark.parametrize("force", [False, True])
def test_cancelling_a_running_task_resolves_it_at_once_and_stops_its_worker(force):
    cluster = Cluster(cpus=1)
    work = cluster.submit()
    cluster.start_all()
    (proc,) = cluster.procs.values()

    cluster.sched.cancel(work.return_ids[0], force=force, recursive=False)
    cluster.flush()

    error = cluster.value(work.return_ids[0])[1]
    assert isinstance(error, TaskCancelledError)
    # Interrupted, it raises as Ray's RayTaskError(TaskCancelledError) does; killed, plainly.
    assert isinstance(error, TaskError) is (not force)
    assert cluster.wakes == [proc.worker.uid]  # a caller reading the socket looks again
    if force:
        assert cluster.kills == [proc.worker.uid] and cluster.interrupts == []
    else:
        assert cluster.kills == [] and cluster.interrupts == [proc.worker.uid]
        assert work.id in proc.cancelled  # the message goes before the signal
    assert cluster.finished[work.id] == 0  # its worker's answer, when it comes, ends it


# -- actors -------------------------------------------------------------------------------------


def test_an_actor_gets_its_calls_in_order_even_behind_an_argument_not_ready():
    cluster = Cluster(cpus=2)
    actor_id = cluster.create_actor()
    task = cluster.submit()
    calls = [cluster.call(actor_id), cluster.call(actor_id, deps=task.return_ids),
             cluster.call(actor_id)]
    cluster.start_all()
    proc = cluster.proc_of(actor_id)
    assert proc.received_calls == [calls[0].id]  # the third waits behind the second

    task_proc = next(p for p in cluster.task_procs() if p.tasks)
    cluster.finish_task(task_proc)

    assert proc.received_calls == [c.id for c in calls]


def test_a_crashed_actor_restarts_within_max_restarts_and_resends_calls_with_retries():
    cluster = Cluster(cpus=2)
    actor_id = cluster.create_actor(max_restarts=1, max_task_retries=1)
    task = cluster.submit()
    calls = [cluster.call(actor_id), cluster.call(actor_id),
             cluster.call(actor_id, deps=task.return_ids)]  # the third waits for the task
    cluster.start_all()
    cluster.exit(cluster.proc_of(actor_id))
    cluster.start_all()

    assert cluster.spawned_for[actor_id] == 2
    proc = cluster.proc_of(actor_id)
    assert proc.received_calls == [c.id for c in calls[:2]]  # resent first, in order
    cluster.finish_task(next(p for p in cluster.task_procs() if p.tasks))
    assert proc.received_calls == [c.id for c in calls]
    cluster.exit(proc)

    assert cluster.spawned_for[actor_id] == 2  # no restart left: dead
    for call in calls:
        assert isinstance(cluster.value(call.return_ids[0])[1], ActorDiedError)
    assert cluster.sched.pool.available["CPU"] == 2


def test_a_killed_actor_that_never_started_only_changes_the_books():
    cluster = Cluster(cpus=1)
    first = cluster.create_actor(cpus=1)
    queued = cluster.create_actor(cpus=1)  # no CPU left: it waits
    call = cluster.call(queued)

    cluster.sched.kill_actor(queued, no_restart=True)
    cluster.flush()
    cluster.sched.kill_actor(first, no_restart=True)
    cluster.flush()
    cluster.exit(cluster.proc_of(first))

    assert cluster.spawned_for[queued] == 0  # never given a process, even once CPUs freed
    assert isinstance(cluster.value(call.return_ids[0])[1], ActorDiedError)
    assert cluster.sched.pool.available["CPU"] == 1


def test_an_actor_out_of_scope_runs_its_calls_then_exits():
    cluster = Cluster(cpus=1)
    actor_id = cluster.create_actor()
    call = cluster.call(actor_id)
    cluster.sched.release_actor(actor_id)
    cluster.flush()
    cluster.start_all()
    proc = cluster.proc_of(actor_id)

    assert proc.received_calls == [call.id] and proc.doomed  # the call, then ("exit",)
    cluster.finish_call(proc)
    cluster.exit(proc, exitcode=0)
    assert cluster.sched.actors[actor_id].death == "it went out of scope"
    assert cluster.value(call.return_ids[0]) == "value"


def test_exit_actor_ends_the_actor_for_good_even_with_restarts_left():
    cluster = Cluster(cpus=1)
    actor_id = cluster.create_actor(max_restarts=2)
    calls = [cluster.call(actor_id), cluster.call(actor_id)]
    cluster.start_all()
    proc = cluster.proc_of(actor_id)

    cluster.exit_actor(proc)
    later = cluster.call(actor_id)

    actor = cluster.sched.actors[actor_id]
    assert actor.state == "dead" and actor.death == "A.m called exit_actor()"
    assert cluster.spawned_for[actor_id] == 1  # not restarted
    for call in [*calls, later]:  # the call that exited, the one behind it, and a later one
        assert isinstance(cluster.value(call.return_ids[0])[1], ActorDiedError)
    assert cluster.sched.pool.available["CPU"] == 1


def test_an_actor_killed_for_good_stays_dead_after_a_later_kill_that_allows_a_restart():
    cluster = Cluster(cpus=1)
    actor_id = cluster.create_actor(max_restarts=2)
    cluster.start_all()
    proc = cluster.proc_of(actor_id)

    cluster.sched.kill_actor(actor_id, no_restart=True)
    cluster.sched.kill_actor(actor_id, no_restart=False)  # before the first kill has landed
    cluster.flush()
    cluster.exit(proc)

    assert cluster.sched.actors[actor_id].state == "dead"
    assert cluster.spawned_for[actor_id] == 1


@pytest.mark.parametrize("creator", ["task", "actor"])
def test_actors_fate_share_with_the_process_that_created_them_unless_detached(creator):
    cluster = Cluster(cpus=8)
    if creator == "task":
        cluster.submit()
        cluster.start_all()
        (proc,) = cluster.task_procs()
    else:
        parent = cluster.create_actor()
        cluster.start_all()
        proc = cluster.proc_of(parent)
    owned = cluster.create_actor_from(proc, max_restarts=3)
    detached = cluster.create_actor_from(proc, max_restarts=3, detached=True)
    cluster.start_all()
    call = cluster.call(owned)
    owned_proc = cluster.proc_of(owned)

    cluster.exit(proc)  # the creator's process dies
    assert owned_proc.doomed and not cluster.proc_of(detached).doomed
    cluster.exit(owned_proc)

    actor = cluster.sched.actors[owned]
    assert actor.state == "dead" and "its creator" in actor.death
    assert cluster.spawned_for[owned] == 1  # killed for good, though it had restarts left
    assert isinstance(cluster.value(call.return_ids[0])[1], ActorDiedError)
    assert cluster.sched.actors[detached].state == "alive"


def test_a_task_worker_that_exits_idle_leaves_the_actors_its_tasks_created_alive():
    cluster = Cluster(cpus=4)
    cluster.submit()
    cluster.start_all()
    (proc,) = cluster.task_procs()
    owned = cluster.create_actor_from(proc)
    cluster.finish_task(proc)
    cluster.start_all()

    cluster.exit(proc, exitcode=0)  # an idle worker told to exit (see _park)

    assert cluster.sched.actors[owned].state == "alive"
    assert not cluster.proc_of(owned).doomed


# -- generated orders of events ------------------------------------------------------------------

FUNCTIONS = ("f", "g")


def _can_create(proc: Proc) -> bool:
    """A process whose task or actor runs code that may create an actor."""
    if proc.doomed or not proc.ready:
        return False
    if proc.worker.actor is None:
        return bool(proc.tasks) and proc.waiting is None
    return proc.constructed and proc.worker.actor.worker is proc.worker
ERRORS = (KeyError("flaky"), ValueError("bad"))


class SchedulerMachine(RuleBasedStateMachine):
    """Random orders of events against one scheduler; invariants after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.cluster = Cluster(cpus=2, gpus=1)
        self.refs: list[int] = []  # object ids the driver still holds a reference to
        self.tasks: dict[int, Any] = {}  # work id -> work, every task submitted
        self.calls: dict[int, list[int]] = {}  # actor id -> its calls' ids, in submission order
        self.children: dict[int, int] = {}  # return id -> task id, of tasks without
        # dependencies or GPUs
        self.max_retries: dict[int, int] = {}
        self.runs: Counter[int] = Counter()  # work id -> runs that ended in a crash or error
        self.max_restarts: dict[int, int] = {}
        self.handles: set[int] = set()  # actors whose handle the driver still holds
        # actor id -> (the creator's worker uid, whether that is an actor's process), of the
        # actors created inside a worker without lifetime="detached"
        self.owners: dict[int, tuple[int, bool]] = {}
        self.exited: dict[int, int] = {}  # actor id -> processes started for it when it
        # called exit_actor()

    @initialize(warm=st.booleans())
    def maybe_warm_up(self, warm):
        """Half the runs start with "f" known to be short: its tasks may then be pipelined
        behind a busy worker (see Scheduler._pipeline_target)."""
        if warm:
            cluster = self.cluster
            work = cluster.submit("f")
            cluster.start_all()
            cluster.finish_task(cluster.procs[next(iter(cluster.procs))], seconds=0.0001)
            cluster.release(work.return_ids[0])

    # -- rules: the driver ------------------------------------------------------------------
    @rule(data=st.data(), fn=st.sampled_from(FUNCTIONS),
          cpus=st.sampled_from([1, 1, 1, 0, 0.5, 2, 3]), gpus=st.sampled_from([0, 0, 0, 0.5, 1]),
          max_retries=st.sampled_from([0, 1, 2, -1]),
          retry=st.sampled_from([False, True, [KeyError]]))
    def submit(self, data, fn, cpus, gpus, max_retries, retry):
        deps = data.draw(st.lists(st.sampled_from(self.refs), max_size=2, unique=True)
                         if self.refs else st.just([]))
        resources = {"GPU": gpus} if gpus else {}
        work = self.cluster.submit(fn, cpus=cpus, deps=deps, max_retries=max_retries,
                                   retry_exceptions=retry, **resources)
        self.tasks[work.id] = work
        self.max_retries[work.id] = max_retries
        self.refs.extend(work.return_ids)
        if not deps and not gpus:
            self.children.update(dict.fromkeys(work.return_ids, work.id))

    @rule(max_retries=st.sampled_from([0, 1]))
    def submit_plain(self, max_retries):
        """The common task (one CPU, no arguments), as a second rule: more of them, so that
        they pile up, pipeline and wait for each other."""
        work = self.cluster.submit("f", max_retries=max_retries)
        self.tasks[work.id] = work
        self.max_retries[work.id] = max_retries
        self.refs.extend(work.return_ids)
        self.children.update(dict.fromkeys(work.return_ids, work.id))

    @rule()
    def put(self):
        self.refs.append(self.cluster.put())

    @precondition(lambda self: self.refs)
    @rule(data=st.data())
    def drop_ref(self, data):
        oid = data.draw(st.sampled_from(self.refs))
        self.refs.remove(oid)
        self.cluster.release(oid)

    @rule(data=st.data(), cpus=st.sampled_from([0, 1, 3]), max_restarts=st.sampled_from([0, 1, -1]),
          max_task_retries=st.sampled_from([0, 1]))
    def create_actor(self, data, cpus, max_restarts, max_task_retries):
        deps = data.draw(st.lists(st.sampled_from(self.refs), max_size=1)
                         if self.refs else st.just([]))
        actor_id = self.cluster.create_actor(cpus=cpus, deps=deps, max_restarts=max_restarts,
                                             max_task_retries=max_task_retries)
        self.calls[actor_id] = []
        self.max_restarts[actor_id] = max_restarts
        self.handles.add(actor_id)

    @precondition(lambda self: self.calls)
    @rule(data=st.data())
    def call(self, data):
        actor_id = data.draw(st.sampled_from(sorted(self.calls)))
        # Often an argument still to come: calls queue up behind it.
        pending = [oid for oid in self.refs if not self.cluster.store.is_ready(oid)]
        choices = pending if pending and data.draw(st.booleans()) else self.refs
        deps = data.draw(st.lists(st.sampled_from(choices), max_size=1)
                         if choices else st.just([]))
        work = self.cluster.call(actor_id, deps=deps)
        self.calls[actor_id].append(work.id)
        self.refs.extend(work.return_ids)

    @precondition(lambda self: self.calls)
    @rule(data=st.data())
    def call_plain(self, data):
        """A call without arguments, as a second rule: more calls in flight."""
        actor_id = data.draw(st.sampled_from(sorted(self.calls)))
        work = self.cluster.call(actor_id)
        self.calls[actor_id].append(work.id)
        self.refs.extend(work.return_ids)

    @precondition(lambda self: self.calls)
    @rule(data=st.data(), no_restart=st.booleans())
    def kill_actor(self, data, no_restart):
        actor_id = data.draw(st.sampled_from(sorted(self.calls)))
        actor = self.cluster.sched.actors[actor_id]
        if actor.state == "pending" and no_restart:
            event("an actor is killed before it started")
        self.cluster.sched.kill_actor(actor_id, no_restart)
        self.cluster.flush()

    @precondition(lambda self: self._procs(_can_create))
    @rule(data=st.data(), max_restarts=st.sampled_from([0, 1, -1]), detached=st.booleans())
    def create_actor_inside(self, data, max_restarts, detached):
        """A running task or actor creates an actor: unless detached, it dies with its
        creator's process."""
        proc = data.draw(st.sampled_from(self._procs(_can_create)))
        actor_id = self.cluster.create_actor_from(proc, max_restarts, detached)
        self.calls[actor_id] = []
        self.max_restarts[actor_id] = max_restarts
        if not detached:
            self.owners[actor_id] = (proc.worker.uid, proc.worker.actor is not None)

    @precondition(lambda self: self._procs(lambda p: p.calls and p.constructed))
    @rule(data=st.data())
    def exit_actor(self, data):
        proc = data.draw(st.sampled_from(self._procs(lambda p: p.calls and p.constructed)))
        actor = proc.worker.actor
        assert actor is not None
        if proc.worker is not actor.worker or actor.state == "dead":
            return  # a process already replaced (or given up): nothing reads its messages
        self.cluster.exit_actor(proc)
        self.exited[actor.id] = self.cluster.spawned_for[actor.id]
        event("an actor calls exit_actor()")

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def drop_actor(self, data):
        actor_id = data.draw(st.sampled_from(sorted(self.handles)))
        self.handles.discard(actor_id)
        self.cluster.sched.release_actor(actor_id)
        self.cluster.flush()
        if self.cluster.sched.actors[actor_id].state in ("exiting", "dead"):
            event("an actor out of scope exits")

    @precondition(lambda self: self.tasks)
    @rule(data=st.data(), force=st.booleans())
    def cancel(self, data, force):
        work = data.draw(st.sampled_from(sorted(self.tasks.values(), key=lambda w: w.id)))
        running = any(w.inflight and w.inflight[0] is work
                      for w in self.cluster.sched.workers.values())
        self.cluster.sched.cancel(work.return_ids[0], force, recursive=False)
        self.cluster.flush()
        if running:
            event(f"a running task is cancelled (force={force})")

    # -- rules: the workers --------------------------------------------------------------------
    def _procs(self, test) -> list[Proc]:
        return sorted((p for p in self.cluster.procs.values() if test(p)),
                      key=lambda p: p.worker.uid)

    @precondition(lambda self: self._procs(lambda p: not p.ready and not p.doomed))
    @rule(data=st.data())
    def worker_ready(self, data):
        proc = data.draw(st.sampled_from(self._procs(lambda p: not p.ready and not p.doomed)))
        self.cluster.ready(proc)

    @precondition(lambda self: self._procs(
        lambda p: p.ready and not p.constructed and p.worker.actor is not None and not p.doomed))
    @rule(data=st.data(), ok=st.booleans())
    def actor_constructed(self, data, ok):
        proc = data.draw(st.sampled_from(self._procs(
            lambda p: p.ready and not p.constructed and p.worker.actor is not None
            and not p.doomed)))
        self.cluster.construct(proc, ok)

    @precondition(lambda self: self._procs(lambda p: p.tasks and p.waiting is None))
    @rule(data=st.data(), outcome=st.sampled_from([None, None, *ERRORS]),
          seconds=st.sampled_from([0.0001, 0.0001, 0.1]))
    def finish_task(self, data, outcome, seconds):
        proc = data.draw(st.sampled_from(self._procs(lambda p: p.tasks and p.waiting is None)))
        if len(proc.tasks) > 1:
            event("a task finished with others pipelined behind it")
        work_id = self.cluster.finish_task(proc, error=outcome, seconds=seconds)
        if outcome is not None:
            self.runs[work_id] += 1
            if work_id in self.cluster.sched.tasks:
                event("a task that raised is retried")

    @precondition(lambda self: self._procs(lambda p: p.tasks and p.waiting is None))
    @rule(data=st.data())
    def finish_task_quickly(self, data):
        """A task that succeeds in no time, as a second rule (see submit_plain)."""
        self.finish_task(data, None, 0.0001)

    @precondition(lambda self: self._procs(lambda p: p.calls and p.constructed))
    @rule(data=st.data(), outcome=st.sampled_from([None, None, ERRORS[0]]))
    def finish_call(self, data, outcome):
        proc = data.draw(st.sampled_from(self._procs(lambda p: p.calls and p.constructed)))
        self.cluster.finish_call(proc, error=outcome)

    @precondition(lambda self: self.cluster.procs)
    @rule(data=st.data())
    def crash(self, data, which=None):
        proc = data.draw(st.sampled_from(self._procs(which or (lambda p: True))))
        if proc.tasks:
            self.runs[proc.tasks[0]] += 1
        actor = proc.worker.actor
        if (actor is not None and actor.inflight and actor.queue and actor.max_task_retries
                and actor.restarts_left and actor.state in ("starting", "alive")):
            event("an actor crashed with calls in flight to retry and calls queued behind")
        owned = [a for a, (uid, _) in self.owners.items() if uid == proc.worker.uid
                 and self.cluster.sched.actors[a].state != "dead"]
        self.cluster.exit(proc)
        if owned:
            event("a process dies with actors it created")
        if proc.tasks and proc.tasks[0] in self.cluster.sched.tasks:
            event("a task whose worker crashed is retried")
        if actor is not None and actor.state != "dead":
            event("a crashed actor restarts")

    @precondition(lambda self: self._procs(lambda p: p.calls))
    @rule(data=st.data())
    def crash_busy_actor(self, data):
        """An actor's process dies with calls in flight, as a second rule (see crash)."""
        self.crash(data, lambda p: bool(p.calls))

    def _creator(self, proc: Proc) -> bool:
        return any(uid == proc.worker.uid and self.cluster.sched.actors[a].state != "dead"
                   for a, (uid, _) in self.owners.items())

    @precondition(lambda self: self._procs(self._creator))
    @rule(data=st.data())
    def crash_creator(self, data):
        """A process that created live actors dies, as a second rule (see crash)."""
        self.crash(data, self._creator)

    @precondition(lambda self: self._procs(lambda p: p.doomed))
    @rule(data=st.data())
    def doomed_exits(self, data):
        proc = data.draw(st.sampled_from(self._procs(lambda p: p.doomed)))
        if proc.tasks:
            self.runs[proc.tasks[0]] += 1
        self.cluster.exit(proc)

    @precondition(lambda self: self._procs(
        lambda p: p.tasks and p.waiting is None and p.worker.actor is None))
    @rule(data=st.data(), timeout=st.sampled_from([None, None, 1.0]))
    def nested_get(self, data, timeout):
        proc = data.draw(st.sampled_from(self._procs(
            lambda p: p.tasks and p.waiting is None and p.worker.actor is None)))
        running = proc.tasks[0]
        # Only what cannot wait on this task in turn (else the cluster would deadlock, as
        # Ray's would): values already there, and results of tasks submitted after it that
        # take no arguments and no GPU (its children, as it were: its CPUs are lent to them).
        store = self.cluster.store
        children = sorted(oid for oid, task in self.children.items() if task > running)
        there = [oid for oid in self.refs if oid not in self.children and store.is_ready(oid)]
        candidates = children if children and data.draw(st.booleans()) else children + there
        if not candidates:
            return
        ids = data.draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=2))
        self.cluster.nested_get(proc, ids, timeout)
        event("a nested get blocks" if proc.waiting is not None else "a nested get is answered")

    @precondition(lambda self: self.cluster.timers)
    @rule()
    def timer_fires(self):
        blocked = sum(1 for p in self.cluster.procs.values() if p.waiting is not None)
        self.cluster.fire_timer()
        if sum(1 for p in self.cluster.procs.values() if p.waiting is not None) < blocked:
            event("a nested get times out")

    # -- invariants ------------------------------------------------------------------------------
    @invariant()
    def no_resource_leaks(self):
        assert_pool_matches(self.cluster.sched)

    @invariant()
    def no_task_is_lost(self):
        sched = self.cluster.sched
        placed = Counter(w.id for worker in sched.workers.values() for w in worker.inflight)
        queued = Counter(w.id for queue in sched.ready.values() for w in queue)
        for work_id, work in self.tasks.items():
            finished = self.cluster.finished[work_id]
            assert finished <= 1, f"task {work_id} finished {finished} times"
            if finished:
                assert work_id not in sched.tasks
                continue
            # not finished: exactly one place, or waiting for its arguments
            assert work_id in sched.tasks, f"task {work_id} is lost"
            where = placed[work_id] + queued[work_id]
            assert where == 1 or (where == 0 and work.waiting > 0), (work_id, where)
        for actor_id, call_ids in self.calls.items():
            actor = sched.actors[actor_id]
            for call_id in call_ids:
                finished = self.cluster.finished[call_id]
                assert finished <= 1
                if not finished:
                    assert (call_id in actor.inflight
                            or any(w.id == call_id for w in actor.queue)), f"call {call_id} lost"

    @invariant()
    def retries_and_restarts_are_bounded(self):
        for work_id, runs in self.runs.items():
            max_retries = self.max_retries.get(work_id, -1)
            if max_retries >= 0:  # a run that crashed or raised, and each retry of it
                assert runs <= 1 + max_retries, (work_id, runs, max_retries)
        for actor_id, max_restarts in self.max_restarts.items():
            if max_restarts >= 0:
                assert self.cluster.spawned_for[actor_id] <= 1 + max_restarts

    @invariant()
    def actors_fate_share_with_their_creator(self):
        sched, exitcodes = self.cluster.sched, self.cluster.exitcodes
        for actor_id, (uid, by_actor) in self.owners.items():
            if uid in exitcodes and (by_actor or exitcodes[uid] != 0):
                # The creator died: its actor is dead, or killed for good and on its way.
                actor = sched.actors[actor_id]
                assert actor.state == "dead" or (actor.no_restart and actor.exited), actor_id
                if actor.state != "dead":
                    assert actor.worker is not None
                    assert self.cluster.procs[actor.worker.uid].doomed
        for actor_id, spawned in self.exited.items():
            assert sched.actors[actor_id].state == "dead"
            assert self.cluster.spawned_for[actor_id] == spawned  # never restarted

    @invariant()
    def actors_get_their_calls_in_order(self):
        order = {call_id: i for call_ids in self.calls.values()
                 for i, call_id in enumerate(call_ids)}
        for proc in self.cluster.every_proc:
            positions = [order[c] for c in proc.received_calls]
            assert positions == sorted(positions) and len(set(positions)) == len(positions)

    # -- the end: drain, then everything has finished and come back ------------------------------
    def _drain(self) -> None:
        cluster = self.cluster
        for _ in range(10_000):
            moved = False
            for proc in sorted(cluster.procs.values(), key=lambda p: p.worker.uid):
                if proc.worker.uid not in cluster.procs:
                    continue
                if proc.doomed:
                    if proc.tasks:
                        self.runs[proc.tasks[0]] += 1
                    cluster.exit(proc, exitcode=0)
                elif not proc.ready:
                    cluster.ready(proc)
                elif proc.worker.actor is not None and not proc.constructed:
                    cluster.construct(proc)
                elif proc.tasks and proc.waiting is None:
                    cluster.finish_task(proc)
                elif proc.calls:
                    cluster.finish_call(proc)
                else:
                    continue
                moved = True
            if cluster.timers:
                cluster.fire_timer()
                moved = True
            if not moved:
                return
        raise AssertionError("the cluster never settled")

    def teardown(self) -> None:
        cluster = self.cluster
        sched = cluster.sched
        self._drain()
        self.actors_get_their_calls_in_order()
        for actor_id in list(sched.actors):
            sched.kill_actor(actor_id, no_restart=True)
            cluster.flush()
        self._drain()

        for work_id in self.tasks:
            assert cluster.finished[work_id] == 1, f"task {work_id} never finished"
        for call_ids in self.calls.values():
            for call_id in call_ids:
                assert cluster.finished[call_id] == 1, f"call {call_id} never finished"
        assert sched.tasks == {} and not any(sched.ready.values())
        assert all(actor.state == "dead" for actor in sched.actors.values())
        assert sched.pool.available == pytest.approx(sched.pool.totals)
        for oid in list(self.refs):
            cluster.release(oid)
        assert cluster.store.objects == {}, "objects outlived every reference to them"


SchedulerMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_generated_orders_of_events = SchedulerMachine.TestCase
