"""Tasks in the local driver: submission, dependencies, scheduling onto workers, completion,
retries, cancellation, and what happens when a task's worker dies."""

# The driver is one class (LocalBackend) split by concern into mixins; each method declares
# `self: LocalBackend` so that mypy checks it against the whole class. mypy reports such self
# types on a mixin under "misc", which is therefore off for this module only.
# mypy: disable-error-code="misc"

from __future__ import annotations

import functools
import logging
import os
import signal
from collections import deque
from typing import TYPE_CHECKING, Any

from ember.core import _runtime_env
from ember.core import _serialization as ser
from ember.core._options import resource_request
from ember.core._refs import ObjectRef, ObjectRefGenerator
from ember.core._remote import RemoteFunction
from ember.core.local._protocol import COLLECT
from ember.core.local._records import (
    _EMPTY_ARGS,
    _MAX_TASK_WORKERS,
    _PIPELINE_DEPTH,
    _SHORT_TASK_S,
    _Generator,
    _kill,
    _Work,
    _Worker,
)
from ember.core.local._worker_client import serialize_args
from ember.errors import (
    ResourceError,
    TaskCancelledError,
    TaskError,
    WorkerCrashedError,
)

if TYPE_CHECKING:
    from ember.core.local._driver import LocalBackend

logger = logging.getLogger("ember")


