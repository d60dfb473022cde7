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
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ember.core import _serialization as ser
from ember.core import _shm
from ember.core._context import RuntimeContext
from ember.core._refs import ObjectRef, ObjectRefGenerator
from ember.core._settings import LOCAL_NODE_IP, NODE_RESOURCES, LocalConfig, resolve_local_config
from ember.core.local._actors import ActorsMixin
from ember.core.local._forkserver import ForkServer
from ember.core.local._protocol import decode
from ember.core.local._records import _Actor, _Generator, _kill, _lost, _Waiter, _Work, _Worker
from ember.core.local._requests import RequestsMixin
from ember.core.local._resources import ResourcePool, node_record
from ember.core.local._state import LocalObserver
from ember.core.local._store import ObjectStore
from ember.core.local._tasks import TasksMixin
from ember.core.local._transport import DriverChannel
from ember.core.local._worker import (
    WorkerConfig,
)
from ember.errors import (
    BackendError,
    GetTimeoutError,
    RuntimeNotInitializedError,
)

logger = logging.getLogger("ember")

_READ = select.EPOLLIN
_HANGUP = select.EPOLLHUP | select.EPOLLERR
# A claimed socket (see LocalBackend._claim) goes back to the reactor when its claim has not
# been taken up for this long; the reactor looks this often while actors exist.
_CLAIM_TICK = 0.05


