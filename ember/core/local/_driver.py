"""The local backend's driver: scheduler, object table owner and worker pool, in one process.

Threads: the caller's threads submit work and send it straight to a worker when one is free;
one reactor thread reads every worker socket, resolves results and dispatches what they unblock.
Both run under one lock that is held only for bookkeeping (sockets are non-blocking).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import pickle
import selectors
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ember.core import _shm
from ember.core import _serialization as ser
from ember.core._config import LocalConfig, resolve_local_config
from ember.core._context import RuntimeContext
from ember.core._options import resource_request
from ember.core._refs import ObjectRef, ObjectRefGenerator
from ember.core._remote import ActorClass, ActorHandle, ActorMeta, RemoteFunction
from ember.core.local._forkserver import ForkServer
from ember.core.local._protocol import DEFAULT_BACKPRESSURE
from ember.core.local._resources import ResourcePool
from ember.core.local._store import ObjectStore
from ember.core.local._transport import DriverChannel
from ember.core.local._worker import (
    WorkerConfig,
    _RemoteFailure,
    _actor_settings,
    serialize_args,
)
from ember.errors import (
    ActorDiedError,
    GetTimeoutError,
    ResourceError,
    RuntimeNotInitializedError,
    TaskCancelledError,
    WorkerCrashedError,
)

logger = logging.getLogger("ember")

_PIPELINE_DEPTH = 16  # tasks queued on one busy worker, for functions known to be short
_SHORT_TASK_S = 0.002
_MAX_TASK_WORKERS = 256
_EMPTY_ARGS = ser.dumps(((), {}), None, 0)


class _Work:
    """A task, or a call of an actor method."""

    __slots__ = (
        "actor", "args", "backpressure", "cancelled", "deps", "fn_id", "gen_id", "gpu_ids",
        "id", "key", "method", "name", "parent", "request", "retries_left", "retry_exceptions",
        "return_ids", "waiting",
    )

    def __init__(self) -> None:
        self.id = 0
        self.name = ""
        self.args: ser.Stored = _EMPTY_ARGS
        self.deps: list[int] = []
        self.fn_id: str | None = None
        self.key: tuple[Any, ...] = ()
        self.request: dict[str, float] = {}
        self.retries_left = 0
        self.retry_exceptions: Any = False
        self.return_ids: list[int] = []
        self.gen_id: int | None = None
        self.gpu_ids: tuple[str, ...] = ()
        self.cancelled = False
        self.waiting = 0
        self.actor: _Actor | None = None
        self.method: str | None = None
        self.parent: int | None = None
        self.backpressure = DEFAULT_BACKPRESSURE


class _Worker:
    __slots__ = (
        "actor", "blocked", "chan", "eof", "exitcode", "held", "inflight", "known_fns", "outbox",
        "pid", "ready", "uid",
    )

    def __init__(self, uid: int, chan: DriverChannel) -> None:
        self.uid = uid
        self.chan = chan
        self.pid: int | None = None
        self.eof = False
        self.exitcode: int | None = None
        self.ready = False
        self.blocked = False
        self.inflight: deque[_Work] = deque()
        self.known_fns: set[str] = set()
        self.held: dict[int, int] = {}
        self.outbox: list[Any] = []
        self.actor: _Actor | None = None


class _Actor:
    __slots__ = (
        "args", "class_code", "class_id", "death", "deps", "gpu_ids", "handles", "id",
        "inflight", "max_concurrency", "max_task_retries", "meta", "name", "namespace",
        "no_restart", "pinned", "queue", "request", "restarts", "restarts_left", "state",
        "worker",
    )

    def __init__(self) -> None:
        self.queue: deque[_Work] = deque()
        self.inflight: dict[int, _Work] = {}
        self.worker: _Worker | None = None
        self.state = "pending"  # pending -> alive -> (restarting -> alive)* -> dead
        self.handles = 0
        self.pinned = False
        self.no_restart = False
        self.death = ""
        self.restarts = 0
        self.gpu_ids: tuple[str, ...] = ()


class _Generator:
    __slots__ = ("consumed", "finished", "items", "produced", "refs", "waiters", "work",
                 "worker")

    def __init__(self, work: _Work) -> None:
        self.work = work
        self.worker: _Worker | None = None
        self.items: dict[int, int] = {}
        self.produced = 0
        self.consumed = 0
        self.finished = False
        self.refs = 0
        self.waiters: list[tuple[int, Callable[[int | None], None]]] = []


class _Waiter:
    """Blocks a caller until ``count`` objects are ready: one lock, released by the reactor."""

    __slots__ = ("count", "lock")

    def __init__(self, count: int) -> None:
        self.count = count
        self.lock = threading.Lock()
        self.lock.acquire()

    def __call__(self, _oid: int) -> None:
        self.count -= 1
        if self.count == 0:
            self.lock.release()

    def wait(self, timeout: float | None) -> bool:
        return self.lock.acquire(timeout=-1 if timeout is None else timeout)


class LocalBackend:
    """The embedded runtime: ``ember.init()`` starts one in the calling process."""

    name = "local"

    @classmethod
    def start(
        cls, *, num_cpus: float | None = None, num_gpus: float | None = None,
        resources: dict[str, float] | None = None, object_store_memory: int | None = None,
        namespace: str | None = None,
    ) -> LocalBackend:
        config = resolve_local_config(
            num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
            object_store_memory=object_store_memory, namespace=namespace,
        )
        return cls(config)

    def __init__(self, config: LocalConfig) -> None:
        self._cfg = config
        self._job_id = os.urandom(4).hex()
        self._names = _shm.SegmentNames(self._job_id, config.spill_dir)
        self._threshold = config.inline_threshold
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._store = ObjectStore(self._names, config.object_store_memory)
        totals = {"CPU": config.num_cpus, **config.resources}
        self._pool = ResourcePool(totals, config.gpu_ids)
        self._tasks: dict[int, _Work] = {}
        self._producer: dict[int, _Work] = {}
        self._ready: dict[tuple[Any, ...], deque[_Work]] = {}
        self._gens: dict[int, _Generator] = {}
        self._workers: dict[int, _Worker] = {}
        self._idle: list[_Worker] = []
        self._starting = 0
        self._actors: dict[int, _Actor] = {}
        self._pending_actors: deque[_Actor] = deque()
        self._named: dict[tuple[str, str], int] = {}
        self._fn_code: dict[str, bytes] = {}
        self._fn_seconds: dict[str, float] = {}
        self._decrefs: deque[int] = deque()
        self._deferred: list[Callable[[], None]] = []
        self._dirty: set[_Worker] = set()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._uids = itertools.count(1)
        self._closed = False
        self._selector = selectors.DefaultSelector()
        self._selector_changes: deque[tuple[str, _Worker]] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._forkserver = ForkServer()
        self._pids: dict[int, _Worker] = {}
        self._selector.register(self._forkserver.sock, selectors.EVENT_READ, "forkserver")
        self._reactor = threading.Thread(target=self._reactor_loop, name="ember-reactor",
                                         daemon=True)
        self._reactor.start()
        with self._lock:
            for _ in range(min(int(config.num_cpus), 8)):
                self._spawn(None)

    # -- locking helpers ----------------------------------------------------------------------
    def _leave(self) -> list[Callable[[], None]]:
        """End of a locked section: apply queued decrefs, send queued messages."""
        decrefs = self._decrefs
        while decrefs:
            try:
                oid = decrefs.popleft()
            except IndexError:
                break
            self._release(oid)
        for worker in self._dirty:
            if worker.outbox:
                messages, worker.outbox = worker.outbox, []
                if not worker.chan.send_many(messages):
                    self._selector_changes.append(("write", worker))
                    self._wake()
        self._dirty.clear()
        deferred, self._deferred = self._deferred, []
        return deferred

    def _unlock(self) -> None:
        deferred = self._leave()
        self._lock.release()
        for callback in deferred:
            callback()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeNotInitializedError(
                "this ember runtime was shut down; call ember.init() to start a new one"
            )

    def _send(self, worker: _Worker, message: Any) -> None:
        worker.outbox.append(message)
        self._dirty.add(worker)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    # -- processes --------------------------------------------------------------------------
    def _spawn(self, actor: _Actor | None) -> _Worker:
        uid = next(self._uids)
        parent, child = socket.socketpair()
        config = WorkerConfig(uid, self._names, self._threshold, self._cfg.namespace,
                              self._job_id, dict(self._pool.totals))
        self._forkserver.spawn(uid, config, child)
        child.close()
        worker = _Worker(uid, DriverChannel(parent))
        worker.actor = actor
        self._workers[uid] = worker
        if actor is None:
            self._starting += 1
        self._selector_changes.append(("add", worker))
        self._wake()
        return worker

    def _reactor_loop(self) -> None:
        selector = self._selector
        while True:
            timeout = None
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            events = selector.select(timeout)
            if self._closed:
                return
            self._lock.acquire()
            try:
                for key, mask in events:
                    worker = key.data
                    if worker == "forkserver":
                        self._on_forkserver(self._forkserver.read())
                        continue
                    if worker is None:
                        try:
                            while os.read(self._wake_r, 4096):
                                pass
                        except BlockingIOError:
                            pass
                        continue
                    if mask & selectors.EVENT_WRITE and worker.chan.flush():
                        self._watch(worker, selectors.EVENT_READ)
                    if mask & selectors.EVENT_READ:
                        frames = worker.chan.read()
                        if frames is None:
                            self._on_worker_eof(worker)
                            continue
                        for frame in frames:
                            self._on_message(worker, pickle.loads(frame))
                            if worker.uid not in self._workers:
                                break
                self._apply_selector_changes()
                self._run_timers()
            except Exception:  # a bug here must not kill the reactor silently
                logger.exception("ember reactor: internal error (please report it)")
            finally:
                self._unlock()

    def _on_forkserver(self, notices: list[tuple[Any, ...]] | None) -> None:
        if notices is None:
            if not self._closed:
                logger.error("ember: the fork server exited; new workers cannot start")
                self._selector.unregister(self._forkserver.sock)
            return
        for kind, key, value in notices:
            if kind == "spawned":
                worker = self._workers.get(key)
                if worker is not None:
                    worker.pid = value
                    self._pids[value] = worker
            elif kind == "exit":
                worker = self._pids.pop(key, None)
                if worker is not None:
                    worker.exitcode = value
                    if worker.eof:
                        self._on_worker_exit(worker)

    def _on_worker_eof(self, worker: _Worker) -> None:
        # The socket closed; the fork server's exit notice (with the exit code) follows.
        worker.eof = True
        try:
            self._selector.unregister(worker.chan.sock)
        except (KeyError, ValueError):
            pass
        if worker.exitcode is not None or worker.pid is None:
            self._on_worker_exit(worker)

    def _watch(self, worker: _Worker, events: int) -> None:
        try:
            self._selector.modify(worker.chan.sock, events, worker)
        except (KeyError, ValueError, OSError):
            pass

    def _apply_selector_changes(self) -> None:
        changes = self._selector_changes
        while changes:
            action, worker = changes.popleft()
            if action == "add":
                if worker.uid in self._workers:
                    self._selector.register(worker.chan.sock, selectors.EVENT_READ, worker)
            elif action == "write" and worker.uid in self._workers:
                self._watch(worker, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def _add_timer(self, delay: float, callback: Callable[[], None]) -> list[Any]:
        entry = [time.monotonic() + delay, next(self._timer_seq), callback]
        heapq.heappush(self._timers, entry)  # type: ignore[arg-type]
        self._wake()
        return entry

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, callback = heapq.heappop(self._timers)
            callback()

    # -- messages from workers -------------------------------------------------------------
    def _on_message(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "done":
            self._on_done(worker, message[1], message[2], message[3], message[4])
        elif kind == "refs":
            held = worker.held
            for oid, delta in message[1]:
                held[oid] = held.get(oid, 0) + delta
                if held[oid] <= 0:
                    del held[oid]
                if delta > 0:
                    self._addref(oid)
                else:
                    self._release(oid)
        elif kind == "item":
            self._on_item(message[1], message[2], message[3], message[4])
        elif kind == "request":
            self._on_request(worker, message[1], message[2], message[3])
        elif kind == "submit":
            self._submit_from_worker(worker, message[1])
        elif kind == "call":
            self._call_from_worker(worker, message[1])
        elif kind == "put":
            self._store.new(message[1], refs=1)
            worker.held[message[1]] = worker.held.get(message[1], 0) + 1
            self._resolve(message[1], message[2], False)
        elif kind == "requeue":
            self._requeue(worker, message[1])
        elif kind == "ready":
            worker.ready = True
            if worker.actor is None:
                self._starting -= 1
                self._idle.append(worker)
                self._schedule()
        elif kind == "actor_ready":
            actor = self._actors.get(message[1])
            if actor is not None and actor.state != "dead":
                actor.state = "alive"
        elif kind == "actor_failed":
            actor = self._actors.get(message[1])
            if actor is not None:
                self._actor_dead(actor, "its constructor raised", error=message[2])

    def _on_done(
        self, worker: _Worker, work_id: int, results: Any, error: Any, seconds: float
    ) -> None:
        actor = worker.actor
        if actor is not None:
            work = actor.inflight.pop(work_id, None)
            if work is None:
                return
        else:
            if not worker.inflight or worker.inflight[0].id != work_id:
                work = next((w for w in worker.inflight if w.id == work_id), None)
                if work is None:
                    return
                worker.inflight.remove(work)
            else:
                work = worker.inflight.popleft()
            assert work.fn_id is not None
            previous = self._fn_seconds.get(work.fn_id)
            self._fn_seconds[work.fn_id] = seconds if previous is None else (
                0.8 * previous + 0.2 * seconds)
            if not worker.inflight:
                if worker.blocked:  # pragma: no cover - a finished task is no longer blocked
                    worker.blocked = False
                    self._pool.reclaim_cpus(work.request)
                self._pool.release(work.request, work.gpu_ids)
                self._idle.append(worker)
        self._tasks.pop(work_id, None)
        if error is not None and self._should_retry(work, error):
            self._enqueue(work)
        else:
            self._finish(work, results, error)
        self._schedule()

    def _should_retry(self, work: _Work, error: ser.Stored) -> bool:
        if work.cancelled or not work.retries_left or work.actor is not None:
            return False
        exc = ser.loads(error, self._names)
        if isinstance(exc, TaskCancelledError):
            # A cancel signal that landed on the wrong (pipelined) task: run it again.
            return True
        retry = work.retry_exceptions
        if retry is True or (isinstance(retry, (list, tuple)) and isinstance(exc, tuple(retry))):
            work.retries_left -= 1
            return True
        return False

    def _finish(self, work: _Work, results: Any, error: Any) -> None:
        """Publish a finished task's results (or error) and drop what it pinned."""
        if work.gen_id is not None:
            gen = self._gens.get(work.gen_id)
            if gen is not None:
                if error is not None:
                    self._on_item(work.gen_id, -1, error, True)
                gen.finished = True
                self._wake_generator(gen)
        elif error is not None:
            for oid in work.return_ids:
                self._resolve(oid, error, True)
        else:
            for oid, stored in zip(work.return_ids, results):
                self._resolve(oid, stored, False)
        for oid in work.return_ids:
            self._producer.pop(oid, None)
        self._unpin_work(work)

    def _resolve(self, oid: int, stored: ser.Stored, is_error: bool) -> None:
        for callback in self._store.resolve(oid, stored, is_error):
            callback(oid)

    def _fail(self, work: _Work, exc: BaseException) -> None:
        self._finish(work, None, ser.dumps(exc, None, 0))

    def _unpin_work(self, work: _Work) -> None:
        store = self._store
        store.unpin(work.args)
        for dep in work.deps:
            store.decref(dep)

    # -- references -----------------------------------------------------------------------
    def make_ref(self, object_id: int) -> ObjectRef:
        return ObjectRef(object_id, self)

    def add_local_ref(self, object_id: int) -> None:
        with self._lock:
            self._addref(object_id)

    def _addref(self, oid: int) -> None:
        if not self._store.incref(oid):
            gen = self._gens.get(oid)
            if gen is not None:
                gen.refs += 1

    def remove_local_ref(self, object_id: int) -> None:
        if self._closed:
            return
        self._decrefs.append(object_id)
        if self._lock.acquire(blocking=False):
            self._unlock()

    def _release(self, oid: int) -> None:
        if oid in self._store.objects:
            self._store.decref(oid)
            return
        gen = self._gens.get(oid)
        if gen is not None:
            gen.refs -= 1
            if gen.refs <= 0:
                self._close_generator(oid, gen)

    add_generator_ref = add_local_ref
    remove_generator_ref = remove_local_ref

    def add_actor_ref(self, actor_id: int) -> None:
        with self._lock:
            actor = self._actors.get(actor_id)
            if actor is not None:
                actor.handles += 1

    def remove_actor_ref(self, actor_id: int) -> None:
        if self._closed:
            return
        with self._lock:
            actor = self._actors.get(actor_id)
            if actor is None:
                return
            actor.handles -= 1
            if actor.handles <= 0 and not actor.pinned and actor.state != "dead":
                # Out of scope: stop after the calls already submitted (Ray's semantics).
                exit_call = _Work()
                exit_call.id = -1
                exit_call.deps = []
                actor.queue.append(exit_call)
                self._pump_actor(actor)
            self._unlock_keep()

    def _unlock_keep(self) -> None:
        # Flush inside a `with self._lock` block (the with statement releases the lock).
        for callback in self._leave():
            self._deferred.append(callback)

    def on_actor_handle_pickled(self, actor_id: int) -> None:
        with self._lock:
            actor = self._actors.get(actor_id)
            if actor is not None:
                actor.pinned = True

    def on_ready(self, ref: ObjectRef, callback: Callable[[Any], None]) -> None:
        self._check_open()
        self._lock.acquire()
        try:
            def later(_oid: int) -> None:
                self._deferred.append(lambda: callback(ref))

            if self._store.add_callback(ref._id, later):
                return
        finally:
            self._unlock()
        callback(ref)

    # -- submission --------------------------------------------------------------------------
    def _check_feasible(self, request: dict[str, float], what: str) -> None:
        reason = self._pool.infeasible_reason(request)
        if reason is not None:
            raise ResourceError(
                f"{what} can never run: {reason}. Ask for less, or start ember with more "
                "(ember.init(num_cpus=..., num_gpus=..., resources={...}))"
            )

    def _serialize(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
                   ) -> tuple[ser.Stored, list[int]]:
        if not args and not kwargs:
            return _EMPTY_ARGS, []
        return serialize_args(name, args, kwargs, self._names, self._threshold)

    def submit_task(
        self, fn: RemoteFunction, args: tuple[Any, ...], kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> Any:
        self._check_open()
        request = resource_request(options)
        self._check_feasible(request, f"task {fn._name}")
        stored, deps = self._serialize(fn._name, args, kwargs)
        fn_id = fn.function_id
        if fn_id not in self._fn_code:
            self._fn_code[fn_id] = fn.pickled()
        num_returns = options["num_returns"]
        self._lock.acquire()
        try:
            work = self._new_work(fn._name, stored, deps, num_returns, holder=None)
            work.fn_id = fn_id
            work.request = request
            work.key = (fn_id, tuple(sorted(request.items())))
            work.retries_left = options["max_retries"]
            work.retry_exceptions = options["retry_exceptions"]
            self._enqueue(work)
            return self._returns(work, num_returns)
        finally:
            self._unlock()

    def _new_work(
        self, name: str, stored: ser.Stored, deps: list[int], num_returns: Any,
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
        streaming = num_returns in ("streaming", "dynamic")
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

    def _returns(self, work: _Work, num_returns: Any) -> Any:
        if work.gen_id is not None:
            gen = ObjectRefGenerator.__new__(ObjectRefGenerator)
            gen._id, gen._rt, gen._index, gen._done = work.gen_id, self, 0, False
            return gen
        refs = [ObjectRef(oid, self, add_ref=False) for oid in work.return_ids]
        if num_returns == 1:
            return refs[0]
        return refs or None

    def _enqueue(self, work: _Work) -> None:
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

    def _make_ready(self, work: _Work) -> None:
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

    def _schedule(self) -> None:
        if self._closed:
            return
        pool = self._pool
        while self._pending_actors and pool.fits(self._pending_actors[0].request):
            self._start_actor(self._pending_actors.popleft())
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

    def _grow(self, queue: deque[_Work], request: dict[str, float]) -> None:
        cpus = request.get("CPU", 0.0)
        room = int(self._pool.available.get("CPU", 0.0) // cpus) if cpus else len(queue)
        want = min(len(queue), room) - self._starting
        busy = len(self._workers) - len(self._idle) - self._starting
        for _ in range(max(0, min(want, _MAX_TASK_WORKERS - busy))):
            self._spawn(None)

    def _pipeline_target(self, work: _Work) -> _Worker | None:
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

    def _dispatch(self, work: _Work, worker: _Worker) -> None:
        worker.inflight.append(work)
        fn_id = work.fn_id
        assert fn_id is not None
        code = None
        if fn_id not in worker.known_fns:
            worker.known_fns.add(fn_id)
            code = self._fn_code[fn_id]
        self._send(worker, ("task", work.id, fn_id, code, work.args, self._dep_values(work),
                            work.return_ids, work.gen_id, work.gpu_ids, work.name,
                            work.backpressure))
        if work.gen_id is not None:
            gen = self._gens.get(work.gen_id)
            if gen is not None:
                gen.worker = worker

    def _dep_values(self, work: _Work) -> tuple[Any, ...]:
        if not work.deps:
            return ()
        return tuple(self._store.value(d) for d in work.deps)

    def _requeue(self, worker: _Worker, work_ids: list[int]) -> None:
        for work_id in reversed(work_ids):
            work = next((w for w in worker.inflight if w.id == work_id), None)
            if work is None:
                continue
            worker.inflight.remove(work)
            work.gpu_ids = ()
            queue = self._ready.setdefault(work.key, deque())
            queue.appendleft(work)
        self._schedule()

    # -- actors ---------------------------------------------------------------------------
    def create_actor(
        self, cls: ActorClass, args: tuple[Any, ...], kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> ActorHandle:
        self._check_open()
        meta = cls.meta
        request = resource_request(options)
        self._check_feasible(request, f"actor {meta.class_name}")
        stored, deps = self._serialize(meta.class_name, args, kwargs)
        with self._lock:
            actor_id = self._create_actor(next(self._ids), cls.class_id, cls.pickled(), stored,
                                          deps, request, _actor_settings(options), meta)
            handle = ActorHandle.__new__(ActorHandle)
            handle._actor_id, handle._meta, handle._rt = actor_id, meta, self
            self._actors[actor_id].handles += 1
            self._unlock_keep()
        self._run_deferred()
        return handle

    def _run_deferred(self) -> None:
        if self._deferred and self._lock.acquire(blocking=False):
            self._unlock()

    def _create_actor(
        self, actor_id: int, class_id: str, code: bytes, stored: ser.Stored, deps: list[int],
        request: dict[str, float], settings: dict[str, Any], meta: ActorMeta,
    ) -> int:
        name = settings.get("name")
        namespace = settings.get("namespace") or self._cfg.namespace
        if name:
            existing = self._named.get((namespace, name))
            if existing is not None and self._actors[existing].state != "dead":
                if settings.get("get_if_exists"):
                    return existing
                raise ValueError(
                    f"an actor named {name!r} already exists in namespace {namespace!r}; "
                    "pick another name, kill it first, or pass get_if_exists=True"
                )
        actor = _Actor()
        actor.id = actor_id
        actor.class_id = class_id
        actor.class_code = code
        actor.args = stored
        actor.deps = deps
        actor.request = request
        actor.meta = meta
        actor.name = name
        actor.namespace = namespace
        actor.max_concurrency = settings.get("max_concurrency")
        actor.max_task_retries = settings.get("max_task_retries") or 0
        actor.restarts_left = settings.get("max_restarts") or 0
        actor.pinned = bool(name) or settings.get("lifetime") == "detached"
        self._store.pin(stored)
        for dep in deps:
            self._store.incref(dep)
        self._actors[actor_id] = actor
        if name:
            self._named[(namespace, name)] = actor_id
        pending = [d for d in deps if not self._store.is_ready(d)]
        if pending:
            counter = [len(pending)]

            def dep_ready(_oid: int) -> None:
                counter[0] -= 1
                if counter[0] == 0:
                    self._pending_actors.append(actor)
                    self._schedule()

            for dep in pending:
                self._store.add_callback(dep, dep_ready)
        else:
            self._pending_actors.append(actor)
            self._schedule()
        return actor_id

    def _start_actor(self, actor: _Actor) -> None:
        if actor.state == "dead":
            return
        for dep in actor.deps:
            value = self._store.value(dep)
            if value is not None and value[1]:
                self._actor_dead(actor, "an argument of its constructor failed", error=value[0])
                return
        actor.gpu_ids = self._pool.acquire(actor.request)
        self._launch_actor(actor, restarted=False)

    def _launch_actor(self, actor: _Actor, restarted: bool) -> None:
        worker = self._spawn(actor)
        actor.worker = worker
        actor.state = "starting"
        self._send(worker, ("actor", actor.id, actor.class_id, actor.class_code, actor.args,
                            tuple(self._store.value(d) for d in actor.deps),
                            actor.max_concurrency, actor.gpu_ids, actor.meta.class_name,
                            actor.namespace, restarted, actor.meta.is_async))
        self._pump_actor(actor)

    def submit_actor_task(
        self, handle: ActorHandle, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
        num_returns: Any,
    ) -> Any:
        self._check_open()
        stored, deps = self._serialize(method, args, kwargs)
        self._lock.acquire()
        try:
            work = self._new_work(method, stored, deps, num_returns, holder=None)
            self._queue_call(handle._actor_id, work, method)
            return self._returns(work, num_returns)
        finally:
            self._unlock()

    def _queue_call(self, actor_id: int, work: _Work, method: str) -> None:
        actor = self._actors.get(actor_id)
        work.method = method
        work.fn_id = None
        work.retries_left = 0
        work.retry_exceptions = False
        if actor is None or actor.state == "dead":
            reason = actor.death if actor is not None else "it is not known to this runtime"
            self._fail(work, ActorDiedError(f"cannot call {method}(): the actor is dead "
                                            f"({reason})"))
            return
        work.name = f"{actor.meta.class_name}.{method}"
        work.actor = actor
        actor.queue.append(work)
        self._pump_actor(actor)

    def _pump_actor(self, actor: _Actor) -> None:
        worker = actor.worker
        if worker is None or actor.state not in ("starting", "alive"):
            return
        queue = actor.queue
        while queue:
            work = queue[0]
            if work.id == -1:  # the end of the actor's scope
                queue.popleft()
                actor.state = "exiting"
                self._send(worker, ("exit",))
                return
            pending = [d for d in work.deps if not self._store.is_ready(d)]
            if pending:
                if not work.waiting:
                    work.waiting = len(pending)

                    def dep_ready(_oid: int, work: _Work = work) -> None:
                        work.waiting -= 1
                        if work.waiting == 0:
                            self._pump_actor(actor)

                    for dep in pending:
                        self._store.add_callback(dep, dep_ready)
                return
            queue.popleft()
            failed = next((v for v in (self._store.value(d) for d in work.deps)
                           if v is not None and v[1]), None)
            if failed is not None:
                self._finish(work, None, failed[0])
                continue
            actor.inflight[work.id] = work
            self._send(worker, ("call", work.id, work.method, work.args, self._dep_values(work),
                                work.return_ids, work.gen_id, work.backpressure))
            if work.gen_id is not None:
                gen = self._gens.get(work.gen_id)
                if gen is not None:
                    gen.worker = worker

    def _actor_dead(self, actor: _Actor, reason: str, error: Any = None) -> None:
        if actor.state == "dead":
            return
        actor.state = "dead"
        cause = ""
        if error is not None:
            try:
                cause = f": {ser.loads(error, self._names)}"
            except Exception:
                cause = ""
        actor.death = f"{reason}{cause}"
        died = ActorDiedError(f"actor {actor.meta.class_name} died: {actor.death}")
        for work in list(actor.inflight.values()) + [w for w in actor.queue if w.id != -1]:
            self._fail(work, died)
        actor.inflight.clear()
        actor.queue.clear()
        self._pool.release(actor.request, actor.gpu_ids)
        actor.gpu_ids = ()
        if actor.name and self._named.get((actor.namespace, actor.name)) == actor.id:
            del self._named[(actor.namespace, actor.name)]
        self._store.unpin(actor.args)
        for dep in actor.deps:
            self._store.decref(dep)
        worker = actor.worker
        if worker is not None and worker.uid in self._workers:
            _kill(worker)
        self._schedule()

    def _on_actor_worker_exit(self, actor: _Actor, worker: _Worker, exitcode: Any) -> None:
        if actor.worker is not worker or actor.state == "dead":
            return
        actor.worker = None
        if actor.state == "exiting":
            self._actor_dead(actor, "it went out of scope")
            return
        how = f"its process exited (exit code {exitcode})"
        if actor.no_restart or actor.restarts_left == 0:
            self._actor_dead(actor, "it was killed" if actor.no_restart else how)
            return
        if actor.restarts_left > 0:
            actor.restarts_left -= 1
        actor.restarts += 1
        retry = [w for w in actor.inflight.values()]
        actor.inflight.clear()
        died = ActorDiedError(
            f"actor {actor.meta.class_name} died while running this call ({how}); it is "
            "restarting. Set max_task_retries to retry such calls."
        )
        if actor.max_task_retries:
            actor.queue.extendleft(reversed(retry))
        else:
            for work in retry:
                self._fail(work, died)
        logger.info("restarting actor %s (%s)", actor.meta.class_name, how)
        self._launch_actor(actor, restarted=True)

    def kill(self, handle: ActorHandle, no_restart: bool) -> None:
        self._check_open()
        with self._lock:
            self._kill_actor(handle._actor_id, no_restart)
            self._unlock_keep()
        self._run_deferred()

    def _kill_actor(self, actor_id: int, no_restart: bool) -> None:
        actor = self._actors.get(actor_id)
        if actor is None or actor.state == "dead":
            return
        actor.no_restart = no_restart
        worker = actor.worker
        if worker is not None:
            _kill(worker)
        elif no_restart:
            self._actor_dead(actor, "it was killed")

    def get_actor(self, name: str, namespace: str | None) -> ActorHandle:
        self._check_open()
        with self._lock:
            actor_id, meta = self._lookup_actor(name, namespace)
            self._actors[actor_id].handles += 1
        handle = ActorHandle.__new__(ActorHandle)
        handle._actor_id, handle._meta, handle._rt = actor_id, meta, self
        return handle

    def _lookup_actor(self, name: str, namespace: str | None) -> tuple[int, ActorMeta]:
        ns = namespace or self._cfg.namespace
        actor_id = self._named.get((ns, name))
        if actor_id is None or self._actors[actor_id].state == "dead":
            known = sorted(n for (space, n) in self._named if space == ns)
            raise ValueError(
                f"no live actor named {name!r} in namespace {ns!r} (named actors there: "
                f"{known or 'none'})"
            )
        return actor_id, self._actors[actor_id].meta

    # -- worker requests ---------------------------------------------------------------------
    def _reply(self, worker: _Worker, request_id: int, payload: Any) -> None:
        if worker.uid in self._workers:
            self._send(worker, ("reply", request_id, payload))

    def _block(self, worker: _Worker) -> None:
        if worker.actor is None and worker.inflight and not worker.blocked:
            worker.blocked = True
            self._pool.lend_cpus(worker.inflight[0].request)
            self._schedule()

    def _unblock(self, worker: _Worker) -> None:
        if worker.blocked:
            worker.blocked = False
            if worker.inflight:
                self._pool.reclaim_cpus(worker.inflight[0].request)

    def _on_request(self, worker: _Worker, rid: int, kind: str, payload: Any) -> None:
        try:
            if kind == "get":
                self._request_get(worker, rid, *payload)
            elif kind == "wait":
                self._request_wait(worker, rid, *payload)
            elif kind == "generator_next":
                self._request_generator_next(worker, rid, *payload)
            elif kind == "create_actor":
                (actor_id, class_id, code, stored, deps, request, settings, meta) = payload
                created = self._create_actor(actor_id, class_id, code, stored, deps, request,
                                             settings, meta)
                self._actors[created].pinned = True
                self._reply(worker, rid, created if created != actor_id else None)
            elif kind == "kill":
                self._kill_actor(*payload)
                self._reply(worker, rid, None)
            elif kind == "cancel":
                self._cancel(*payload)
                self._reply(worker, rid, None)
            elif kind == "get_actor":
                actor_id, meta = self._lookup_actor(*payload)
                self._actors[actor_id].pinned = True
                self._reply(worker, rid, (actor_id, meta))
            elif kind == "resources":
                which = self._pool.totals if payload == "total" else self._pool.snapshot()
                self._reply(worker, rid, dict(which))
            else:  # pragma: no cover - a protocol bug
                raise ValueError(f"unknown request {kind!r}")
        except Exception as exc:
            self._reply(worker, rid, _RemoteFailure(exc))

    def _request_get(
        self, worker: _Worker, rid: int, ids: list[int], timeout: float | None
    ) -> None:
        store = self._store
        pending = [i for i in ids if not store.is_ready(i)]

        def answer() -> None:
            self._unblock(worker)
            self._reply(worker, rid, [store.value(i) or _lost(i) for i in ids])

        if not pending:
            answer()
            return
        self._block(worker)
        state = {"left": len(pending), "timer": None}

        def arrived(_oid: int) -> None:
            state["left"] -= 1  # type: ignore[operator]
            if state["left"] == 0:
                if state["timer"] is not None:
                    state["timer"][2] = lambda: None  # type: ignore[index]
                answer()

        for oid in pending:
            store.add_callback(oid, arrived)
        if timeout is not None:
            def expire() -> None:
                store.remove_callback(pending, arrived)
                self._unblock(worker)
                self._reply(worker, rid, _RemoteFailure(GetTimeoutError(
                    f"get timed out after {timeout} s ({state['left']} of {len(ids)} objects "
                    "not ready)")))

            state["timer"] = self._add_timer(timeout, expire)

    def _request_wait(
        self, worker: _Worker, rid: int, ids: list[int], num_returns: int,
        timeout: float | None,
    ) -> None:
        store = self._store
        done = {"sent": False}

        def answer() -> None:
            if done["sent"]:
                return
            done["sent"] = True
            store.remove_callback(ids, arrived)
            self._unblock(worker)
            self._reply(worker, rid, [i for i in ids if store.is_ready(i)][:num_returns])

        def arrived(_oid: int) -> None:
            if sum(1 for i in ids if store.is_ready(i)) >= num_returns:
                answer()

        if sum(1 for i in ids if store.is_ready(i)) >= num_returns or timeout == 0:
            answer()
            return
        self._block(worker)
        for oid in ids:
            store.add_callback(oid, arrived)
        if timeout is not None:
            self._add_timer(timeout, answer)

    def _request_generator_next(
        self, worker: _Worker, rid: int, gen_id: int, index: int, timeout: float | None
    ) -> None:
        def deliver(oid: int | None) -> None:
            self._unblock(worker)
            if oid is not None:
                worker.held[oid] = worker.held.get(oid, 0) + 1
            self._reply(worker, rid, oid)

        if not self._generator_take(gen_id, index, deliver):
            self._block(worker)

    def _submit_from_worker(self, worker: _Worker, spec: tuple[Any, ...]) -> None:
        (task_id, fn_id, code, stored, deps, return_ids, gen_id, request, max_retries,
         retry_exceptions, name, parent) = spec
        if code is not None:
            self._fn_code[fn_id] = code
        work = self._new_work(name, stored, deps, None, worker, work_id=task_id,
                              return_ids=return_ids, gen_id=gen_id)
        work.fn_id = fn_id
        work.request = request
        work.key = (fn_id, tuple(sorted(request.items())))
        work.retries_left = max_retries
        work.retry_exceptions = retry_exceptions
        work.parent = parent
        self._enqueue(work)

    def _call_from_worker(self, worker: _Worker, spec: tuple[Any, ...]) -> None:
        actor_id, call_id, method, stored, deps, return_ids, gen_id = spec
        work = self._new_work(method, stored, deps, None, worker, work_id=call_id,
                              return_ids=return_ids, gen_id=gen_id)
        self._queue_call(actor_id, work, method)

    # -- generators -------------------------------------------------------------------------
    def _on_item(self, gen_id: int, index: int, stored: ser.Stored, is_error: bool) -> None:
        gen = self._gens.get(gen_id)
        if gen is None or gen.finished:
            self._store.discard_unowned(stored)
            return
        index = gen.produced
        gen.produced += 1
        oid = next(self._ids)
        self._store.new(oid, refs=1)  # held by the generator until the consumer takes it
        self._store.resolve(oid, stored, is_error)
        gen.items[index] = oid
        self._wake_generator(gen)

    def _wake_generator(self, gen: _Generator) -> None:
        if not gen.waiters:
            return
        waiters, gen.waiters = gen.waiters, []
        for index, deliver in waiters:
            if index in gen.items or gen.finished:
                self._take_item(gen, index, deliver)
            else:
                gen.waiters.append((index, deliver))

    def _generator_take(
        self, gen_id: int, index: int, deliver: Callable[[int | None], None]
    ) -> bool:
        """Hand item ``index`` to ``deliver`` now (True) or once it is produced (False)."""
        gen = self._gens.get(gen_id)
        if gen is None:
            deliver(None)
            return True
        if index in gen.items or (gen.finished and index >= gen.produced):
            self._take_item(gen, index, deliver)
            return True
        gen.waiters.append((index, deliver))
        return False

    def _take_item(self, gen: _Generator, index: int, deliver: Callable[[int | None], None]
                   ) -> None:
        oid = gen.items.pop(index, None)
        if oid is None:
            deliver(None)
            return
        self._store.incref(oid)  # the consumer's reference
        deliver(oid)
        self._store.decref(oid)  # the generator's pin
        gen.consumed = max(gen.consumed, index + 1)
        worker = gen.worker
        if worker is not None and not gen.finished and worker.uid in self._workers:
            self._send(worker, ("ack", gen.work.gen_id, gen.consumed))

    def _close_generator(self, gen_id: int, gen: _Generator) -> None:
        del self._gens[gen_id]
        for oid in gen.items.values():
            self._store.decref(oid)
        gen.items.clear()
        worker = gen.worker
        if not gen.finished and worker is not None and worker.uid in self._workers:
            self._send(worker, ("close_generator", gen_id))

    def generator_next(self, generator_id: int, index: int, timeout: float | None
                       ) -> ObjectRef | None:
        self._check_open()
        box: list[int | None] = []
        waiter = _Waiter(1)

        def deliver(oid: int | None) -> None:
            box.append(oid)
            waiter(0)

        self._lock.acquire()
        try:
            self._generator_take(generator_id, index, deliver)
        finally:
            self._unlock()
        if not waiter.wait(timeout):
            with self._lock:
                gen = self._gens.get(generator_id)
                if gen is not None:
                    gen.waiters = [(i, d) for i, d in gen.waiters if d is not deliver]
                if not box:
                    raise GetTimeoutError(f"no item from the generator within {timeout} s")
        oid = box[0]
        if oid is None:
            return None
        ref = ObjectRef(oid, self, add_ref=False)
        return ref

    def generator_next_async(
        self, generator_id: int, index: int,
        deliver: Callable[[ObjectRef | None, BaseException | None], None],
    ) -> None:
        self._check_open()

        def take(oid: int | None) -> None:
            ref = None if oid is None else ObjectRef(oid, self, add_ref=False)
            self._deferred.append(lambda: deliver(ref, None))

        self._lock.acquire()
        try:
            self._generator_take(generator_id, index, take)
        finally:
            self._unlock()

    # -- get / put / wait -------------------------------------------------------------------
    def get(self, refs: Sequence[ObjectRef], timeout: float | None) -> list[Any]:
        self._check_open()
        store = self._store
        ids = [r._id for r in refs]
        with self._lock:
            pending = [i for i in ids if not store.is_ready(i)]
            waiter = None
            if pending:
                waiter = _Waiter(len(set(pending)))
                for oid in set(pending):
                    store.add_callback(oid, waiter)
        if waiter is not None and not waiter.wait(timeout):
            with self._lock:
                store.remove_callback(set(pending), waiter)
                left = sum(1 for i in set(pending) if not store.is_ready(i))
            if left:
                raise GetTimeoutError(
                    f"ember.get timed out after {timeout} s: {left} of {len(set(ids))} "
                    "objects are not ready yet"
                )
        with self._lock:
            values = [store.value(i) for i in ids]
        self._check_open()
        out = []
        for oid, entry in zip(ids, values):
            if entry is None:
                entry = _lost(oid)
            stored, is_error = entry
            value = ser.loads(stored, self._names)
            if is_error:
                raise value
            out.append(value)
        return out

    def put(self, value: Any) -> ObjectRef:
        self._check_open()
        stored = ser.dumps(value, self._names, self._threshold)
        oid = next(self._ids)
        with self._lock:
            self._store.new(oid, refs=1)
            self._store.resolve(oid, stored, False)
        return ObjectRef(oid, self, add_ref=False)

    def wait(
        self, refs: Sequence[ObjectRef], num_returns: int, timeout: float | None,
        fetch_local: bool,
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        self._check_open()
        store = self._store
        ids = [r._id for r in refs]
        with self._lock:
            ready_now = sum(1 for i in ids if store.is_ready(i))
            waiter = None
            if ready_now < num_returns and timeout != 0:
                waiter = _Waiter(num_returns - ready_now)
                for oid in ids:
                    store.add_callback(oid, waiter)
        if waiter is not None:
            waiter.wait(timeout)
            with self._lock:
                store.remove_callback(ids, waiter)
        with self._lock:
            flags = [store.is_ready(i) for i in ids]
        ready: list[ObjectRef] = []
        not_ready: list[ObjectRef] = []
        for ref, flag in zip(refs, flags):
            (ready if flag and len(ready) < num_returns else not_ready).append(ref)
        return ready, not_ready

    # -- cancel --------------------------------------------------------------------------------
    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        self._check_open()
        with self._lock:
            self._cancel(ref._id, force, recursive)
            self._unlock_keep()
        self._run_deferred()

    def _cancel(self, oid: int, force: bool, recursive: bool) -> None:
        work = self._producer.get(oid)
        if work is None or work.cancelled:
            return
        if work.actor is not None:
            if work in work.actor.queue:
                work.actor.queue.remove(work)
                work.cancelled = True
                self._fail(work, TaskCancelledError(f"{work.name} was cancelled"))
            return  # a running actor call is not interrupted (as in Ray)
        work.cancelled = True
        if recursive:
            for child in [w for w in self._tasks.values() if w.parent == work.id]:
                for child_oid in child.return_ids or [child.gen_id]:
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
        if worker.inflight[0] is not work:
            self._send(worker, ("cancel", work.id))
        elif force:
            _kill(worker)
        else:
            self._send(worker, ("cancel", work.id))
            try:
                os.kill(worker.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass

    # -- worker exit -----------------------------------------------------------------------------
    def _on_worker_exit(self, worker: _Worker) -> None:
        if self._workers.pop(worker.uid, None) is None:
            return
        worker.chan.close()
        exitcode = worker.exitcode
        for oid, count in worker.held.items():
            for _ in range(count):
                self._release(oid)
        worker.held.clear()
        if worker in self._idle:
            self._idle.remove(worker)
        if not worker.ready and worker.actor is None:
            self._starting -= 1
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

    def _task_worker_died(self, work: _Work, exitcode: Any) -> None:
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

    # -- introspection --------------------------------------------------------------------------
    def cluster_resources(self) -> dict[str, float]:
        self._check_open()
        return dict(self._pool.totals)

    def available_resources(self) -> dict[str, float]:
        self._check_open()
        with self._lock:
            return self._pool.snapshot()

    def runtime_context(self) -> RuntimeContext:
        self._check_open()
        return RuntimeContext(
            backend="local", job_id=self._job_id, node_id="local",
            namespace=self._cfg.namespace, worker_id="driver",
        )

    def store_stats(self) -> dict[str, Any]:
        with self._lock:
            return self._store.stats()

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._workers.values() if w.pid is not None]

    # -- shutdown ------------------------------------------------------------------------------
    def shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self._workers.values())
            self._workers.clear()
            waiting = [oid for oid, obj in self._store.objects.items() if obj.stored is None]
            gone = ser.dumps(RuntimeNotInitializedError(
                "ember was shut down before this value was computed"), None, 0)
            for oid in waiting:
                self._resolve(oid, gone, True)
            for gen in self._gens.values():
                gen.finished = True
                self._wake_generator(gen)
            deferred = self._leave()
        for callback in deferred:
            try:
                callback()
            except Exception:
                pass
        self._wake()
        self._reactor.join(5)
        for worker in workers:
            _kill(worker)
            worker.chan.close()
        self._forkserver.close()  # it reaps (and, if needed, kills) every worker it started
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        _shm.sweep(self._names)


def _kill(worker: _Worker) -> None:
    if worker.pid is None:  # not started yet: closing its socket makes it exit at once
        worker.chan.close()
        return
    try:
        os.kill(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _lost(oid: int) -> tuple[ser.Stored, bool]:
    from ember.errors import ObjectLostError

    return ser.dumps(ObjectLostError(f"object {oid:016x} was freed"), None, 0), True
