"""The local backend's scheduler: a pure state machine, as dask's ``worker_state_machine.py``.

It owns the records (tasks, actor calls, workers, actors, generators, the object table), the
resource pool, dependencies, the ready queues and every decision: where a task runs, when a
worker starts or stops, whether a failed task retries, whether a dead actor restarts, in which
order an actor's calls go out, what a blocked worker's CPUs are lent to.

Events come in as method calls, made by the I/O layer (``_driver.py``, ``_io.py``) with its
lock held: the API's calls (``submit_task``, ``submit_call``, ``create_actor``, ``cancel``,
``release`` ...), what a worker sent (``on_done``, ``on_request`` ...), and what became of a
process (``on_ready``, ``worker_exited``). Instructions go out two ways:

- messages for a worker go to its ``outbox``, and the worker into ``dirty``: the I/O layer
  sends each outbox in one write when it leaves its locked section;
- everything else goes to ``instructions`` as tuples, carried out by the I/O layer when it
  leaves that section: ``(SPAWN, worker)`` start a process for this new record,
  ``(KILL, worker)`` kill its process, ``(INTERRUPT, worker)`` signal it once its messages are
  sent (a cancelled task), ``(WAKE, worker)`` wake a caller reading its socket itself,
  ``(TIMER, delay, callback)`` call ``callback`` (an event) ``delay`` seconds from now.

Callbacks registered on the object table run when a value arrives, in the event that resolves
it: the scheduler's own (a dependency arrived) and those of the I/O layer's waiters (which
count down and release a lock, or queue a call for after the section).

Three concerns live beside it, as parts it owns: ``_actors.Actors`` (actors: their queues of
calls, restarts, deaths, fate-sharing), ``_streams.Streams`` (streaming generators: items,
takers, acks) and ``_requests.Requests`` (what a worker's running task asks of the driver:
nested get and wait, with the lending of its CPUs).

There are no sockets, threads, clocks or processes here: ``tests/core/local/test_scheduler.py``
drives it with plain calls and checks it over generated orders of events.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ember.core import _serialization as ser
from ember.core._placement import NOT_SET, GroupRegistry, PlacementGroup, new_local_group
from ember.core._remote import ActorMeta
from ember.core.local._actors import Actors, interrupted
from ember.core.local._protocol import COLLECT
from ember.core.local._records import (
    _MAX_TASK_WORKERS,
    _PIPELINE_DEPTH,
    _SHORT_TASK_S,
    INTERRUPT,
    KILL,
    SPAWN,
    TIMER,
    WAKE,
    Instruction,
    _Actor,
    _Work,
    _Worker,
)
from ember.core.local._requests import Requests
from ember.core.local._resources import LOCAL_NODE_ID, ResourcePool
from ember.core.local._store import ObjectTable
from ember.core.local._streams import Streams
from ember.errors import (
    ResourceError,
    TaskCancelledError,
    WorkerCrashedError,
)

__all__ = ["INTERRUPT", "KILL", "SPAWN", "TIMER", "WAKE", "Instruction", "Listener", "Scheduler"]

logger = logging.getLogger("ember")


class Listener(Protocol):
    """What the scheduler tells the state API (``_state.LocalObserver``)."""

    last_work: dict[int, _Work]  # worker uid -> the work it finished last

    def on_finish(self, work: _Work, error: ser.Stored | None) -> None: ...


class _Quiet:
    def __init__(self) -> None:
        self.last_work: dict[int, _Work] = {}

    def on_finish(self, work: _Work, error: ser.Stored | None) -> None:
        pass


def _decode_inline(stored: ser.Stored) -> Any:
    return ser.loads_detached(stored, None)


class Scheduler:
    """The local backend's records and decisions (see the module's docstring)."""

    def __init__(
        self, totals: dict[str, float], gpu_ids: tuple[str, ...], store: ObjectTable, *,
        namespace: str = "default", decode: Callable[[ser.Stored], Any] | None = None,
        listener: Listener | None = None,
    ) -> None:
        self.store = store
        self.pool = ResourcePool(totals, gpu_ids)
        self.namespace = namespace
        # Reads a stored error (to match it against retry_exceptions, to name a death's cause).
        self.decode = decode or _decode_inline
        self.listener: Listener = listener or _Quiet()  # observe
        self.ids = itertools.count(1)  # object, task, actor and generator ids
        self.tasks: dict[int, _Work] = {}  # tasks not finished (not actor calls)
        self.producer: dict[int, _Work] = {}  # return id or generator id -> its work
        self.ready: dict[tuple[Any, ...], deque[_Work]] = {}  # by (function, request)
        self.workers: dict[int, _Worker] = {}
        self.idle: list[_Worker] = []
        self.starting = 0  # task workers spawned that have not said "ready" yet
        self.actors: dict[int, _Actor] = {}
        self.pending_actors: deque[_Actor] = deque()  # waiting for resources, in order
        self.named: dict[tuple[str, str], int] = {}
        self.fn_code: dict[str, bytes] = {}
        self.groups = GroupRegistry(LOCAL_NODE_ID)  # placement groups, by id
        self.fn_seconds: dict[str, float] = {}  # a moving average of each function's run time
        self.live_actors = 0  # actors not dead
        # Worker uid -> the non-detached actors its task or actor created (they die with it).
        self.owned: dict[int, set[int]] = {}
        self.closed = False
        self.dirty: set[_Worker] = set()
        self.instructions: list[Instruction] = []
        self._uids = itertools.count(1)
        self._warned_infeasible: set[tuple[Any, ...]] = set()
        self.streams = Streams(store, self.ids, self.send, self.workers)
        self.requests = Requests(self)
        self._actors = Actors(self)

    # -- instructions ----------------------------------------------------------------------
    def send(self, worker: _Worker, message: Any) -> None:
        worker.outbox.append(message)
        self.dirty.add(worker)

    def reply(self, worker: _Worker, request_id: int, payload: Any) -> None:
        if worker.uid in self.workers:
            self.send(worker, ("reply", request_id, payload))

    def spawn(self, actor: _Actor | None) -> _Worker:
        worker = _Worker(next(self._uids))
        worker.actor = actor
        self.workers[worker.uid] = worker
        if actor is None:
            self.starting += 1
        self.instructions.append((SPAWN, worker))
        return worker

    def prestart(self, count: int) -> None:
        """Start ``count`` task workers ahead of the first task."""
        for _ in range(count):
            self.spawn(None)

    # -- objects and references --------------------------------------------------------------
    def addref(self, oid: int) -> None:
        """One more reference to an object or a generator."""
        if not self.store.incref(oid):
            self.streams.addref(oid)

    def release(self, oid: int) -> None:
        if oid in self.store.objects:
            self.store.decref(oid)
            return
        self.streams.release(oid)

    def put(self, oid: int, stored: ser.Stored) -> None:
        """A value the driver put (``oid`` from ``ids``): one reference, its caller's."""
        self.store.new(oid, refs=1)
        self._resolve(oid, stored, False)

    def _resolve(self, oid: int, stored: ser.Stored, is_error: bool) -> None:
        for callback in self.store.resolve(oid, stored, is_error):
            callback(oid)

    def fail_all(self, stored: ser.Stored) -> None:
        """The runtime stops: every value still to come becomes ``stored`` (an error) and every
        generator ends, so that nothing waits forever."""
        for oid in [oid for oid, obj in self.store.objects.items() if obj.stored is None]:
            self._resolve(oid, stored, True)
        self.streams.end_all()

    def shutdown(self, stored: ser.Stored) -> None:
        """The runtime shuts down: no more scheduling or replies; pending values fail."""
        self.closed = True
        self.workers.clear()
        self.fail_all(stored)

    def resources(self, which: str) -> dict[str, float]:
        # As Ray does, the object store's capacity shows beside the schedulable resources
        # (ember.data sizes its default memory budget from it); it is never requested by tasks.
        store = self.store
        if which == "total":
            view = dict(self.pool.totals)
            view["object_store_memory"] = float(store.capacity)
        else:
            view = self.pool.snapshot()
            view["object_store_memory"] = float(max(0, store.capacity - store.used))
        return view

    # -- messages from workers ----------------------------------------------------------------
    def on_ready(self, worker: _Worker) -> None:
        """The worker's process runs and takes work."""
        worker.ready = True
        if worker.actor is None:
            self.starting -= 1
            self.idle.append(worker)
            self.schedule()

    def on_refs(self, worker: _Worker, deltas: Iterable[tuple[int, int]]) -> None:
        held = worker.held
        for oid, delta in deltas:
            held[oid] = held.get(oid, 0) + delta
            if held[oid] <= 0:
                del held[oid]
            if delta > 0:
                self.addref(oid)
            else:
                self.release(oid)

    def on_put(self, worker: _Worker, oid: int, stored: ser.Stored, is_error: bool = False
               ) -> None:
        """A value the worker put (with ``is_error``: an error, e.g. the last object of a
        dynamic generator that raised); the worker holds its one reference."""
        self.store.new(oid, refs=1)
        worker.held[oid] = worker.held.get(oid, 0) + 1
        self._resolve(oid, stored, is_error)

    def on_actor_exit(self, worker: _Worker, reason: str) -> None:
        """The actor's method called ``sys.exit()`` or ``exit_actor()``: its process ends and
        the actor is not restarted."""
        if worker.actor is not None:
            worker.actor.no_restart = True
            worker.actor.exited = reason

    def on_done(
        self, worker: _Worker, work_id: int, results: Any, error: ser.Stored | None,
        seconds: float,
    ) -> None:
        actor = worker.actor
        if actor is not None:  # an actor call frees no resources: nothing new to schedule
            work = actor.inflight.pop(work_id, None)
            if work is not None:
                self.listener.last_work[worker.uid] = work  # observe: names late log lines
                self.finish(work, results, error)
            return
        inflight = worker.inflight
        if not inflight or inflight[0].id != work_id:
            found = next((w for w in inflight if w.id == work_id), None)
            if found is None:
                return
            work = found
            inflight.remove(work)
        else:
            work = inflight.popleft()
        self.listener.last_work[worker.uid] = work  # observe: names late log lines
        fn_id = work.fn_id or ""
        previous = self.fn_seconds.get(fn_id)
        self.fn_seconds[fn_id] = seconds if previous is None else (
            0.8 * previous + 0.2 * seconds)
        if not inflight:
            if worker.blocked:  # pragma: no cover - a finished task is no longer blocked
                worker.blocked = False
                self.pool.reclaim_cpus(work.request)
            self.pool.release(work.request, work.gpu_ids)
            self._park(worker)
        self.tasks.pop(work_id, None)
        if error is not None and self._should_retry(work, error):
            self._enqueue(work)
        else:
            self.finish(work, results, error)
        self.schedule()

    def on_requeue(self, worker: _Worker, work_ids: list[int]) -> None:
        """The worker hands back tasks queued on it that it has not started."""
        for work_id in reversed(work_ids):
            work = next((w for w in worker.inflight if w.id == work_id), None)
            if work is None:
                continue
            worker.inflight.remove(work)
            work.gpu_ids = ()
            queue = self.ready.setdefault(work.key, deque())
            queue.appendleft(work)
        self.schedule()

    def on_item(self, gen_id: int, index: int, stored: ser.Stored, is_error: bool) -> None:
        """A generator produced an item (or, with ``is_error``, failed): see _streams."""
        self.streams.on_item(gen_id, index, stored, is_error)

    def on_request(self, worker: _Worker, rid: int, kind: str, payload: Any) -> None:
        """The worker's task asks something and waits for the reply: see _requests."""
        self.requests.on_request(worker, rid, kind, payload)

    def on_actor_ready(self, actor_id: int) -> None:
        actor = self.actors.get(actor_id)
        if actor is not None and actor.state == "starting":
            actor.state = "alive"

    def on_actor_failed(self, actor_id: int, error: ser.Stored) -> None:
        actor = self.actors.get(actor_id)
        if actor is not None:
            self._actors.dead(actor, "its constructor raised", error=error)

    def on_submit(self, worker: _Worker, spec: tuple[Any, ...]) -> None:
        """A task submitted inside a worker (its ids were allocated there)."""
        (task_id, fn_id, code, stored, deps, return_ids, gen_id, request, max_retries,
         retry_exceptions, name, parent, collect, env, group) = spec
        if code is not None:
            self.fn_code[fn_id] = code
        work = self.new_work(name, stored, deps, None, worker, work_id=task_id,
                             return_ids=return_ids, gen_id=gen_id)
        work.fn_id = fn_id
        work.request = request
        work.key = (fn_id, tuple(sorted(request.items())))
        work.retries_left = max_retries
        work.retry_exceptions = retry_exceptions
        work.parent = parent
        if collect:
            work.backpressure = COLLECT
        work.env = env
        if group is not None:
            work.group = self.placed_by(worker, parent) if group == NOT_SET else group
        self._enqueue_feasible(work, f"task {name}")

    def running_group(self, worker: _Worker, task_id: int | None) -> Any:
        """``(placement group, captures child tasks)`` of what ``worker`` runs: its actor, or
        its task ``task_id``; None when that is in no group."""
        if worker.actor is not None:
            return worker.actor.group
        work = self.tasks.get(task_id) if task_id is not None else None
        return work.group if work is not None else None

    def placed_by(self, worker: _Worker, task_id: int | None) -> Any:
        """The group that new work started by ``worker``'s task ``task_id`` (or by its actor)
        runs in: its own, when that group captures child tasks."""
        group = self.running_group(worker, task_id)
        return group if group is not None and group[1] else None

    def new_group(self, bundles: list[dict[str, float]], strategy: str, name: str
                  ) -> PlacementGroup:
        """A placement group on this one node (nothing to reserve), kept by name and id."""
        group = new_local_group(bundles, strategy, self.resources("total"))
        self.groups.add(group, name)
        return group

    def on_call(self, worker: _Worker, spec: tuple[Any, ...]) -> None:
        """An actor call made inside a worker."""
        actor_id, call_id, method, stored, deps, return_ids, gen_id, collect = spec
        work = self.new_work(method, stored, deps, None, worker, work_id=call_id,
                             return_ids=return_ids, gen_id=gen_id)
        if collect:
            work.backpressure = COLLECT
        self._actors.queue_call(actor_id, work, method)

    def worker_exited(self, worker: _Worker, exitcode: int | None) -> None:
        """The worker's process is gone (its socket closed and its exit code is known)."""
        if self.workers.pop(worker.uid, None) is None:
            return
        for oid, count in worker.held.items():
            for _ in range(count):
                self.release(oid)
        worker.held.clear()
        if worker in self.idle:
            self.idle.remove(worker)
        if not worker.ready and worker.actor is None:
            self.starting -= 1
        if worker.actor is not None or exitcode != 0:
            # An actor's process, or a task worker that died (one that exits idle, code 0,
            # leaves what it created to the driver): the actors it created die with it.
            self._actors.kill_owned(worker)
        else:
            self.owned.pop(worker.uid, None)
        if worker.actor is not None:
            self._actors.worker_exited(worker.actor, worker, exitcode)
            self.schedule()
            return
        inflight = list(worker.inflight)
        worker.inflight.clear()
        if inflight:
            running = inflight[0]
            if worker.blocked:
                self.pool.reclaim_cpus(running.request)
            self.pool.release(running.request, running.gpu_ids)
            for work in reversed(inflight[1:]):
                self.ready.setdefault(work.key, deque()).appendleft(work)
            self._task_worker_died(running, exitcode)
        self.schedule()

    # -- tasks ---------------------------------------------------------------------------------
    def submit_task(
        self, name: str, fn_id: str, stored: ser.Stored, deps: list[int], num_returns: Any,
        request: dict[str, float], max_retries: int, retry_exceptions: Any,
        env: dict[str, Any] | None,
    ) -> _Work:
        """A task submitted by the driver; its results' ids are ``return_ids`` (or ``gen_id``)
        of the work returned, each with one reference: its caller's."""
        work = self.new_work(name, stored, deps, num_returns, holder=None)
        work.fn_id = fn_id
        work.request = request
        work.key = (fn_id, tuple(sorted(request.items())))
        work.retries_left = max_retries
        work.retry_exceptions = retry_exceptions
        work.env = env
        self._enqueue_feasible(work, f"task {name}")
        return work

    def new_work(
        self, name: str, stored: ser.Stored, deps: list[int], num_returns: Any,
        holder: _Worker | None, work_id: int | None = None,
        return_ids: list[int] | None = None, gen_id: int | None = None,
    ) -> _Work:
        work = _Work()
        work.id = next(self.ids) if work_id is None else work_id
        work.name = name
        work.args = stored
        work.deps = deps
        store = self.store
        store.pin(stored)
        for dep in deps:
            store.incref(dep)
        if num_returns == "dynamic":  # one result: the references of what it yields
            work.backpressure = COLLECT
            num_returns = 1
        streaming = num_returns == "streaming"
        if return_ids is None:
            return_ids = [] if streaming else [next(self.ids) for _ in range(num_returns)]
            if streaming:
                gen_id = next(self.ids)
        work.return_ids = return_ids
        for oid in return_ids:
            store.new(oid, refs=1)
            self.producer[oid] = work
            if holder is not None:
                holder.held[oid] = holder.held.get(oid, 0) + 1
        work.gen_id = gen_id
        if gen_id is not None:
            self.streams.open(gen_id, work)
            self.producer[gen_id] = work
            if holder is not None:
                holder.held[gen_id] = holder.held.get(gen_id, 0) + 1
        return work

    def infeasible(self, request: dict[str, float], what: str) -> ResourceError | None:
        """The error of a request that can never fit (None when it can), logged as a warning
        the first time, as Ray logs its infeasible-task warning: the submission returns its
        references anyway, and ``get``/``wait``/``await`` on them raise this at once."""
        reason = self.pool.infeasible_reason(request)
        if reason is None:
            return None
        error = ResourceError(f"{what} can never run: {reason}")
        key = (what, tuple(sorted(request.items())))
        if key not in self._warned_infeasible:
            self._warned_infeasible.add(key)
            logger.warning("ember: %s; ember.get of its result raises ResourceError", error)
        return error

    def _enqueue_feasible(self, work: _Work, what: str) -> None:
        """Queue a new task, or fail it at once when its request can never fit."""
        error = self.infeasible(work.request, what) if work.request else None
        if error is None:
            self._enqueue(work)
        else:
            self.fail(work, error)

    def _enqueue(self, work: _Work) -> None:
        """Queue a task once its dependencies are ready."""
        self.tasks[work.id] = work
        pending = [d for d in work.deps if not self.store.is_ready(d)]
        if not pending:
            self._make_ready(work)
            return
        work.waiting = len(pending)

        def dep_ready(_oid: int) -> None:
            work.waiting -= 1
            if work.waiting == 0 and not work.cancelled:
                self._make_ready(work)
                self.schedule()

        for dep in pending:
            self.store.add_callback(dep, dep_ready)

    def _make_ready(self, work: _Work) -> None:
        for dep in work.deps:
            value = self.store.value(dep)
            if value is not None and value[1]:  # a dependency failed: so does this task
                self.tasks.pop(work.id, None)
                self.finish(work, None, value[0])
                return
        queue = self.ready.get(work.key)
        if queue is None:
            queue = self.ready[work.key] = deque()
        queue.append(work)
        self.schedule()

    def schedule(self) -> None:
        """Start what fits: the pending actors first (in order), then the ready tasks."""
        if self.closed:
            return
        pool = self.pool
        pending = self.pending_actors
        while pending:
            if pending[0].state == "dead":  # killed while it waited: drop it here, in O(1)
                pending.popleft()
            elif pool.fits(pending[0].request):
                self._actors.start(pending.popleft())
            else:
                break
        for key, queue in list(self.ready.items()):
            while queue:
                work = queue[0]
                if pool.fits(work.request):
                    worker = self.idle.pop() if self.idle else None
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
                del self.ready[key]

    def _grow(self, queue: deque[_Work], request: dict[str, float]) -> None:
        cpus = request.get("CPU", 0.0)
        room = int(self.pool.available.get("CPU", 0.0) // cpus) if cpus else len(queue)
        want = min(len(queue), room) - self.starting
        busy = len(self.workers) - len(self.idle) - self.starting
        for _ in range(max(0, min(want, _MAX_TASK_WORKERS - busy))):
            self.spawn(None)

    def _pipeline_target(self, work: _Work) -> _Worker | None:
        seconds = self.fn_seconds.get(work.fn_id or "")
        if seconds is None or seconds > _SHORT_TASK_S or work.gen_id is not None:
            return None
        best = None
        for worker in self.workers.values():
            if (worker.actor is None and worker.inflight and not worker.blocked
                    and len(worker.inflight) < _PIPELINE_DEPTH
                    and worker.inflight[0].key == work.key
                    and (best is None or len(worker.inflight) < len(best.inflight))):
                best = worker
        if best is not None:
            work.gpu_ids = best.inflight[0].gpu_ids
        return best

    def _dispatch(self, work: _Work, worker: _Worker) -> None:
        worker.inflight.append(work)
        fn_id = work.fn_id or ""
        code = None
        if fn_id not in worker.known_fns:
            worker.known_fns.add(fn_id)
            code = self.fn_code[fn_id]
        self.send(worker, ("task", work.id, fn_id, code, work.args, self.dep_values(work),
                           work.return_ids, work.gen_id, work.gpu_ids, work.name,
                           work.backpressure, work.env))
        if work.gen_id is not None:
            self.streams.attach(work.gen_id, worker)

    def dep_values(self, work: _Work) -> tuple[Any, ...]:
        if not work.deps:
            return ()
        return tuple(self.store.value(d) for d in work.deps)

    def _park(self, worker: _Worker) -> None:
        """An idle worker waits for the next task, unless enough others already do."""
        if len(self.idle) >= max(2, 2 * int(self.pool.totals.get("CPU", 1))):
            self.send(worker, ("exit",))  # extra workers from a burst of nested tasks
            return
        self.idle.append(worker)

    def _should_retry(self, work: _Work, error: ser.Stored) -> bool:
        if work.cancelled or not work.retries_left or work.actor is not None:
            return False
        exc = self.decode(error)
        if type(exc) is TaskCancelledError:
            # A cancel signal that landed on the next (pipelined) task: run that one again.
            return True
        retry = work.retry_exceptions
        if retry is True or (isinstance(retry, (list, tuple)) and isinstance(exc, tuple(retry))):
            work.retries_left -= 1
            return True
        return False

    def _task_worker_died(self, work: _Work, exitcode: int | None) -> None:
        produced = self.streams.produced(work.gen_id) > 0
        if work.cancelled:
            self.tasks.pop(work.id, None)
            self.fail(work, TaskCancelledError(f"{work.name} was cancelled (force=True)"))
        elif work.retries_left and not produced:
            if work.retries_left > 0:
                work.retries_left -= 1
            logger.info("worker running %s died (exit code %s); retrying", work.name, exitcode)
            self.ready.setdefault(work.key, deque()).appendleft(work)
        else:
            self.tasks.pop(work.id, None)
            self.fail(work, WorkerCrashedError(
                f"the worker process running {work.name} died (exit code {exitcode}) and no "
                "retries are left (raise max_retries to retry more)"))

    def finish(self, work: _Work, results: Any, error: ser.Stored | None) -> None:
        """Publish a finished task's results (or error) and drop what it pinned."""
        self.listener.on_finish(work, error)  # observe: counts and recent tasks
        if work.gen_id is not None:
            self.streams.finish(work.gen_id, error)
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
            self.producer.pop(oid, None)
        store = self.store
        store.unpin(work.args)
        for dep in work.deps:
            store.decref(dep)

    def fail(self, work: _Work, exc: BaseException) -> None:
        self.finish(work, None, ser.dumps(exc, None, 0))

    # -- cancellation -----------------------------------------------------------------------
    def cancel(self, oid: int, force: bool, recursive: bool) -> None:
        work = self.producer.get(oid)
        if work is None or work.cancelled:
            return
        if work.actor is not None:
            self._actors.cancel_call(work)
            return
        work.cancelled = True
        if recursive:
            for child in [w for w in self.tasks.values() if w.parent == work.id]:
                for child_oid in [*child.return_ids, child.gen_id]:
                    if child_oid is not None:
                        self.cancel(child_oid, force, recursive)
        queue = self.ready.get(work.key)
        if queue is not None and work in queue:
            queue.remove(work)
            self.tasks.pop(work.id, None)
            self.fail(work, TaskCancelledError(f"{work.name} was cancelled before it ran"))
            return
        worker = next((w for w in self.workers.values() if work in w.inflight), None)
        if worker is None:
            if work.waiting:  # still waiting for its arguments
                self.tasks.pop(work.id, None)
                self.fail(work, TaskCancelledError(f"{work.name} was cancelled before it ran"))
            return
        # Sent to a worker: its caller learns at once (the worker's own answer, when it comes,
        # is dropped), and the worker is stopped: interrupted (force=False) or killed.
        if force:
            self.resolve_cancelled(work, worker, TaskCancelledError(
                f"{work.name} was cancelled (force=True) while it ran"))
        else:
            self.resolve_cancelled(work, worker, interrupted(work.name))
        if worker.inflight[0] is not work:  # queued behind another task on that worker
            self.send(worker, ("cancel", work.id))
        elif force:
            self.instructions.append((KILL, worker))
        else:
            # The signal follows the message (it is sent once the outboxes are): a worker
            # that gets it between two tasks then finds out which task it meant.
            self.send(worker, ("cancel", work.id))
            self.instructions.append((INTERRUPT, worker))

    def resolve_cancelled(self, work: _Work, worker: _Worker, exc: BaseException) -> None:
        """Resolve what ``work`` returns to ``exc`` now, before ``worker`` has stopped it; what
        it pinned stays pinned until then."""
        stored = ser.dumps(exc, None, 0)
        if work.gen_id is not None:
            self.streams.cancel(work.gen_id, stored)
        else:
            for oid in work.return_ids:
                self._resolve(oid, stored, True)
        self.instructions.append((WAKE, worker))  # a caller reading its socket looks again


    # -- actors: events handed to their part (_actors.Actors) ------------------------------------
    def create_actor(
        self, actor_id: int, class_id: str, code: bytes, stored: ser.Stored, deps: list[int],
        request: dict[str, float], settings: dict[str, Any], meta: ActorMeta,
    ) -> int:
        """A new actor (or, with ``get_if_exists``, the live one of that name): its id."""
        return self._actors.create(actor_id, class_id, code, stored, deps, request,
                                   settings, meta)

    def submit_call(
        self, actor_id: int, method: str, stored: ser.Stored, deps: list[int], num_returns: Any,
    ) -> _Work:
        """A call of an actor's method by the driver (see ``submit_task``)."""
        return self._actors.submit_call(actor_id, method, stored, deps, num_returns)

    def add_handle(self, actor_id: int) -> None:
        self._actors.add_handle(actor_id)

    def pin_actor(self, actor_id: int) -> None:
        """A handle left this process (pickled): the actor lives until it is killed."""
        self._actors.pin(actor_id)

    def release_actor(self, actor_id: int) -> None:
        """A handle is gone: with none left, the actor stops after the calls submitted."""
        self._actors.release(actor_id)

    def lookup_actor(self, name: str, namespace: str | None) -> tuple[int, ActorMeta]:
        return self._actors.lookup(name, namespace)

    def named_actors(self) -> list[tuple[str, str]]:
        """``(namespace, name)`` of the named actors not dead for good (pending, alive or
        restarting), as Ray lists them."""
        return sorted(self.named)

    def kill_actor(self, actor_id: int, no_restart: bool) -> None:
        self._actors.kill(actor_id, no_restart)

    def own_actor(self, worker: _Worker, actor_id: int) -> None:
        """``worker``'s task or actor created this actor (not detached): it fate-shares with
        that process."""
        self._actors.own(worker, actor_id)