class LocalBackend(TasksMixin, ActorsMixin, RequestsMixin):
    """The embedded runtime: ``ember.init()`` starts one in the calling process."""

    name = "local"

    @classmethod
    def start(
        cls, *, num_cpus: float | None = None, num_gpus: float | None = None,
        resources: dict[str, float] | None = None, object_store_memory: int | None = None,
        namespace: str | None = None, runtime_env: dict[str, Any] | None = None,
        log_to_driver: bool | None = True,
    ) -> LocalBackend:
        config = resolve_local_config(
            num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
            object_store_memory=object_store_memory, namespace=namespace,
            runtime_env=runtime_env,
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
                           _shm.SHM_DIR, exc)
        self._threshold = config.inline_threshold
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._store = ObjectStore(self._names, config.object_store_memory)
        totals = {"CPU": config.num_cpus, **config.resources, **NODE_RESOURCES}
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
        self._warned_infeasible: set[tuple[Any, ...]] = set()
        self._decrefs: deque[Any] = deque()  # object ids, or ("actor", id)
        self._deferred: list[Callable[[], None]] = []
        self._dirty: set[_Worker] = set()
        self._claimed: set[_Worker] = set()
        self._live_actors = 0  # actors not dead: while any exist, the reactor looks at claims
        # Worker uid -> the non-detached actors its task or actor created (they die with it).
        self._owned: dict[int, set[int]] = {}
        self._timers: list[list[Any]] = []
        self._timer_seq = itertools.count()
        self._uids = itertools.count(1)
        self._closed = False
        self._broken: BackendError | None = None  # set when the fork server is gone
        # Raw epoll (thread-safe to modify from any thread) and who owns each descriptor.
        self._epoll = select.epoll()
        self._owners: dict[int, _Worker | str] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._watch_fd(self._wake_r, "wake")
        self._forkserver = ForkServer(self._names, self._session_lock)
        self._pids: dict[int, _Worker] = {}
        # observe: the state API, worker output and metrics (see _state.py)
        self._observer = LocalObserver(self, log_to_driver)
        self._watch_fd(self._forkserver.fileno(), "forkserver")
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
            if type(oid) is tuple:
                self._release_actor(oid[1])
            else:
                self._release(oid)
        for worker in self._dirty:
            if worker.outbox:
                messages, worker.outbox = worker.outbox, []
                if not worker.chan.send_many(messages) and worker.fd in self._owners:
                    if worker.claim is not None:
                        self._unclaim(worker)
                    self._epoll.modify(worker.fd, _READ | select.EPOLLOUT)
        self._dirty.clear()
        deferred, self._deferred = self._deferred, []
        return deferred

    def _unlock(self) -> None:
        if not (self._decrefs or self._dirty or self._deferred):  # nothing queued: just leave
            self._lock.release()
            return
        deferred = self._leave()
        self._lock.release()
        for callback in deferred:
            callback()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeNotInitializedError(
                "this ember runtime was shut down; call ember.init() to start a new one"
            )
        if self._broken is not None:
            raise self._broken

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
                              self._job_id, dict(self._pool.totals), self._cfg.spin_s,
                              self._cfg.runtime_env)
        output = self._observer.on_spawn(uid, actor)  # observe: the worker's output pipes
        config.output_fds = len(output)
        self._forkserver.spawn(uid, config, child, output)
        child.close()
        for fd in output:
            os.close(fd)
        worker = _Worker(uid, DriverChannel(parent))
        worker.actor = actor
        self._workers[uid] = worker
        if actor is None:
            self._starting += 1
        self._watch_fd(worker.fd, worker)
        return worker

    def _watch_fd(self, fd: int, owner: _Worker | str) -> None:
        self._owners[fd] = owner
        self._epoll.register(fd, _READ)

    def _unwatch_fd(self, fd: int) -> None:
        if self._owners.pop(fd, None) is not None:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass

    def _reactor_loop(self) -> None:
        epoll = self._epoll
        while True:
            timeout = -1.0
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            if self._live_actors and not 0 <= timeout <= _CLAIM_TICK:
                timeout = _CLAIM_TICK  # a claim may be made while this thread sleeps
            events = epoll.poll(timeout)
            if self._closed:
                return
            self._lock.acquire()
            try:
                for fd, mask in events:
                    owner = self._owners.get(fd)
                    if owner is None:
                        continue
                    if owner == "wake":
                        try:
                            while os.read(self._wake_r, 4096):
                                pass
                        except BlockingIOError:
                            pass
                    elif owner == "forkserver":
                        self._on_forkserver(self._forkserver.read())
                    elif isinstance(owner, _Worker):
                        if mask & select.EPOLLOUT and owner.chan.flush():
                            self._epoll.modify(fd, 0 if owner.direct is not None else _READ)
                        if mask & (_READ | _HANGUP):
                            self._read_worker(owner)
                self._run_timers()
                if self._claimed:
                    self._expire_claims()
            except Exception:  # a bug here must not kill the reactor silently
                logger.exception("ember reactor: internal error (please report it)")
            finally:
                self._unlock()

    def _take_direct(self, oid: int) -> tuple[_Worker, int] | None:
        """Let the caller read the reply for ``oid`` itself (lock held): disables the reactor's
        interest in the producing worker's socket and returns (worker, wake pipe)."""
        work = self._producer.get(oid)
        if work is None:
            return None
        worker = None
        if work.actor is not None:
            if work.id in work.actor.inflight:
                worker = work.actor.worker
                if worker is not None and worker.claim == oid:  # already set up at submission
                    assert worker.poller is not None
                    worker.claim = None
                    self._claimed.discard(worker)
                    return worker, worker.poller[1]
        else:
            worker = next((w for w in self._workers.values()
                           if w.inflight and w.inflight[0] is work), None)
        if (worker is None or worker.direct is not None or worker.eof
                or worker.fd not in self._owners or worker.chan.has_pending()):
            return None
        worker.direct = self._poller(worker)[2]
        self._epoll.modify(worker.fd, 0)
        return worker, worker.poller[1]  # type: ignore[index]

    @staticmethod
    def _poller(worker: _Worker) -> tuple[Any, int, int]:
        if worker.poller is None:  # made once per worker, reused by every direct wait
            wake_r, wake_w = _pipe()
            poller = select.poll()
            poller.register(worker.fd, select.POLLIN)
            poller.register(wake_r, select.POLLIN)
            worker.poller = (poller, wake_r, wake_w)
        return worker.poller

    # -- claims ---------------------------------------------------------------------------
    # A synchronous actor call is ``get(actor.method.remote())``: the reply is best read by the
    # calling thread itself (see _wait_direct). Taking the socket from the reactor only in
    # ``get`` leaves a window after the call is sent in which the reply wakes the reactor
    # thread, which then competes with the caller for the lock and the GIL. So the
    # submission of a call to an idle actor already takes the socket from the reactor (a
    # "claim"), before the call leaves; ``get`` of that call's result takes the claim up. Any
    # other wait (another get, wait, await, a worker's request), a dropped result, or a claim
    # left alone for _CLAIM_TICK gives the socket back, so nothing the worker sends can wait
    # for long on a caller that went elsewhere.
    def _claim(self, work: _Work) -> None:
        """Claim the socket of ``work``'s actor for its caller (lock held, before sending)."""
        actor = work.actor
        worker = actor.worker if actor is not None else None
        if (worker is None or worker.direct is not None or len(work.return_ids) != 1
                or work.gen_id is not None or worker.eof or worker.fd not in self._owners
                or worker.chan.has_pending() or len(actor.inflight) != 1  # type: ignore[union-attr]
                or work.id not in actor.inflight):  # type: ignore[union-attr]
            return
        worker.direct = self._poller(worker)[2]
        worker.claim = work.return_ids[0]
        worker.claim_time = time.monotonic()
        self._claimed.add(worker)
        self._epoll.modify(worker.fd, 0)

    def _unclaim(self, worker: _Worker) -> None:
        """Give a claimed socket back to the reactor (lock held)."""
        worker.claim = None
        self._claimed.discard(worker)
        self._end_direct(worker)

    def _release_claims(self, keep: int | None = None) -> None:
        """Give every claimed socket back, except the one claimed for object ``keep``."""
        for worker in list(self._claimed):
            if worker.claim != keep:
                self._unclaim(worker)

    def _expire_claims(self) -> None:
        limit = time.monotonic() - _CLAIM_TICK
        for worker in list(self._claimed):
            if worker.claim_time <= limit:
                self._unclaim(worker)

    def _wait_direct(self, waiter: _Waiter, source: tuple[_Worker, int],
                     timeout: float | None) -> bool:
        """Wait for ``waiter`` by polling the producing worker's socket in this thread: the
        reply is handled here, with no hand-off from the reactor thread."""
        worker, wake_r = source
        assert worker.poller is not None
        poller = worker.poller[0]
        deadline = None if timeout is None else time.monotonic() + timeout
        lock = self._lock
        handed_back = False
        spin = self._cfg.spin_s
        try:
            while waiter.count > 0:
                events = None
                if spin:  # catch a quick reply on an awake CPU
                    events = worker.spin_gate.spin(
                        lambda: poller.poll(0),
                        spin if deadline is None else min(spin, deadline - time.monotonic()))
                if not events:
                    if deadline is None:
                        events = poller.poll()
                    else:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return False
                        events = poller.poll(max(1, int(remaining * 1000)))
                if not events:
                    continue
                lock.acquire()
                try:
                    if len(events) > 1 or events[0][0] == wake_r:
                        _drain(wake_r)
                    if worker.eof or worker.uid not in self._workers or self._closed:
                        break
                    self._read_worker(worker, notify=False)
                    if waiter.count <= 0:  # done: give the socket back in this locked section
                        self._end_direct(worker)
                        handed_back = True
                finally:
                    self._unlock()
            if waiter.count > 0:  # the worker went away: its failure resolves the waiter
                return waiter.wait(
                    None if deadline is None else max(0.0, deadline - time.monotonic()))
            return True
        finally:
            if not handed_back:
                with lock:
                    self._end_direct(worker)

    def _end_direct(self, worker: _Worker) -> None:
        """The caller stops reading ``worker``'s socket (lock held): the reactor takes over."""
        worker.direct = None
        if worker.closing:  # it exited while we held its descriptors: close them now
            worker.close()
        elif worker.fd in self._owners and not self._closed:
            self._epoll.modify(worker.fd, _READ | (
                select.EPOLLOUT if worker.chan.has_pending() else 0))

    def _read_worker(self, worker: _Worker, notify: bool = True) -> None:
        """Handle what a worker sent (with the lock held), from the reactor or a direct waiter."""
        frames = worker.chan.read()
        if frames is None:
            self._on_worker_eof(worker)
        else:
            for frame in frames:
                self._on_message(worker, decode(frame))
                if worker.uid not in self._workers:
                    break
        if notify and worker.direct is not None:  # a caller polls this socket: tell it to look
            try:
                os.write(worker.direct, b"x")
            except OSError:
                pass

    def _on_forkserver(self, notices: list[tuple[Any, ...]] | None) -> None:
        if notices is None:
            if not self._closed and self._broken is None:
                self._unwatch_fd(self._forkserver.fileno())
                self._fail_everything(BackendError(
                    f"ember's fork server exited (exit code {self._forkserver.exit_code()}), so "
                    "no worker can start: see its error output above; then call "
                    "ember.shutdown() and ember.init() again"))
            return
        for kind, key, value in notices:
            if kind == "spawned":
                worker = self._workers.get(key)
                if worker is not None:
                    worker.pid = value
                    self._pids[value] = worker
                    self._observer.on_pid(worker)  # observe
                    if worker.doomed:
                        _kill(worker)
            elif kind == "exit":
                worker = self._pids.pop(key, None)
                if worker is not None:
                    worker.exitcode = value
                    if worker.eof:
                        self._on_worker_exit(worker)

    def _fail_everything(self, error: BackendError) -> None:
        """The runtime cannot go on (lock held): every value still to come fails with ``error``
        and every later call raises it, so that nothing waits forever."""
        logger.error("ember: %s", error)
        self._broken = error
        failed = ser.dumps(error, None, 0)
        for oid in [oid for oid, obj in self._store.objects.items() if obj.stored is None]:
            self._resolve(oid, failed, True)
        for gen in self._gens.values():
            gen.finished = True
            self._wake_generator(gen)

    def _on_worker_eof(self, worker: _Worker) -> None:
        # The socket closed; the fork server's exit notice (with the exit code) follows.
        worker.eof = True
        if worker.claim is not None:  # no caller polls it yet: nobody else will close it
            worker.claim = None
            self._claimed.discard(worker)
            worker.direct = None
        self._unwatch_fd(worker.fd)
        if worker.exitcode is not None or worker.pid is None:
            self._on_worker_exit(worker)

    def _add_timer(self, delay: float, callback: Callable[[], None]) -> list[Any]:
        entry = [time.monotonic() + delay, next(self._timer_seq), callback]
        heapq.heappush(self._timers, entry)
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
            self._resolve(message[1], message[2], len(message) > 3 and message[3])
        elif kind == "actor_exit":  # sys.exit() or exit_actor() in a method: no restart
            if worker.actor is not None:
                worker.actor.no_restart = True
                worker.actor.exited = message[1]
        elif kind == "requeue":
            self._requeue(worker, message[1])
        elif kind == "ready":
            worker.ready = True
            if worker.pid is None:  # the fork server's notice may come later: kill needs it
                worker.pid = message[1]
                self._pids[message[1]] = worker
                if worker.doomed:
                    _kill(worker)
            if worker.actor is None:
                self._starting -= 1
                self._idle.append(worker)
                self._schedule()
        elif kind == "actor_ready":
            actor = self._actors.get(message[1])
            if actor is not None and actor.state == "starting":
                actor.state = "alive"
        elif kind == "actor_failed":
            actor = self._actors.get(message[1])
            if actor is not None:
                self._actor_dead(actor, "its constructor raised", error=message[2])
        elif kind == "observe":  # observe: a worker's metrics and library views
            self._observer.on_observe(worker, message[1])

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
        if self._lock.acquire(blocking=False):
            self._release(object_id)
            self._unlock()
        else:  # another thread holds the lock, or this one does (a __del__ inside a locked
            self._decrefs.append(object_id)  # section): the holder applies it on leaving
            if self._lock.acquire(blocking=False):  # unless it left just before the append
                self._unlock()

    def _release(self, oid: int) -> None:
        if self._claimed:  # nobody will read this result directly any more
            for worker in list(self._claimed):
                if worker.claim == oid:
                    self._unclaim(worker)
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

    def _unlock_keep(self) -> None:
        # Flush inside a `with self._lock` block (the with statement releases the lock).
        for callback in self._leave():
            self._deferred.append(callback)

    def on_ready(self, ref: ObjectRef, callback: Callable[[Any], None]) -> None:
        self._check_open()
        self._lock.acquire()
        try:
            if self._claimed:
                self._release_claims()

            def later(_oid: int) -> None:
                self._deferred.append(lambda: callback(ref))

            if self._store.add_callback(ref._id, later):
                return
        finally:
            self._unlock()
        callback(ref)

    # -- actors ---------------------------------------------------------------------------
    def _run_deferred(self) -> None:
        if self._deferred and self._lock.acquire(blocking=False):
            self._unlock()

    # -- get / put / wait -------------------------------------------------------------------
    def get(self, refs: Sequence[ObjectRef], timeout: float | None) -> list[Any]:
        self._check_open()
        if len(refs) == 1:
            return [self._get_one(refs[0]._id, timeout)]
        store = self._store
        ids = [r._id for r in refs]
        with self._lock:
            if self._claimed:
                self._release_claims()
            pending = [i for i in ids if not store.is_ready(i)]
            waiter = None
            source = None
            if pending:
                waiter = _Waiter(len(set(pending)))
                for oid in set(pending):
                    store.add_callback(oid, waiter)
                if len(ids) == 1:
                    source = self._take_direct(ids[0])
        if source is not None:
            assert waiter is not None
            ready = self._wait_direct(waiter, source, timeout)
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
        lock.acquire()
        try:
            claimed = self._claimed
            if claimed and (len(claimed) > 1 or next(iter(claimed)).claim != oid):
                self._release_claims(keep=oid)
            obj = store.objects.get(oid)
            entry: tuple[ser.Stored, bool] | None = None
            waiter = None
            if obj is None:
                pass
            elif obj.stored is not None:
                entry = (obj.stored, obj.error)
            else:
                waiter = _Waiter(1)
                store.add_callback(oid, waiter)
                source = self._take_direct(oid)
        finally:
            self._unlock()
        if waiter is not None:
            if source is not None:
                ready = self._wait_direct(waiter, source, timeout)
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
        oid = next(self._ids)
        with self._lock:
            self._store.new(oid, refs=1)
            self._store.resolve(oid, stored, False)
        return ObjectRef(oid, self, add_ref=False)

    def wait(
        self, refs: Sequence[ObjectRef | ObjectRefGenerator], num_returns: int,
        timeout: float | None, fetch_local: bool,
    ) -> tuple[list[Any], list[Any]]:
        self._check_open()
        # An object's id, or (id, next index) of a generator: ready when its next item is.
        entries: list[Any] = [(r._id, r._index) if isinstance(r, ObjectRefGenerator) else r._id
                              for r in refs]
        ready_of = self._waitable_ready
        with self._lock:
            if self._claimed:
                self._release_claims()
            ready_now = sum(1 for e in entries if ready_of(e))
            waiter = None
            if ready_now < num_returns and timeout != 0:
                waiter = _Waiter(num_returns - ready_now)
                self._watch(entries, waiter)
        if waiter is not None:
            waiter.wait(timeout)
            with self._lock:
                self._unwatch(entries, waiter)
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
        return self._resources("total")

    def available_resources(self) -> dict[str, float]:
        self._check_open()
        with self._lock:
            return self._resources("available")

    def _resources(self, which: str) -> dict[str, float]:
        # As Ray does, the object store's capacity shows beside the schedulable resources
        # (ember.data sizes its default memory budget from it); it is never requested by tasks.
        if which == "total":
            view = dict(self._pool.totals)
            view["object_store_memory"] = float(self._store.capacity)
        else:
            view = self._pool.snapshot()
            view["object_store_memory"] = float(max(0, self._store.capacity - self._store.used))
        return view

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
            worker.close()
        self._forkserver.close()  # it reaps (and, if needed, kills) every worker it started
        self._observer.close()  # observe: reads what the workers left in their output pipes
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        _shm.sweep(self._names)
        if self._session_lock is not None:
            os.close(self._session_lock)


def _pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    return read_end, write_end


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass
