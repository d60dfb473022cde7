"""The local backend: the core API over one machine's worker processes.

``LocalBackend`` is the ``Backend`` protocol (``ember/core/_backend.py``): it serializes what
the caller passes, takes the runtime's lock, hands the event to the scheduler
(``_scheduler.py``: every record and decision) and leaves the lock through the I/O layer
(``_io.py``: sockets, processes, the reactor thread, timers), which carries out what the
scheduler decided. ``get``/``wait`` block the caller on a waiter, or let it read the producing
worker's socket itself (see ``_io.DriverIO.wait_direct``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ember.core import _runtime_env, _shm
from ember.core import _serialization as ser
from ember.core._context import RuntimeContext
from ember.core._placement import NOT_SET, PlacementGroup, group_of
from ember.core._refs import ObjectRef, ObjectRefGenerator
from ember.core._remote import ActorClass, ActorHandle, RemoteFunction
from ember.core._settings import (
    LOCAL_NODE_IP,
    NODE_RESOURCES,
    SHM_DIR,
    LocalConfig,
    resolve_local_config,
)
from ember.core.local._io import DriverIO, Waiter
from ember.core.local._records import _EMPTY_ARGS, _lost, _Work
from ember.core.local._resources import local_request, node_record
from ember.core.local._scheduler import Scheduler
from ember.core.local._state import LocalObserver
from ember.core.local._store import ObjectStore
from ember.core.local._worker import WorkerConfig
from ember.core.local._worker_client import _actor_settings, serialize_args
from ember.errors import GetTimeoutError, RuntimeNotInitializedError

logger = logging.getLogger("ember")


class LocalBackend:
    """The embedded runtime: ``ember.init()`` starts one in the calling process."""

    name = "local"

    @classmethod
    def start(
        cls, *, num_cpus: float | None = None, num_gpus: float | None = None,
        resources: dict[str, float] | None = None, object_store_memory: int | None = None,
        namespace: str | None = None, runtime_env: dict[str, Any] | None = None,
        log_to_driver: bool | None = True, _memory: int | None = None,
    ) -> LocalBackend:
        """``_memory``: Ray's ``ray.init(_memory=...)``, the bytes of the "memory" resource."""
        config = resolve_local_config(
            num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
            object_store_memory=object_store_memory, namespace=namespace,
            runtime_env=runtime_env, memory=_memory,
        )
        return cls(config, log_to_driver=log_to_driver)

    def __init__(self, config: LocalConfig, *, log_to_driver: bool | None = True) -> None:
        self._cfg = config
        self._job_id = os.urandom(4).hex()
        self._names = _shm.SegmentNames(self._job_id, config.spill_dir)
        removed = _shm.sweep_dead_sessions(config.spill_dir)
        if removed:
            logger.warning("ember: removed %d shared-memory segment(s) left by a runtime whose "
                           "processes were all killed before they could clean up", removed)
        self._session_lock: int | None = None
        try:
            self._session_lock = _shm.hold_session_lock(self._names)
        except OSError as exc:  # e.g. a read-only or full /dev/shm: lose only that cleanup
            logger.warning("ember: cannot create this runtime's lock file in %s (%s); if all "
                           "its processes are killed at once, its shared memory stays behind",
                           SHM_DIR, exc)
        self._threshold = config.inline_threshold
        self._lock = threading.Lock()
        self._store = ObjectStore(self._names, config.object_store_memory)
        totals = {"CPU": config.num_cpus, "memory": config.memory, **config.resources,
                  **NODE_RESOURCES}
        names = self._names
        # observe: the state API, worker output and metrics (see _state.py)
        self._observer = LocalObserver(self, log_to_driver)
        self._sched = sched = Scheduler(
            totals, config.gpu_ids, self._store, namespace=config.namespace,
            decode=lambda stored: ser.loads_detached(stored, names), listener=self._observer)
        self._io = io = DriverIO(sched, self._lock, names, self._session_lock, self._observer,
                                 self._worker_config)
        self._unlock = io.unlock
        io.start()
        with self._lock:
            sched.prestart(min(int(config.num_cpus), 8))
            io.unlock_keep()

    def _worker_config(self, uid: int) -> WorkerConfig:
        return WorkerConfig(uid, self._names, self._threshold, self._cfg.namespace,
                            self._job_id, dict(self._sched.pool.totals), self._cfg.spin_s,
                            self._cfg.runtime_env)

    @property
    def _forkserver(self) -> Any:  # what tests reach for to kill it
        return self._io.forkserver

    def _check_open(self) -> None:
        io = self._io
        if io.closed:
            raise RuntimeNotInitializedError(
                "this ember runtime was shut down; call ember.init() to start a new one"
            )
        if io.broken is not None:
            raise io.broken

    def _serialize(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
                   ) -> tuple[ser.Stored, list[int]]:
        if not args and not kwargs:
            return _EMPTY_ARGS, []
        return serialize_args(name, args, kwargs, self._names, self._threshold)

    def _returns(self, work: _Work, num_returns: Any) -> Any:
        if work.gen_id is not None:
            gen = ObjectRefGenerator.__new__(ObjectRefGenerator)
            gen._id, gen._rt, gen._index, gen._done = work.gen_id, self, 0, False
            return gen
        refs = [ObjectRef(oid, self, add_ref=False) for oid in work.return_ids]
        if num_returns in (1, "dynamic"):
            return refs[0]
        return refs or None

    # -- tasks ----------------------------------------------------------------------------------
    def submit_task(
        self, fn: RemoteFunction, args: tuple[Any, ...], kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> Any:
        self._check_open()
        request = local_request(options)
        env = _runtime_env.for_local(options.get("runtime_env"), f"task {fn._name}")
        group = group_of(options)
        if group == NOT_SET:  # the driver is in no group: nothing to capture
            group = None
        stored, deps = self._serialize(fn._name, args, kwargs)
        fn_id = fn.function_id
        sched = self._sched
        if fn_id not in sched.fn_code:  # pickled outside the lock: see create_actor
            sched.fn_code[fn_id] = fn.pickled()
        num_returns = options["num_returns"]
        self._lock.acquire()
        try:
            if deps and self._io.claimed:  # a claimed result may be among them
                self._io.release_claims()
            work = sched.submit_task(options.get("name") or fn._name, fn_id, stored, deps,
                                     num_returns, request, options["max_retries"],
                                     options["retry_exceptions"], env)
            if group is not None:  # its worker asks for it once it runs: after this unlock
                work.group = group
            return self._returns(work, num_returns)
        finally:
            self._unlock()

    def cancel(self, ref: ObjectRef | ObjectRefGenerator, force: bool, recursive: bool) -> None:
        self._check_open()
        with self._lock:
            self._sched.cancel(ref._id, force, recursive)
            self._io.unlock_keep()
        self._io.run_deferred()

    # -- actors ---------------------------------------------------------------------------------
    def create_actor(
        self, cls: ActorClass, args: tuple[Any, ...], kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> ActorHandle:
        self._check_open()
        meta = cls.meta
        request = local_request(options)
        settings = _actor_settings(options)
        settings["runtime_env"] = _runtime_env.for_local(options.get("runtime_env"),
                                                         f"actor {meta.class_name}")
        stored, deps = self._serialize(meta.class_name, args, kwargs)
        # Pickling user code may meet actor handles (module globals, defaults, closures), whose
        # __reduce__ takes the lock: never pickle while holding it.
        code = cls.pickled()
        sched = self._sched
        with self._lock:
            actor_id = sched.create_actor(next(sched.ids), cls.class_id, code, stored, deps,
                                          request, settings, meta)
            handle = ActorHandle.__new__(ActorHandle)
            handle._actor_id, handle._meta, handle._rt = actor_id, meta, self
            sched.add_handle(actor_id)
            self._io.unlock_keep()
        self._io.run_deferred()
        return handle

    def submit_actor_task(
        self, handle: ActorHandle, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
        num_returns: Any,
    ) -> Any:
        io = self._io
        if io.closed:
            self._check_open()
        stored, deps = self._serialize(method, args, kwargs)
        self._lock.acquire()
        try:
            if deps and io.claimed:  # a claimed result may be among them
                io.release_claims()
            work = self._sched.submit_call(handle._actor_id, method, stored, deps, num_returns)
            if num_returns == 1:
                if work.actor is not None:
                    io.claim(work)
                return ObjectRef(work.return_ids[0], self, add_ref=False)
            return self._returns(work, num_returns)
        finally:
            self._unlock()

    def kill(self, handle: ActorHandle, no_restart: bool) -> None:
        self._check_open()
        with self._lock:
            self._sched.kill_actor(handle._actor_id, no_restart)
            self._io.unlock_keep()
        self._io.run_deferred()

    def get_actor(self, name: str, namespace: str | None) -> ActorHandle:
        self._check_open()
        with self._lock:
            actor_id, meta = self._sched.lookup_actor(name, namespace)
            self._sched.add_handle(actor_id)
        handle = ActorHandle.__new__(ActorHandle)
        handle._actor_id, handle._meta, handle._rt = actor_id, meta, self
        return handle

    def named_actors(self) -> list[tuple[str, str]]:
        """``(namespace, name)`` of every live named actor."""
        self._check_open()
        with self._lock:
            return self._sched.named_actors()

    def add_actor_ref(self, actor_id: int) -> None:
        with self._lock:
            self._sched.add_handle(actor_id)

    def remove_actor_ref(self, actor_id: int) -> None:
        # Runs from ActorHandle.__del__, possibly while this thread holds the lock: defer.
        io = self._io
        if io.closed:
            return
        io.decrefs.append(("actor", actor_id))
        if self._lock.acquire(blocking=False):
            self._unlock()

    def on_actor_handle_pickled(self, actor_id: int) -> None:
        with self._lock:
            self._sched.pin_actor(actor_id)

    # -- references -----------------------------------------------------------------------
    def make_ref(self, object_id: int) -> ObjectRef:
        return ObjectRef(object_id, self)

    def add_local_ref(self, object_id: int) -> None:
        with self._lock:
            self._sched.addref(object_id)

    def remove_local_ref(self, object_id: int) -> None:
        io = self._io
        if io.closed:
            return
        if self._lock.acquire(blocking=False):
            io.release(object_id)
            self._unlock()
        else:  # another thread holds the lock, or this one does (a __del__ inside a locked
            io.decrefs.append(object_id)  # section): the holder applies it on leaving
            if self._lock.acquire(blocking=False):  # unless it left just before the append
                self._unlock()

    add_generator_ref = add_local_ref
    remove_generator_ref = remove_local_ref

    def on_ready(self, ref: ObjectRef, callback: Callable[[Any], None]) -> None:
        self._check_open()
        io = self._io
        self._lock.acquire()
        try:
            if io.claimed:
                io.release_claims()

            def later(_oid: int) -> None:
                io.deferred.append(lambda: callback(ref))

            if self._store.add_callback(ref._id, later):
                return
        finally:
            self._unlock()
        callback(ref)

    # -- generators ----------------------------------------------------------------------------
    def generator_next(self, generator_id: int, index: int, timeout: float | None
                       ) -> ObjectRef | None:
        self._check_open()
        box: list[int | None] = []
        waiter = Waiter(1)

        def deliver(oid: int | None) -> None:
            box.append(oid)
            waiter(0)

        io = self._io
        self._lock.acquire()
        try:
            if io.claimed:
                io.release_claims()
            self._sched.streams.take(generator_id, index, deliver)
        finally:
            self._unlock()
        if not waiter.wait(timeout):
            with self._lock:
                self._sched.streams.forget(generator_id, deliver)
                if not box:
                    raise GetTimeoutError(f"no item from the generator within {timeout} s")
        oid = box[0]
        if oid is None:
            return None
        return ObjectRef(oid, self, add_ref=False)

    def generator_next_async(
        self, generator_id: int, index: int,
        deliver: Callable[[ObjectRef | None, BaseException | None], None],
    ) -> None:
        self._check_open()
        io = self._io

        def take(oid: int | None) -> None:
            ref = None if oid is None else ObjectRef(oid, self, add_ref=False)
            io.deferred.append(lambda: deliver(ref, None))

        self._lock.acquire()
        try:
            if io.claimed:
                io.release_claims()
            self._sched.streams.take(generator_id, index, take)
        finally:
            self._unlock()

    # -- get / put / wait -------------------------------------------------------------------
    def get(self, refs: Sequence[ObjectRef], timeout: float | None) -> list[Any]:
        self._check_open()
        if len(refs) == 1:
            return [self._get_one(refs[0]._id, timeout)]
        store = self._store
        io = self._io
        ids = [r._id for r in refs]
        with self._lock:
            if io.claimed:
                io.release_claims()
            pending = [i for i in ids if not store.is_ready(i)]
            waiter = None
            source = None
            if pending:
                waiter = Waiter(len(set(pending)))
                for oid in set(pending):
                    store.add_callback(oid, waiter)
                if len(ids) == 1:
                    source = io.take_direct(ids[0])
        if source is not None:
            assert waiter is not None
            ready = io.wait_direct(waiter, source, timeout, self._cfg.spin_s)
        else:
            ready = waiter is None or waiter.wait(timeout)
        if not ready and waiter is not None:
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
        return [self._decode(oid, entry) for oid, entry in zip(ids, values, strict=True)]

    def _decode(self, oid: int, entry: tuple[Any, bool] | None) -> Any:
        """The value of a stored entry; raises the stored error (or a lost-object error)."""
        if entry is None:
            entry = _lost(oid)
        stored, is_error = entry
        value = ser.loads(stored, self._names)
        if is_error:
            raise value
        return value

    def _get_one(self, oid: int, timeout: float | None) -> Any:
        """``get`` of one reference: the common synchronous case, kept short."""
        store = self._store
        lock = self._lock
        io = self._io
        lock.acquire()
        try:
            claimed = io.claimed
            if claimed and (len(claimed) > 1 or next(iter(claimed)).claim != oid):
                io.release_claims(keep=oid)  # every claim but this result's own goes back
            obj = store.objects.get(oid)
            entry: tuple[ser.Stored, bool] | None = None
            waiter = None
            if obj is None:
                pass
            elif obj.stored is not None:
                entry = (obj.stored, obj.error)
            else:
                waiter = Waiter(1)
                store.add_callback(oid, waiter)
                source = io.take_direct(oid)
        finally:
            self._unlock()
        if waiter is not None:
            if source is not None:
                ready = io.wait_direct(waiter, source, timeout, self._cfg.spin_s)
            else:
                ready = waiter.wait(timeout)
            lock.acquire()
            try:
                if not ready:
                    store.remove_callback((oid,), waiter)
                    if not store.is_ready(oid):
                        raise GetTimeoutError(
                            f"ember.get timed out after {timeout} s: 1 of 1 objects are not "
                            "ready yet"
                        )
                entry = store.value(oid)
            finally:
                self._unlock()
            self._check_open()
        return self._decode(oid, entry)

    def put(self, value: Any) -> ObjectRef:
        self._check_open()
        stored = ser.dumps(value, self._names, self._threshold)
        oid = next(self._sched.ids)
        with self._lock:
            self._sched.put(oid, stored)
        return ObjectRef(oid, self, add_ref=False)

    def wait(
        self, refs: Sequence[ObjectRef | ObjectRefGenerator], num_returns: int,
        timeout: float | None, fetch_local: bool,
    ) -> tuple[list[Any], list[Any]]:
        self._check_open()
        # An object's id, or (id, next index) of a generator: ready when its next item is.
        entries: list[Any] = [(r._id, r._index) if isinstance(r, ObjectRefGenerator) else r._id
                              for r in refs]
        streams = self._sched.streams
        ready_of = streams.ready
        io = self._io
        with self._lock:
            if io.claimed:
                io.release_claims()
            ready_now = sum(1 for e in entries if ready_of(e))
            waiter = None
            if ready_now < num_returns and timeout != 0:
                waiter = Waiter(num_returns - ready_now)
                streams.watch(entries, waiter)
        if waiter is not None:
            waiter.wait(timeout)
            with self._lock:
                streams.unwatch(entries, waiter)
        with self._lock:
            flags = [ready_of(e) for e in entries]
        ready: list[Any] = []
        not_ready: list[Any] = []
        for ref, flag in zip(refs, flags, strict=True):
            (ready if flag and len(ready) < num_returns else not_ready).append(ref)
        return ready, not_ready

    # -- introspection --------------------------------------------------------------------------
    def cluster_resources(self) -> dict[str, float]:
        self._check_open()
        return self._sched.resources("total")

    # -- placement groups: nothing to reserve on one node; kept for their names and table ------
    def create_placement_group(self, bundles: list[dict[str, float]], strategy: str, name: str,
                               lifetime: str | None) -> PlacementGroup:
        self._check_open()
        with self._lock:
            return self._sched.new_group(bundles, strategy, name)

    def remove_placement_group(self, group: PlacementGroup) -> None:
        with self._lock:
            self._sched.groups.remove(group.id)

    def get_placement_group(self, name: str) -> PlacementGroup | None:
        self._check_open()
        with self._lock:
            return self._sched.groups.named(name)

    def placement_group_table(self, group: PlacementGroup | None) -> dict[str, Any]:
        self._check_open()
        with self._lock:
            return self._sched.groups.table(None if group is None else group.id)

    def current_placement_group(self) -> None:
        return None  # the driver runs in no group

    def available_resources(self) -> dict[str, float]:
        self._check_open()
        with self._lock:
            return self._sched.resources("available")

    def runtime_context(self) -> RuntimeContext:
        self._check_open()
        return RuntimeContext(
            backend="local", job_id=self._job_id, node_id="local",
            namespace=self._cfg.namespace, worker_id="driver",
        )

    def nodes(self) -> list[dict[str, Any]]:
        self._check_open()
        return [node_record(self.runtime_context().get_node_id(), self.cluster_resources(),
                            self.available_resources())]

    def node_ip_address(self) -> str:
        return LOCAL_NODE_IP

    def timeline_events(self) -> list[dict[str, Any]]:
        return []  # no task events are recorded yet: an empty Chrome trace

    def state(self, kind: str, filters: list[tuple[str, str, Any]] | None = None,
              limit: int | None = None, detail: bool = False) -> Any:
        """observe: rows of ``ember.util.state`` (see _state.LocalObserver.query)."""
        self._check_open()
        with self._lock:
            return self._observer.query(kind, filters, limit, detail)

    def observe_store(self) -> Any:
        """observe: the store the dashboard, ``/metrics`` and the CLI read."""
        return self._observer.store

    def store_stats(self) -> dict[str, Any]:
        with self._lock:
            return self._store.stats()

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [c.pid for c in self._io.conns.values() if c.pid is not None]

    # -- shutdown ------------------------------------------------------------------------------
    def shutdown(self) -> None:
        io = self._io
        with self._lock:
            if io.closed:
                return
            io.closed = True
            conns = list(io.conns.values())
            io.conns.clear()
            self._sched.shutdown(ser.dumps(RuntimeNotInitializedError(
                "ember was shut down before this value was computed"), None, 0))
            deferred = io.leave()
        for callback in deferred:
            try:
                callback()
            except Exception:
                pass
        io.close(conns)
        _shm.sweep(self._names)
        if self._session_lock is not None:
            os.close(self._session_lock)