class TasksMixin:
    def _on_done(
        self: LocalBackend, worker: _Worker, work_id: int, results: Any, error: Any, seconds: float
    ) -> None:
        actor = worker.actor
        if actor is not None:  # an actor call frees no resources: nothing new to schedule
            work = actor.inflight.pop(work_id, None)
            if work is not None:
                self._observer.last_work[worker.uid] = work  # observe: names late log lines
                self._finish(work, results, error)
            return
        if not worker.inflight or worker.inflight[0].id != work_id:
            work = next((w for w in worker.inflight if w.id == work_id), None)
            if work is None:
                return
            worker.inflight.remove(work)
        else:
            work = worker.inflight.popleft()
        self._observer.last_work[worker.uid] = work  # observe: names late log lines
        assert work.fn_id is not None
        previous = self._fn_seconds.get(work.fn_id)
        self._fn_seconds[work.fn_id] = seconds if previous is None else (
            0.8 * previous + 0.2 * seconds)
        if not worker.inflight:
            if worker.blocked:  # pragma: no cover - a finished task is no longer blocked
                worker.blocked = False
                self._pool.reclaim_cpus(work.request)
            self._pool.release(work.request, work.gpu_ids)
            self._park(worker)
        self._tasks.pop(work_id, None)
        if error is not None and self._should_retry(work, error):
            self._enqueue(work)
        else:
            self._finish(work, results, error)
        self._schedule()

    def _park(self: LocalBackend, worker: _Worker) -> None:
        """An idle worker waits for the next task, unless enough others already do."""
        if len(self._idle) >= max(2, 2 * int(self._pool.totals.get("CPU", 1))):
            self._send(worker, ("exit",))  # extra workers from a burst of nested tasks
            return
        self._idle.append(worker)

    def _should_retry(self: LocalBackend, work: _Work, error: ser.Stored) -> bool:
        if work.cancelled or not work.retries_left or work.actor is not None:
            return False
        exc = ser.loads_detached(error, self._names)  # the lock is held
        if type(exc) is TaskCancelledError:
            # A cancel signal that landed on the next (pipelined) task: run that one again.
            return True
        retry = work.retry_exceptions
        if retry is True or (isinstance(retry, (list, tuple)) and isinstance(exc, tuple(retry))):
            work.retries_left -= 1
            return True
        return False

    def _finish(self: LocalBackend, work: _Work, results: Any, error: Any) -> None:
        """Publish a finished task's results (or error) and drop what it pinned."""
        self._observer.on_finish(work, error)  # observe: counts and recent tasks
        if work.gen_id is not None:
            gen = self._gens.get(work.gen_id)
            if gen is not None:
                if error is not None:
                    self._on_item(work.gen_id, -1, error, True)
                gen.finished = True
                self._wake_generator(gen)
        elif error is not None:
            # A generator declared with num_returns=n that failed after k < n items: its first
            # k returns hold those items, the others the error (as in Ray).
            done = len(results) if results else 0
            for oid, stored in zip(work.return_ids, results or (), strict=False):
                self._resolve(oid, stored, False)
            for oid in work.return_ids[done:]:
                self._resolve(oid, error, True)
        else:
            for oid, stored in zip(work.return_ids, results, strict=True):
                self._resolve(oid, stored, False)
        for oid in work.return_ids:
            self._producer.pop(oid, None)
        self._unpin_work(work)

    def _resolve(self: LocalBackend, oid: int, stored: ser.Stored, is_error: bool) -> None:
        for callback in self._store.resolve(oid, stored, is_error):
            callback(oid)

    def _fail(self: LocalBackend, work: _Work, exc: BaseException) -> None:
        self._finish(work, None, ser.dumps(exc, None, 0))

    def _unpin_work(self: LocalBackend, work: _Work) -> None:
        store = self._store
        store.unpin(work.args)
        for dep in work.deps:
            store.decref(dep)

    def _infeasible(self: LocalBackend, request: dict[str, float], what: str
                    ) -> ResourceError | None:
        """The error of a request that can never fit (None when it can), logged as a warning
        the first time, as Ray logs its infeasible-task warning: the submission returns its
        references anyway, and ``get``/``wait``/``await`` on them raise this at once."""
        reason = self._pool.infeasible_reason(request)
        if reason is None:
            return None
        error = ResourceError(
            f"{what} can never run: {reason}. Ask for less, or start ember with more "
            "(ember.init(num_cpus=..., num_gpus=..., resources={...}))"
        )
        key = (what, tuple(sorted(request.items())))
        if key not in self._warned_infeasible:
            self._warned_infeasible.add(key)
            logger.warning("ember: %s; ember.get of its result raises ResourceError", error)
        return error

    def _serialize(self: LocalBackend, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
                   ) -> tuple[ser.Stored, list[int]]:
        if not args and not kwargs:
            return _EMPTY_ARGS, []
        return serialize_args(name, args, kwargs, self._names, self._threshold)

    def submit_task(
        self: LocalBackend, fn: RemoteFunction, args: tuple[Any, ...], kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> Any:
        self._check_open()
        request = resource_request(options)
        env = _runtime_env.for_local(options.get("runtime_env"), f"task {fn._name}")
        stored, deps = self._serialize(fn._name, args, kwargs)
        fn_id = fn.function_id
        if fn_id not in self._fn_code:
            self._fn_code[fn_id] = fn.pickled()
        num_returns = options["num_returns"]
        self._lock.acquire()
        try:
            if deps and self._claimed:  # a claimed result may be among them
                self._release_claims()
            work = self._new_work(options.get("name") or fn._name, stored, deps, num_returns,
                                  holder=None)
            work.fn_id = fn_id
            work.request = request
            work.key = (fn_id, tuple(sorted(request.items())))
            work.retries_left = options["max_retries"]
            work.retry_exceptions = options["retry_exceptions"]
            work.env = env
            self._enqueue_feasible(work, f"task {fn._name}")
            return self._returns(work, num_returns)
        finally:
            self._unlock()

    def _new_work(
        self: LocalBackend, name: str, stored: ser.Stored, deps: list[int], num_returns: Any,
        holder: _Worker | None, work_id: int | None = None,
        return_ids: list[int] | None = None, gen_id: int | None = None,
    ) -> _Work:
        work = _Work()
        work.id = next(self._ids) if work_id is None else work_id
        work.name = name
        work.args = stored
        work.deps = deps
        store = self._store
        store.pin(stored)
        for dep in deps:
            store.incref(dep)
        if num_returns == "dynamic":  # one result: the references of what it yields
            work.backpressure = COLLECT
            num_returns = 1
        streaming = num_returns == "streaming"
        if return_ids is None:
            return_ids = [] if streaming else [next(self._ids) for _ in range(num_returns)]
            if streaming:
                gen_id = next(self._ids)
        work.return_ids = return_ids
        for oid in return_ids:
            store.new(oid, refs=1)
            self._producer[oid] = work
            if holder is not None:
                holder.held[oid] = holder.held.get(oid, 0) + 1
        work.gen_id = gen_id
        if gen_id is not None:
            gen = self._gens[gen_id] = _Generator(work)
            gen.refs = 1
            self._producer[gen_id] = work
            if holder is not None:
                holder.held[gen_id] = holder.held.get(gen_id, 0) + 1
        return work

    def _returns(self: LocalBackend, work: _Work, num_returns: Any) -> Any:
        if work.gen_id is not None:
            gen = ObjectRefGenerator.__new__(ObjectRefGenerator)
            gen._id, gen._rt, gen._index, gen._done = work.gen_id, self, 0, False
            return gen
        refs = [ObjectRef(oid, self, add_ref=False) for oid in work.return_ids]
        if num_returns in (1, "dynamic"):
            return refs[0]
        return refs or None

    def _enqueue_feasible(self: LocalBackend, work: _Work, what: str) -> None:
        """Queue a new task, or fail it at once when its request can never fit."""
        error = self._infeasible(work.request, what) if work.request else None
        if error is None:
            self._enqueue(work)
        else:
            self._fail(work, error)

    def _enqueue(self: LocalBackend, work: _Work) -> None:
        """Queue a task once its dependencies are ready."""
        self._tasks[work.id] = work
        pending = [d for d in work.deps if not self._store.is_ready(d)]
        if not pending:
            self._make_ready(work)
            return
        work.waiting = len(pending)

        def dep_ready(_oid: int) -> None:
            work.waiting -= 1
            if work.waiting == 0 and not work.cancelled:
                self._make_ready(work)
                self._schedule()

        for dep in pending:
            self._store.add_callback(dep, dep_ready)

    def _make_ready(self: LocalBackend, work: _Work) -> None:
        for dep in work.deps:
            value = self._store.value(dep)
            if value is not None and value[1]:  # a dependency failed: so does this task
                self._tasks.pop(work.id, None)
                self._finish(work, None, value[0])
                return
        queue = self._ready.get(work.key)
        if queue is None:
            queue = self._ready[work.key] = deque()
        queue.append(work)
        self._schedule()

    def _schedule(self: LocalBackend) -> None:
        if self._closed:
            return
        pool = self._pool
        pending = self._pending_actors
        while pending:
            if pending[0].state == "dead":  # killed while it waited: drop it here, in O(1)
                pending.popleft()
            elif pool.fits(pending[0].request):
                self._start_actor(pending.popleft())
            else:
                break
        for key, queue in list(self._ready.items()):
            while queue:
                work = queue[0]
                if pool.fits(work.request):
                    worker = self._idle.pop() if self._idle else None
                    if worker is None:
                        self._grow(queue, work.request)
                        worker = self._pipeline_target(work)
                        if worker is None:
                            break
                    else:
                        work.gpu_ids = pool.acquire(work.request)
                else:
                    worker = self._pipeline_target(work)
                    if worker is None:
                        break
                queue.popleft()
                self._dispatch(work, worker)
            if not queue:
                del self._ready[key]

    def _grow(self: LocalBackend, queue: deque[_Work], request: dict[str, float]) -> None:
        cpus = request.get("CPU", 0.0)
        room = int(self._pool.available.get("CPU", 0.0) // cpus) if cpus else len(queue)
        want = min(len(queue), room) - self._starting
        busy = len(self._workers) - len(self._idle) - self._starting
        for _ in range(max(0, min(want, _MAX_TASK_WORKERS - busy))):
            self._spawn(None)

    def _pipeline_target(self: LocalBackend, work: _Work) -> _Worker | None:
        seconds = self._fn_seconds.get(work.fn_id or "")
        if seconds is None or seconds > _SHORT_TASK_S or work.gen_id is not None:
            return None
        best = None
        for worker in self._workers.values():
            if (worker.actor is None and worker.inflight and not worker.blocked
                    and len(worker.inflight) < _PIPELINE_DEPTH
                    and worker.inflight[0].key == work.key
                    and (best is None or len(worker.inflight) < len(best.inflight))):
                best = worker
        if best is not None:
            work.gpu_ids = best.inflight[0].gpu_ids
        return best

    def _dispatch(self: LocalBackend, work: _Work, worker: _Worker) -> None:
        worker.inflight.append(work)
        fn_id = work.fn_id
        assert fn_id is not None
        code = None
        if fn_id not in worker.known_fns:
            worker.known_fns.add(fn_id)
            code = self._fn_code[fn_id]
        self._send(worker, ("task", work.id, fn_id, code, work.args, self._dep_values(work),
                            work.return_ids, work.gen_id, work.gpu_ids, work.name,
                            work.backpressure, work.env))
        if work.gen_id is not None:
            gen = self._gens.get(work.gen_id)
            if gen is not None:
                gen.worker = worker

    def _dep_values(self: LocalBackend, work: _Work) -> tuple[Any, ...]:
        if not work.deps:
            return ()
        return tuple(self._store.value(d) for d in work.deps)

    def _requeue(self: LocalBackend, worker: _Worker, work_ids: list[int]) -> None:
        for work_id in reversed(work_ids):
            work = next((w for w in worker.inflight if w.id == work_id), None)
            if work is None:
                continue
            worker.inflight.remove(work)
            work.gpu_ids = ()
            queue = self._ready.setdefault(work.key, deque())
            queue.appendleft(work)
        self._schedule()

    def cancel(self: LocalBackend, ref: ObjectRef | ObjectRefGenerator, force: bool,
               recursive: bool) -> None:
        self._check_open()
        with self._lock:
            self._cancel(ref._id, force, recursive)
            self._unlock_keep()
        self._run_deferred()

    def _cancel(self: LocalBackend, oid: int, force: bool, recursive: bool) -> None:
        work = self._producer.get(oid)
        if work is None or work.cancelled:
            return
        if work.actor is not None:
            self._cancel_call(work)
            return
        work.cancelled = True
        if recursive:
            for child in [w for w in self._tasks.values() if w.parent == work.id]:
                for child_oid in [*child.return_ids, child.gen_id]:
                    if child_oid is not None:
                        self._cancel(child_oid, force, recursive)
        queue = self._ready.get(work.key)
        if queue is not None and work in queue:
            queue.remove(work)
            self._tasks.pop(work.id, None)
            self._fail(work, TaskCancelledError(f"{work.name} was cancelled before it ran"))
            return
        worker = next((w for w in self._workers.values() if work in w.inflight), None)
        if worker is None:
            if work.waiting:  # still waiting for its arguments
                self._tasks.pop(work.id, None)
                self._fail(work, TaskCancelledError(f"{work.name} was cancelled before it ran"))
            return
        # Sent to a worker: its caller learns at once (the worker's own answer, when it comes,
        # is dropped), and the worker is stopped: interrupted (force=False) or killed.
        if force:
            self._resolve_cancelled(work, worker, TaskCancelledError(
                f"{work.name} was cancelled (force=True) while it ran"))
        else:
            self._resolve_cancelled(work, worker, _interrupted(work.name))
        if worker.inflight[0] is not work:  # queued behind another task on that worker
            self._send(worker, ("cancel", work.id))
        elif force:
            _kill(worker)
        elif worker.pid is not None:
            # The signal follows the message (deferred callbacks run once the outboxes are
            # sent): a worker that gets it between two tasks then finds out which task it meant.
            self._send(worker, ("cancel", work.id))
            self._deferred.append(functools.partial(_interrupt, worker.pid))

    def _cancel_call(self: LocalBackend, work: _Work) -> None:
        """Cancel an actor call. A queued one never runs. A running one is not interrupted (an
        actor has state), as in Ray: an ``async`` actor cancels its asyncio task, the others
        let the method see ``get_runtime_context().is_canceled()``. Either way ``get`` raises
        ``TaskCancelledError`` at once."""
        actor = work.actor
        assert actor is not None
        if work in actor.queue:
            actor.queue.remove(work)
            work.cancelled = True
            self._fail(work, TaskCancelledError(
                f"{actor.meta.class_name}.{work.method} was cancelled"))
        elif work.id in actor.inflight and actor.worker is not None:
            work.cancelled = True
            self._send(actor.worker, ("cancel", work.id))
            self._resolve_cancelled(work, actor.worker,
                                    _interrupted(f"{actor.meta.class_name}.{work.method}"))

    def _resolve_cancelled(
        self: LocalBackend, work: _Work, worker: _Worker, exc: BaseException
    ) -> None:
        """Resolve what ``work`` returns to ``exc`` now, before ``worker`` has stopped it; what
        it pinned stays pinned until then."""
        stored = ser.dumps(exc, None, 0)
        if work.gen_id is not None:
            gen = self._gens.get(work.gen_id)
            if gen is not None and not gen.finished:
                self._on_item(work.gen_id, -1, stored, True)
                gen.finished = True
                self._wake_generator(gen)
        else:
            for oid in work.return_ids:
                self._resolve(oid, stored, True)
        if worker.direct is not None:  # a caller reads that worker's socket itself: wake it
            try:
                os.write(worker.direct, b"x")
            except OSError:
                pass

    def _on_worker_exit(self: LocalBackend, worker: _Worker) -> None:
        if self._workers.pop(worker.uid, None) is None:
            return
        self._observer.on_exit(worker)  # observe
        worker.release()
        exitcode = worker.exitcode
        for oid, count in worker.held.items():
            for _ in range(count):
                self._release(oid)
        worker.held.clear()
        if worker in self._idle:
            self._idle.remove(worker)
        if not worker.ready and worker.actor is None:
            self._starting -= 1
        if worker.actor is not None or exitcode != 0:
            # An actor's process, or a task worker that died (one that exits idle, code 0,
            # leaves what it created to the driver): the actors it created die with it.
            self._kill_owned_actors(worker)
        else:
            self._owned.pop(worker.uid, None)
        if worker.actor is not None:
            self._on_actor_worker_exit(worker.actor, worker, exitcode)
            self._schedule()
            return
        inflight = list(worker.inflight)
        worker.inflight.clear()
        if inflight:
            running = inflight[0]
            if worker.blocked:
                self._pool.reclaim_cpus(running.request)
            self._pool.release(running.request, running.gpu_ids)
            for work in reversed(inflight[1:]):
                self._ready.setdefault(work.key, deque()).appendleft(work)
            self._task_worker_died(running, exitcode)
        self._schedule()

    def _task_worker_died(self: LocalBackend, work: _Work, exitcode: Any) -> None:
        gen = self._gens.get(work.gen_id) if work.gen_id is not None else None
        produced = gen is not None and gen.produced > 0
        if work.cancelled:
            self._tasks.pop(work.id, None)
            self._fail(work, TaskCancelledError(f"{work.name} was cancelled (force=True)"))
        elif work.retries_left and not produced:
            if work.retries_left > 0:
                work.retries_left -= 1
            logger.info("worker running %s died (exit code %s); retrying", work.name, exitcode)
            self._ready.setdefault(work.key, deque()).appendleft(work)
        else:
            self._tasks.pop(work.id, None)
            self._fail(work, WorkerCrashedError(
                f"the worker process running {work.name} died (exit code {exitcode}) and no "
                "retries are left (raise max_retries to retry more)"))


def _interrupt(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        pass


def _interrupted(name: str) -> TaskError:
    """The error of a call cancelled while it ran: a ``TaskCancelledError`` that is also a
    ``TaskError``, as Ray raises ``RayTaskError(TaskCancelledError)`` for it (a call cancelled
    before it ran raises a plain ``TaskCancelledError``, in Ray too)."""
    return TaskError.wrap(TaskCancelledError(f"{name} was cancelled while it ran"), name, "")
