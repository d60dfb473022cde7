"""The local driver's I/O layer: worker processes and their sockets, the reactor thread, the
callers that read a socket themselves (direct reads and claims), and timers.

It carries out what the scheduler (``_scheduler.py``) decides. Every locked section ends in
``leave``: the references dropped meanwhile are released, the scheduler's instructions are
carried out (start a process, kill one, signal one, wake a reader, start a timer) and each
worker's outbox goes out in one write. What arrives (a worker's messages, the fork server's
notices, a timer) becomes a scheduler event, under the same lock.

Threads: the caller's threads submit work and send it straight to a worker when one is free;
one reactor thread reads every worker socket, hands what arrives to the scheduler and sends
what that unblocks. Both run under one lock that is held only for bookkeeping (sockets are
non-blocking).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import os
import select
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from ember.core import _serialization as ser
from ember.core import _shm
from ember.core.local._forkserver import ForkServer
from ember.core.local._protocol import RemoteFailure, decode
from ember.core.local._records import _Work, _Worker
from ember.core.local._scheduler import INTERRUPT, KILL, SPAWN, TIMER, WAKE, Scheduler
from ember.core.local._state import LocalObserver
from ember.core.local._transport import DriverChannel, SpinGate
from ember.core.local._worker import WorkerConfig
from ember.errors import BackendError

logger = logging.getLogger("ember")

_READ = select.EPOLLIN
_HANGUP = select.EPOLLHUP | select.EPOLLERR
# A claimed socket (see DriverIO.claim) goes back to the reactor when its claim has not been
# taken up for this long; the reactor looks this often while actors exist.
_CLAIM_TICK = 0.05


class Conn:
    """A worker's process as the I/O layer sees it: its socket, its pid, who reads it."""

    __slots__ = ("chan", "claim", "claim_time", "closing", "direct", "doomed", "eof", "exitcode",
                 "fd", "pid", "poller", "spin_gate", "uid", "worker")

    def __init__(self, worker: _Worker, chan: DriverChannel) -> None:
        self.worker = worker
        self.uid = worker.uid
        self.chan = chan
        self.fd = chan.fileno()
        self.direct: int | None = None  # wake pipe of a caller reading this socket itself
        self.poller: tuple[Any, int, int] | None = None  # (poll object, wake pipe r, w)
        # Whether a caller reading this socket directly spins first (see _transport.SpinGate).
        self.spin_gate = SpinGate()
        # The object id of a call's result whose caller is expected to read the reply itself
        # (see DriverIO.claim); the reactor does not watch the socket meanwhile.
        self.claim: int | None = None
        self.claim_time = 0.0
        self.closing = False
        self.pid: int | None = None
        self.eof = False
        self.doomed = False  # killed before its pid was known: kill it once the pid arrives
        self.exitcode: int | None = None

    def release(self) -> None:
        """Close the descriptors, unless a caller is polling them directly: then that caller
        closes them when it stops (so their numbers cannot be reused under its feet)."""
        if self.direct is not None:
            self.closing = True
        else:
            self.close()

    def close(self) -> None:
        self.chan.close()
        if self.poller is not None:
            os.close(self.poller[1])
            os.close(self.poller[2])
            self.poller = None


class Waiter:
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


def kill_process(conn: Conn) -> None:
    if conn.pid is None:
        conn.doomed = True
        return
    try:
        os.kill(conn.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class DriverIO:
    """Sockets, processes, the reactor thread and timers of one local runtime."""

    def __init__(
        self, sched: Scheduler, lock: threading.Lock, names: _shm.SegmentNames,
        session_lock: int | None, observer: LocalObserver,
        worker_config: Callable[[int], WorkerConfig],
    ) -> None:
        self._sched = sched
        self._lock = lock
        self._observer = observer
        self._worker_config = worker_config
        self.closed = False
        self.broken: BackendError | None = None  # set when the fork server is gone
        self.conns: dict[int, Conn] = {}  # by worker uid
        self._pids: dict[int, Conn] = {}
        self.decrefs: deque[Any] = deque()  # object ids, or ("actor", id)
        self.deferred: list[Callable[[], None]] = []  # run after the lock is released
        self.claimed: set[Conn] = set()
        self._timers: list[list[Any]] = []
        self._timer_seq = itertools.count()
        # The scheduler's output, read in every locked section: aliases, never rebound.
        self._dirty = sched.dirty
        self._instructions = sched.instructions
        # Raw epoll (thread-safe to modify from any thread) and who owns each descriptor.
        self._epoll = select.epoll()
        self._owners: dict[int, Conn | str] = {}
        self._wake_r, self._wake_w = _pipe()
        self._watch_fd(self._wake_r, "wake")
        self.forkserver = ForkServer(names, session_lock)
        self._watch_fd(self.forkserver.fileno(), "forkserver")
        self._reactor = threading.Thread(target=self._reactor_loop, name="ember-reactor",
                                         daemon=True)

    def start(self) -> None:
        self._reactor.start()

    # -- the end of every locked section -----------------------------------------------------
    def leave(self) -> list[Callable[[], None]]:
        """End of a locked section: apply queued decrefs, carry out the scheduler's
        instructions, send queued messages; returns what to run once the lock is released."""
        decrefs = self.decrefs
        sched = self._sched
        while decrefs:
            try:
                oid = decrefs.popleft()
            except IndexError:
                break
            if type(oid) is tuple:
                sched.release_actor(oid[1])
            else:
                self.release(oid)
        if self._instructions:
            self._execute()
        dirty = self._dirty
        for worker in dirty:
            if worker.outbox:
                messages, worker.outbox = worker.outbox, []
                conn = worker.conn
                if conn is None:  # its process could not be started
                    continue
                if not conn.chan.send_many(messages) and conn.fd in self._owners:
                    if conn.claim is not None:
                        self.unclaim(conn)
                    self._epoll.modify(conn.fd, _READ | select.EPOLLOUT)
        dirty.clear()
        deferred, self.deferred = self.deferred, []
        return deferred

    def unlock(self) -> None:
        if not (self.decrefs or self._dirty or self._instructions or self.deferred):
            self._lock.release()  # nothing queued: just leave
            return
        try:
            deferred = self.leave()
        finally:
            self._lock.release()
        for callback in deferred:
            callback()

    def unlock_keep(self) -> None:
        """Flush inside a ``with lock`` block (the with statement releases the lock)."""
        for callback in self.leave():
            self.deferred.append(callback)

    def run_deferred(self) -> None:
        if self.deferred and self._lock.acquire(blocking=False):
            self.unlock()

    def _execute(self) -> None:
        """Carry out the scheduler's instructions (see _scheduler's docstring)."""
        instructions = self._instructions
        batch = instructions[:]
        instructions.clear()
        for instruction in batch:
            kind = instruction[0]
            if kind == SPAWN:
                self._start_process(instruction[1])
                continue
            if kind == TIMER:
                self._add_timer(instruction[1], instruction[2])
                continue
            conn = instruction[1].conn
            if conn is None:  # its process could not be started
                continue
            if kind == KILL:
                kill_process(conn)
            elif kind == INTERRUPT and conn.pid is not None:
                # After the outboxes are sent: the worker finds the cancel message first.
                self.deferred.append(functools.partial(_interrupt, conn.pid))
            elif kind == WAKE and conn.direct is not None:  # a caller reads its socket itself
                _poke(conn.direct)

    def release(self, oid: int) -> None:
        """Drop one reference to ``oid`` (lock held)."""
        if self.claimed:  # nobody will read this result directly any more
            self._unclaim_object(oid)
        self._sched.release(oid)

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    # -- processes --------------------------------------------------------------------------
    def _start_process(self, worker: _Worker) -> None:
        uid = worker.uid
        try:
            parent, child = socket.socketpair()
        except OSError as exc:  # out of descriptors, say
            self._cannot_start(worker, exc)
            return
        try:
            output = self._observer.on_spawn(uid, worker.actor)  # observe: its output pipes
        except OSError as exc:
            parent.close()
            child.close()
            self._cannot_start(worker, exc)
            return
        config = self._worker_config(uid)
        config.output_fds = len(output)
        self.forkserver.spawn(uid, config, child, output)
        child.close()
        for fd in output:
            os.close(fd)
        conn = Conn(worker, DriverChannel(parent))
        worker.conn = conn
        self.conns[uid] = conn
        self._watch_fd(conn.fd, conn)

    def _cannot_start(self, worker: _Worker, exc: OSError) -> None:
        """As if the process died at once; what it would have run learns that it did."""
        logger.error("ember: cannot start a worker process: %s", exc)
        self._sched.worker_exited(worker, None)

    def _watch_fd(self, fd: int, owner: Conn | str) -> None:
        self._owners[fd] = owner
        self._epoll.register(fd, _READ)

    def _unwatch_fd(self, fd: int) -> None:
        if self._owners.pop(fd, None) is not None:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass

    def _on_forkserver(self, notices: list[tuple[Any, ...]] | None) -> None:
        if notices is None:
            if not self.closed and self.broken is None:
                self._unwatch_fd(self.forkserver.fileno())
                self._fail_everything(BackendError(
                    f"ember's fork server exited (exit code {self.forkserver.exit_code()}), so "
                    "no worker can start: see its error output above; then call "
                    "ember.shutdown() and ember.init() again"))
            return
        for kind, key, value in notices:
            if kind == "spawned":
                conn = self.conns.get(key)
                if conn is not None:
                    conn.pid = value
                    self._pids[value] = conn
                    self._observer.on_pid(conn)  # observe
                    if conn.doomed:
                        kill_process(conn)
            elif kind == "exit":
                gone = self._pids.pop(key, None)
                if gone is not None:
                    gone.exitcode = value
                    if gone.eof:
                        self._on_worker_exit(gone)

    def _fail_everything(self, error: BackendError) -> None:
        """The runtime cannot go on (lock held): every value still to come fails with ``error``
        and every later call raises it, so that nothing waits forever."""
        logger.error("ember: %s", error)
        self.broken = error
        self._sched.fail_all(ser.dumps(error, None, 0))

    def _on_worker_eof(self, conn: Conn) -> None:
        # The socket closed; the fork server's exit notice (with the exit code) follows.
        conn.eof = True
        if conn.claim is not None:  # no caller polls it yet: nobody else will close it
            conn.claim = None
            self.claimed.discard(conn)
            conn.direct = None
        self._unwatch_fd(conn.fd)
        if conn.exitcode is not None or conn.pid is None:
            self._on_worker_exit(conn)

    def _on_worker_exit(self, conn: Conn) -> None:
        if self.conns.pop(conn.uid, None) is None:
            return
        self._observer.on_exit(conn)  # observe
        conn.release()
        worker = conn.worker
        if self.claimed and worker.held:  # the references it held go: so do their claims
            for oid in worker.held:
                self._unclaim_object(oid)
        self._sched.worker_exited(worker, conn.exitcode)

    # -- messages from workers -------------------------------------------------------------
    def read_worker(self, conn: Conn, notify: bool = True) -> None:
        """Handle what a worker sent (with the lock held), from the reactor or a direct waiter."""
        frames = conn.chan.read()
        if frames is None:
            self._on_worker_eof(conn)
        else:
            conns = self.conns
            for frame in frames:
                self._on_message(conn, decode(frame))
                if conn.uid not in conns:
                    break
        if notify and conn.direct is not None:  # a caller polls this socket: tell it to look
            _poke(conn.direct)

    def _on_message(self, conn: Conn, message: tuple[Any, ...]) -> None:
        kind = message[0]
        sched = self._sched
        if kind == "done":
            sched.on_done(conn.worker, message[1], message[2], message[3], message[4])
        elif kind == "refs":
            if self.claimed:
                for oid, delta in message[1]:
                    if delta < 0:
                        self._unclaim_object(oid)
            sched.on_refs(conn.worker, message[1])
        elif kind == "item":
            sched.on_item(message[1], message[2], message[3], message[4])
        elif kind == "request":
            if self.claimed:  # it may wait for a claimed result
                self.release_claims()
            if message[2] == "state":  # observe: ember.util.state called inside a worker
                try:
                    answer: Any = self._observer.query(*message[3])
                except Exception as exc:
                    answer = RemoteFailure(exc)
                sched.reply(conn.worker, message[1], answer)
            else:
                sched.on_request(conn.worker, message[1], message[2], message[3])
        elif kind == "submit":
            if message[1][4] and self.claimed:  # a claimed result may be among its arguments
                self.release_claims()
            sched.on_submit(conn.worker, message[1])
        elif kind == "call":
            if message[1][4] and self.claimed:
                self.release_claims()
            sched.on_call(conn.worker, message[1])
        elif kind == "put":
            sched.on_put(conn.worker, message[1], message[2], len(message) > 3 and message[3])
        elif kind == "actor_exit":  # sys.exit() or exit_actor() in a method: no restart
            sched.on_actor_exit(conn.worker, message[1])
        elif kind == "requeue":
            sched.on_requeue(conn.worker, message[1])
        elif kind == "ready":
            if conn.pid is None:  # the fork server's notice may come later: kill needs it
                conn.pid = message[1]
                self._pids[message[1]] = conn
                if conn.doomed:
                    kill_process(conn)
            sched.on_ready(conn.worker)
        elif kind == "actor_ready":
            sched.on_actor_ready(message[1])
        elif kind == "actor_failed":
            sched.on_actor_failed(message[1], message[2])
        elif kind == "observe":  # observe: a worker's metrics and library views
            self._observer.on_observe(conn, message[1])

    # -- timers ----------------------------------------------------------------------------------
    def _add_timer(self, delay: float, callback: Callable[[], None]) -> None:
        entry = [time.monotonic() + delay, next(self._timer_seq), callback]
        heapq.heappush(self._timers, entry)
        self.wake()

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, callback = heapq.heappop(self._timers)
            callback()

    # -- the reactor thread ------------------------------------------------------------------------
    def _reactor_loop(self) -> None:
        epoll = self._epoll
        sched = self._sched
        while True:
            timeout = -1.0
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            if sched.live_actors and not 0 <= timeout <= _CLAIM_TICK:
                timeout = _CLAIM_TICK  # a claim may be made while this thread sleeps
            events = epoll.poll(timeout)
            if self.closed:
                return
            self._lock.acquire()
            try:
                self._handle(events)
            except Exception:  # a bug here must not kill the reactor silently
                logger.exception("ember reactor: internal error (please report it)")
            finally:
                try:
                    self.unlock()
                except Exception:
                    logger.exception("ember reactor: internal error (please report it)")

    def _handle(self, events: list[tuple[int, int]]) -> None:
        for fd, mask in events:
            owner = self._owners.get(fd)
            if owner is None:
                continue
            if owner == "wake":
                _drain(self._wake_r)
            elif owner == "forkserver":
                self._on_forkserver(self.forkserver.read())
            elif isinstance(owner, Conn):
                if mask & select.EPOLLOUT and owner.chan.flush():
                    self._epoll.modify(fd, 0 if owner.direct is not None else _READ)
                if mask & (_READ | _HANGUP):
                    self.read_worker(owner)
        self._run_timers()
        if self.claimed:
            self._expire_claims()

    # -- direct reads --------------------------------------------------------------------------
    # A synchronous actor call is ``get(actor.method.remote())``: the reply is best read by the
    # calling thread itself (see wait_direct). Taking the socket from the reactor only in
    # ``get`` leaves a window after the call is sent in which the reply wakes the reactor
    # thread, which then competes with the caller for the lock and the GIL. So the
    # submission of a call to an idle actor already takes the socket from the reactor (a
    # "claim"), before the call leaves; ``get`` of that call's result takes the claim up. Any
    # other wait (another get, wait, await, a worker's request), a dropped result, or a claim
    # left alone for _CLAIM_TICK gives the socket back, so nothing the worker sends can wait
    # for long on a caller that went elsewhere.
    def claim(self, work: _Work) -> None:
        """Claim the socket of ``work``'s actor for its caller (lock held, before sending)."""
        actor = work.actor
        worker = actor.worker if actor is not None else None
        if worker is None or actor is None:
            return
        conn: Conn | None = worker.conn
        if (conn is None or conn.direct is not None or len(work.return_ids) != 1
                or work.gen_id is not None or conn.eof or conn.fd not in self._owners
                or conn.chan.has_pending() or len(actor.inflight) != 1
                or work.id not in actor.inflight):
            return
        conn.direct = self._poller(conn)[2]
        conn.claim = work.return_ids[0]
        conn.claim_time = time.monotonic()
        self.claimed.add(conn)
        self._epoll.modify(conn.fd, 0)

    def unclaim(self, conn: Conn) -> None:
        """Give a claimed socket back to the reactor (lock held)."""
        conn.claim = None
        self.claimed.discard(conn)
        self.end_direct(conn)

    def _unclaim_object(self, oid: int) -> None:
        for conn in list(self.claimed):
            if conn.claim == oid:
                self.unclaim(conn)

    def release_claims(self, keep: int | None = None) -> None:
        """Give every claimed socket back, except the one claimed for object ``keep``."""
        for conn in list(self.claimed):
            if conn.claim != keep:
                self.unclaim(conn)

    def _expire_claims(self) -> None:
        limit = time.monotonic() - _CLAIM_TICK
        for conn in list(self.claimed):
            if conn.claim_time <= limit:
                self.unclaim(conn)

    def take_direct(self, oid: int) -> tuple[Conn, int] | None:
        """Let the caller read the reply for ``oid`` itself (lock held): disables the reactor's
        interest in the producing worker's socket and returns (its record, wake pipe)."""
        sched = self._sched
        work = sched.producer.get(oid)
        if work is None:
            return None
        worker = None
        if work.actor is not None:
            if work.id in work.actor.inflight:
                worker = work.actor.worker
                conn = worker.conn if worker is not None else None
                if conn is not None and conn.claim == oid:  # already set up at submission
                    assert conn.poller is not None
                    conn.claim = None
                    self.claimed.discard(conn)
                    return conn, conn.poller[1]
        else:
            worker = next((w for w in sched.workers.values()
                           if w.inflight and w.inflight[0] is work), None)
        if worker is None:
            return None
        conn = worker.conn
        if (conn is None or conn.direct is not None or conn.eof
                or conn.fd not in self._owners or conn.chan.has_pending()):
            return None
        poller = self._poller(conn)
        conn.direct = poller[2]
        self._epoll.modify(conn.fd, 0)
        return conn, poller[1]

    @staticmethod
    def _poller(conn: Conn) -> tuple[Any, int, int]:
        if conn.poller is None:  # made once per worker, reused by every direct wait
            wake_r, wake_w = _pipe()
            poller = select.poll()
            poller.register(conn.fd, select.POLLIN)
            poller.register(wake_r, select.POLLIN)
            conn.poller = (poller, wake_r, wake_w)
        return conn.poller

    def wait_direct(self, waiter: Waiter, source: tuple[Conn, int], timeout: float | None,
                    spin: float) -> bool:
        """Wait for ``waiter`` by polling the producing worker's socket in this thread: the
        reply is handled here, with no hand-off from the reactor thread."""
        conn, wake_r = source
        assert conn.poller is not None
        poller = conn.poller[0]
        deadline = None if timeout is None else time.monotonic() + timeout
        lock = self._lock
        handed_back = False
        try:
            while waiter.count > 0:
                events = None
                if spin:  # catch a quick reply on an awake CPU
                    events = conn.spin_gate.spin(
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
                    if conn.eof or conn.uid not in self.conns or self.closed:
                        break
                    self.read_worker(conn, notify=False)
                    if waiter.count <= 0:  # done: give the socket back in this locked section
                        self.end_direct(conn)
                        handed_back = True
                finally:
                    self.unlock()
            if waiter.count > 0:  # the worker went away: its failure resolves the waiter
                return waiter.wait(
                    None if deadline is None else max(0.0, deadline - time.monotonic()))
            return True
        finally:
            if not handed_back:
                with lock:
                    self.end_direct(conn)

    def end_direct(self, conn: Conn) -> None:
        """The caller stops reading ``conn``'s socket (lock held): the reactor takes over."""
        conn.direct = None
        if conn.closing:  # it exited while we held its descriptors: close them now
            conn.close()
        elif conn.fd in self._owners and not self.closed:
            self._epoll.modify(conn.fd, _READ | (
                select.EPOLLOUT if conn.chan.has_pending() else 0))

    # -- shutdown --------------------------------------------------------------------------------
    def close(self, conns: Iterable[Conn]) -> None:
        """After ``closed`` is set and the scheduler shut down: stop the reactor, kill the
        workers, close every descriptor."""
        self.wake()
        self._reactor.join(5)
        for conn in conns:
            kill_process(conn)
            conn.close()
        self.forkserver.close()  # it reaps (and, if needed, kills) every worker it started
        self._observer.close()  # observe: reads what the workers left in their output pipes
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _interrupt(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        pass


def _poke(fd: int) -> None:
    try:
        os.write(fd, b"x")
    except OSError:
        pass


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
