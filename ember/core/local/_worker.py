"""The worker process: runs tasks, or hosts one actor, and talks to the driver over one socket.

A task worker (and an actor with ``max_concurrency=1`` and no ``async`` methods) runs work on its
main thread, which is also the thread that reads the socket: no thread hand-off on the hot path.
While such a thread waits for the driver inside user code (a nested ``get``), it keeps reading
and hands back to the driver any pipelined task it has not started, so nested work cannot
deadlock behind it. Threaded and ``async`` actors read on the main thread and run calls on a
thread pool or an event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ember.core import _api, _observe, _runtime_env, _shm
from ember.core import _serialization as ser
from ember.core._refs import DynamicObjectRefGenerator
from ember.core._remote import register_code
from ember.core.local._actor_host import ActorHostMixin, _PartialReturns
from ember.core.local._imports import after_import, importer_of
from ember.core.local._process_env import apply_env
from ember.core.local._protocol import COLLECT, ID_SHIFT, Dep, RemoteFailure, decode
from ember.core.local._transport import WorkerChannel
from ember.core.local._worker_client import TASK_NAME, ClientMixin, _Slot
from ember.errors import (
    ActorDiedError,
    EmberError,
    GetTimeoutError,
    SerializationError,
    TaskCancelledError,
    TaskError,
    picklable_cause,
)

_NO_ARGS = ser.dumps(((), {}), None, 0)[0]
_NONE = ser.dumps(None, None, 0)
_CONTROL = frozenset(("reply", "ack", "close_generator", "cancel"))
_BLOCKING = frozenset(("get", "wait", "generator_next"))


class WorkerConfig:
    """What the driver tells a new worker (picklable, sent at process start)."""

    def __init__(
        self, uid: int, names: _shm.SegmentNames, threshold: int, namespace: str, job_id: str,
        totals: dict[str, float], spin_s: float = 0.0,
        job_env: dict[str, Any] | None = None,
    ) -> None:
        self.uid = uid
        self.job_env = job_env
        self.spin_s = spin_s
        self.names = names
        self.threshold = threshold
        self.namespace = namespace
        self.job_id = job_id
        self.totals = totals
        self.output_fds = 0  # observe: pipes for stdout/stderr that follow the socket
        # Workers import what the driver can: same import path and working directory.
        self.sys_path = list(sys.path)
        self.cwd = os.getcwd()


class WorkerRuntime(ClientMixin, ActorHostMixin):
    """The core API as seen from inside a worker: every call goes through the driver."""

    name = "local"

    def __init__(self, chan: WorkerChannel, config: WorkerConfig) -> None:
        self._chan = chan
        self._cfg = config
        self._names = config.names
        self._ids = itertools.count(1)
        self._id_base = config.uid << ID_SHIFT
        self._functions: dict[str, Any] = {}
        self._code_known_by_driver: set[str] = set()
        self._counts: dict[int, int] = {}
        self._counts_lock = threading.RLock()  # __del__ may run in any thread, even nested
        self._deltas: deque[tuple[int, int]] = deque()
        self._send_lock = threading.Lock()
        self._signalled = False
        self._signal_pending = False  # a cancel signal came while no user code ran
        self._async_calls: dict[int, asyncio.Future[Any]] = {}  # running calls of an async actor
        self._cond = threading.Condition()
        self._sleepers = 0  # threads inside self._cond.wait_for (changed under self._cond)
        self._slots: dict[int, _Slot] = {}
        self._prefetched: dict[int, tuple[Any, bool]] = {}
        self._inbox: deque[tuple[Any, ...]] = deque()
        self._read_lock = threading.Lock()  # held by the one thread reading the socket
        self._main_waiting = False  # the main thread is blocked inside a task (nested get)
        self._acks: dict[int, int] = {}
        self._closed_generators: set[int] = set()
        self._cancel_requested: set[int] = set()
        self._main_ident = threading.get_ident()
        self._inline = True  # the main thread both reads and runs work
        self._is_task_worker = True
        self._local = threading.local()
        self._executing = False
        self._instance: Any = None
        self._actor_id: int | None = None
        self._actor_restarted = False
        self._actor_name = ""
        self._pool: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_limit: asyncio.Semaphore | None = None
        self._original_cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
        self._gpu_ids: tuple[str, ...] = ()
        self._exiting = False
        self._call_names: dict[str, str] = {}
        self._actor_env: dict[str, Any] | None = None

    # -- sending ------------------------------------------------------------------------
    def _send(self, messages: list[Any]) -> None:
        # Increments go before the messages and decrements after them (under one lock), so a
        # message never reaches the driver after the last count of a reference it carries:
        # a task returning a ref it just created must not see that ref freed in between.
        with self._send_lock:
            deltas = self._deltas
            if deltas:
                ups: list[tuple[int, int]] = []
                downs: list[tuple[int, int]] = []
                while deltas:
                    try:
                        delta = deltas.popleft()
                    except IndexError:
                        break
                    (ups if delta[1] > 0 else downs).append(delta)
                messages = [("refs", ups), *messages, ("refs", downs)]
            if messages:
                try:
                    self._chan.send_many(messages)
                except OSError:
                    self._driver_gone()

    def _new_id(self) -> int:
        return self._id_base | next(self._ids)

    # -- reading ------------------------------------------------------------------------
    def _read_one(self, timeout: float | None = None) -> tuple[Any, ...] | None:
        frame = self._chan.recv(timeout)
        if frame is None:
            self._driver_gone()
        message: tuple[Any, ...] = decode(frame)  # type: ignore[arg-type]
        if message[0] in _CONTROL:
            self._control(message)
            return None
        return message

    def _control(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        with self._cond:
            if kind == "reply":
                slot = self._slots.pop(message[1], None)
                if slot is not None:
                    slot.payload = message[2]
                    slot.done = True
                    if slot.callback is not None:
                        try:
                            slot.callback(message[2])
                        except Exception:  # a user callback must not stop this reader
                            traceback.print_exc()
            elif kind == "ack":
                gen = message[1]
                self._acks[gen] = max(self._acks.get(gen, 0), message[2])
            elif kind == "close_generator":
                self._closed_generators.add(message[1])
            elif kind == "cancel":
                self._cancel_requested.add(message[1])
                running = self._async_calls.get(message[1])
                if running is not None and self._loop is not None:
                    self._loop.call_soon_threadsafe(running.cancel)
            if self._sleepers:
                self._cond.notify_all()

    def _route(self, message: tuple[Any, ...]) -> None:
        """Work read by a waiting thread: queue it for the main thread, or, when the main
        thread is itself blocked inside a task, give pipelined tasks back to the driver."""
        if message[0] == "task" and self._is_task_worker and self._main_waiting:
            self._send([("requeue", [message[1]])])
            return
        with self._cond:
            self._inbox.append(message)
            if self._sleepers:
                self._cond.notify_all()

    def _read_turn(
        self, timeout: float | None, ready: Callable[[], bool]
    ) -> tuple[Any, ...] | None:
        """Read one message if no other thread is reading (then route it); else wait until the
        reader hands over or delivers something. The read lock means any thread that waits
        can read: a user's thread calling ember.get never depends on the main thread being
        free, and the main thread never depends on another thread."""
        if not self._read_lock.acquire(blocking=False):
            with self._cond:
                # Counted before the predicate runs: a reader that releases the lock after
                # this sees the count and notifies; one that released it before, the predicate
                # sees. (Python's GIL orders these plain reads and writes.)
                self._sleepers += 1
                try:
                    self._cond.wait_for(lambda: ready() or not self._read_lock.locked(), timeout)
                finally:
                    self._sleepers -= 1
            return None
        try:
            return self._read_one(timeout)
        finally:
            self._read_lock.release()
            if self._sleepers:  # nobody to hand over to in a single-threaded worker
                with self._cond:
                    self._cond.notify_all()

    def _wait_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait for the driver to make ``predicate`` true, reading the socket when it is free."""
        main = threading.get_ident() == self._main_ident
        if main:
            self._main_waiting = True
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not predicate():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                try:
                    message = self._read_turn(remaining, predicate)
                except TimeoutError:
                    return False
                if message is not None:
                    self._route(message)
            return True
        finally:
            if main:
                self._main_waiting = False

    def _read_available(self) -> None:
        """Take in what the driver has sent so far, without waiting: control messages act at
        once, work is queued. Does nothing while another thread is reading."""
        if not self._read_lock.acquire(blocking=False):
            return
        try:
            while True:
                try:
                    message = self._read_one(0)
                except TimeoutError:
                    return
                if message is not None:
                    self._route(message)
        finally:
            self._read_lock.release()
            if self._sleepers:
                with self._cond:
                    self._cond.notify_all()

    def _start_user_code(self, work_id: int) -> None:
        """Mark the user code of task ``work_id`` as running (a cancel signal then interrupts
        it), unless the task was cancelled: then raise ``TaskCancelledError``.

        A signal that came while no user code ran is matched with the driver's cancel message,
        which was sent ahead of it: it may have meant this task or one that already ended.
        """
        while self._signal_pending:
            self._signal_pending = False
            self._read_available()
        if work_id in self._cancel_requested:
            self._cancel_requested.discard(work_id)
            self._signalled = True
            raise TaskCancelledError("the task was cancelled before it started")
        self._executing = True
        if self._signal_pending:  # it came just now, after the look above: it meant this task
            self._signal_pending = False
            self._signalled = True
            raise TaskCancelledError("the task was cancelled as it started")

    def is_canceled(self) -> bool:
        """Whether the running task or actor call was cancelled (``RuntimeContext.is_canceled``)."""
        if self._loop is not None:
            raise RuntimeError("is_canceled() is not available in an async actor: ember.cancel "
                               "raises asyncio.CancelledError in the cancelled call instead")
        work_id = getattr(self._local, "task_id", None)
        if work_id is None:
            raise RuntimeError("is_canceled() is only available inside a task or an actor method")
        if work_id not in self._cancel_requested:
            self._read_available()
        return work_id in self._cancel_requested

    def _request(self, kind: str, payload: Any, timeout: float | None = None) -> Any:
        rid = next(self._ids)
        slot = _Slot()
        with self._cond:
            self._slots[rid] = slot
        messages: list[Any] = []
        if kind in _BLOCKING and self._is_task_worker and self._inbox and (
            threading.get_ident() == self._main_ident
        ):
            with self._cond:
                queued = [m for m in self._inbox if m[0] == "task"]
                if queued:
                    kept = [m for m in self._inbox if m[0] != "task"]
                    self._inbox.clear()
                    self._inbox.extend(kept)
                    messages.append(("requeue", [m[1] for m in queued]))
        messages.append(("request", rid, kind, payload))
        self._send(messages)
        if not self._wait_until(lambda: slot.done, timeout):
            with self._cond:
                self._slots.pop(rid, None)
            raise GetTimeoutError(f"no answer from the driver within {timeout} s")
        result = slot.payload
        if isinstance(result, RemoteFailure):
            raise result.error
        return result

    def _driver_gone(self) -> None:
        # The driver died or closed the session: remove this session's objects and leave.
        _shm.sweep(self._names)
        os._exit(0)

    # -- main loop ------------------------------------------------------------------------
    def run(self) -> None:
        self._send([("ready", os.getpid())])
        while not self._exiting:
            if self._inbox:
                self._dispatch(self._inbox.popleft())
                continue
            if self._deltas:
                self._send([])
            message = self._read_turn(None, lambda: bool(self._inbox))
            if message is not None:
                self._dispatch(message)
        self._finish()

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "task":
            self._run_task(message)
        elif kind == "call":
            if self._inline:
                self._run_call(message)
            elif self._loop is not None:
                asyncio.run_coroutine_threadsafe(self._run_call_async(message), self._loop)
            else:
                assert self._pool is not None
                self._pool.submit(self._run_call, message)
        elif kind == "actor":
            self._create_actor(message)
        elif kind == "exit":
            if self._inline:
                self._exiting = True
            else:  # calls still running may need this thread to read their replies
                threading.Thread(target=self._finish, name="ember-actor-exit").start()

    def _finish(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._loop is not None:
            loop = self._loop

            async def drain() -> None:
                current = asyncio.current_task()
                pending = [t for t in asyncio.all_tasks() if t is not current]
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)

            asyncio.run_coroutine_threadsafe(drain(), loop).result()
            loop.call_soon_threadsafe(loop.stop)
        _observe.flush()  # observe: what this actor's metrics and views changed last
        self._send([])
        os._exit(0)

    # -- running tasks ----------------------------------------------------------------------
    def _load_function(self, fn_id: str, code: bytes | None) -> Any:
        fn = self._functions.get(fn_id)
        if fn is None:
            import cloudpickle

            if code is None:  # pragma: no cover - the driver always sends code first
                raise EmberError(f"function {fn_id} arrived without its code")
            fn = self._functions[fn_id] = cloudpickle.loads(code)
            register_code(fn_id, fn, code)
        return fn

    def _load_args(
        self, args: ser.Stored, deps: Sequence[tuple[ser.Stored, bool]]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if not deps and args[0] == _NO_ARGS:
            return (), {}
        values: list[Any] = []
        for stored, is_error in deps:
            value = ser.loads(stored, self._names)
            if is_error:
                raise value
            values.append(value)
        a, kw = ser.loads(args, self._names)
        if values:
            a = tuple(values[x.index] if type(x) is Dep else x for x in a)
            kw = {k: (values[v.index] if type(v) is Dep else v) for k, v in kw.items()}
        return a, kw

    def _set_gpus(self, gpu_ids: tuple[str, ...]) -> None:
        if gpu_ids == self._gpu_ids:
            return
        self._gpu_ids = gpu_ids
        if gpu_ids:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
        elif self._original_cuda is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = self._original_cuda

    def _error(self, exc: BaseException, name: str) -> ser.Stored:
        signalled, self._signalled = self._signalled, False
        if isinstance(exc, TaskError) or (isinstance(exc, TaskCancelledError) and signalled):
            error: BaseException = exc
        else:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            if sys.version_info < (3, 11):  # 3.10's traceback module does not print notes yet
                tb += "".join(f"{note}\n" for note in getattr(exc, "__notes__", ()))
            error = TaskError.wrap(picklable_cause(exc), name, tb)
        try:
            return ser.dumps(error, self._names, self._cfg.threshold)
        except SerializationError:
            return ser.dumps(TaskError(name, str(exc)), None, 0)

    def _exit_actor(self, call_id: int, gen_id: int | None, name: str, exc: SystemExit
                    ) -> None:
        """``sys.exit()`` or ``ember.actor.exit_actor()`` in an actor method ends the actor's
        process, as in Ray. ``exit_actor()`` is an intended exit: this call fails with
        ``ActorDiedError``, so do the calls queued behind it, and the actor is not restarted.
        ``sys.exit(code)`` is a process exit like any other: the actor restarts if its
        ``max_restarts`` allows."""
        if not isinstance(exc, _api.ActorExit):
            self._send([])
            os._exit(exc.code if isinstance(exc.code, int) else int(exc.code is not None))
        reason = f"{name} called exit_actor()"
        error = ser.dumps(ActorDiedError(f"the actor exited: {reason}"), None, 0)
        last = ("item", gen_id, -1, error, True) if gen_id is not None else (
            "done", call_id, None, error, 0.0)
        self._send([("actor_exit", reason), last])
        os._exit(0)

    def _user_iterator(self, produced: Any, name: str, declared: str) -> Any:
        """What a generator function returned, as a sync iterator (an async generator runs on
        this worker's loop); a ``TypeError`` naming the function when it is no generator."""
        if hasattr(produced, "__anext__"):
            return _sync_iter(produced, self._loop)
        if not hasattr(produced, "__next__"):
            raise TypeError(f"{name} {declared} but returned {type(produced).__name__}; make "
                            "it a generator function (use yield)")
        return produced

    def _user_items(self, produced: Any, stop: Callable[[], bool] | None = None
                    ) -> Iterator[Any]:
        """The items of a user's generator: each ``next`` runs as user code (a cancel signal
        interrupts it there and nowhere else). ``stop`` is asked before each item."""
        while stop is None or not stop():
            self._executing = True
            try:
                item = next(produced)
            except StopIteration:
                return
            finally:
                self._executing = False
            yield item

    def _store_returns(self, result: Any, return_ids: Sequence[int], name: str,
                       keep: list[Any] | None = None) -> Any:
        """The stored returns of ``result``. The caller keeps ``result`` (and what ``keep``
        collects: a generator's items) alive until its "done" is sent: a ref they hold must
        not be released before the driver has the value that holds it."""
        n = len(return_ids)
        if n > 1 and inspect.isgenerator(result):
            return self._store_yielded(result, n, name, [] if keep is None else keep)
        if n == 1:
            if result is None:
                return (_NONE,)
            values: Sequence[Any] = (result,)
        elif n == 0:
            values = ()
        else:
            if not isinstance(result, (tuple, list)) or len(result) != n:
                got = f"{len(result)} values" if isinstance(result, (tuple, list)) else (
                    f"a {type(result).__name__}")
                raise ValueError(
                    f"{name} was declared with num_returns={n} but returned {got}; "
                    f"return a tuple of exactly {n} values"
                )
            values = result
        return tuple(self._store_return(v, name) for v in values)

    def _store_yielded(self, produced: Any, n: int, name: str, keep: list[Any]
                       ) -> tuple[ser.Stored, ...]:
        """Ray's static ``num_returns=n`` on a generator function: its first n items are the n
        returns. An error after k < n items goes to the other n - k returns (``_PartialReturns``);
        items past the n-th, and an error after them, are dropped with a warning, as Ray only
        logs them."""
        stored: list[ser.Stored] = []
        extra = 0
        late_error: BaseException | None = None
        try:
            for item in self._user_items(produced):
                if len(stored) < n:
                    stored.append(self._store_return(item, name))
                    keep.append(item)
                else:
                    extra += 1
        except BaseException as exc:
            if len(stored) < n:
                raise _PartialReturns(tuple(stored), exc) from None
            late_error = exc
        finally:
            produced.close()
        if extra or late_error is not None:
            dropped = f"{extra} items past the first {n}" if extra else ""
            if late_error is not None:
                dropped += (" and " if dropped else "") + (
                    f"the {type(late_error).__name__} raised after them: {late_error}")
            print(f"ember: {name} was declared with num_returns={n}; {dropped} dropped",
                  file=sys.stderr, flush=True)
        if len(stored) < n:
            raise ValueError(f"{name} was declared with num_returns={n} but yielded "
                             f"{len(stored)} items; yield exactly {n}")
        return tuple(stored)

    def _store_return(self, value: Any, name: str) -> ser.Stored:
        ser.refuse_generator(value, name)
        try:
            return ser.dumps(value, self._names, self._cfg.threshold)
        except SerializationError as exc:
            raise SerializationError(
                f"the value that {name} returned could not be pickled: {exc}"
            ) from exc.__cause__

    def _call_user(self, fn: Callable[..., Any], a: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        try:
            if self._is_task_worker:
                self._start_user_code(self._local.task_id)
            else:
                self._executing = True
            result = fn(*a, **kw)
            if inspect.iscoroutine(result):  # not asyncio.iscoroutine: true for generators
                result = asyncio.run(result)
            return result
        finally:
            self._executing = False

    def _run(
        self, work_id: int, fn: Callable[..., Any] | None, method: str | None,
        args: ser.Stored, deps: Any, return_ids: Sequence[int], gen_id: int | None,
        name: str, backpressure: int,
    ) -> None:
        started = time.perf_counter()
        results = error = value = None
        keep: list[Any] = []
        self._local.task_id = work_id
        named = TASK_NAME.set(name if method is None else self._ray_call_name(method))
        try:
            if work_id in self._cancel_requested and self._is_task_worker:
                self._cancel_requested.discard(work_id)
                self._signalled = True
                raise TaskCancelledError(f"{name} was cancelled before it started")
            a, kw = self._load_args(args, deps)
            if fn is None:
                fn = getattr(self._instance, method)  # type: ignore[arg-type]
            assert fn is not None
            if gen_id is not None:
                self._stream(work_id, gen_id, fn, a, kw, name, backpressure)
            else:
                # ``value`` lives until "done" is sent: refs in it must not be released first.
                # (Another thread's send carries the releases queued so far, and a release of
                # a ref the result holds, seen before the result, would free that object.)
                value = (self._collect(fn, a, kw, name) if backpressure == COLLECT
                         else self._call_user(fn, a, kw))
                results = self._store_returns(value, return_ids, name, keep)
        except _PartialReturns as partial:
            results, error = partial.stored, self._error(partial.cause, name)
        except BaseException as exc:
            if isinstance(exc, SystemExit) and not self._is_task_worker:
                self._exit_actor(work_id, gen_id, name, exc)
            error = self._error(exc, name)
            if gen_id is not None:
                self._send([("item", gen_id, -1, error, True)])
                error = None
        finally:
            TASK_NAME.reset(named)
            self._local.task_id = None
            self._cancel_requested.discard(work_id)
        self._send([("done", work_id, results, error, time.perf_counter() - started)])

    def _stream(
        self, work_id: int, gen_id: int, fn: Callable[..., Any], a: tuple[Any, ...],
        kw: dict[str, Any], name: str, backpressure: int,
    ) -> None:
        try:
            if self._is_task_worker:
                self._start_user_code(work_id)
            else:
                self._executing = True
            produced = fn(*a, **kw)
        finally:
            self._executing = False
        produced = self._user_iterator(produced, name, "was called as a streaming generator")
        index = 0
        try:
            for item in self._user_items(produced,
                                         stop=lambda: gen_id in self._closed_generators):
                stored = ser.dumps(item, self._names, self._cfg.threshold)
                self._send([("item", gen_id, index, stored, False)])
                index += 1
                if backpressure > 0:
                    floor = index - backpressure
                    self._wait_until(
                        lambda floor=floor: self._acks.get(gen_id, 0) > floor  # type: ignore[misc]
                        or gen_id in self._closed_generators
                        or work_id in self._cancel_requested
                    )
                if self._is_task_worker and work_id in self._cancel_requested:
                    self._cancel_requested.discard(work_id)
                    self._signalled = True
                    raise TaskCancelledError(f"{name} was cancelled while it streamed")
        finally:
            close = getattr(produced, "close", None)
            if close is not None:
                close()
            self._closed_generators.discard(gen_id)
            self._acks.pop(gen_id, None)

    def _collect(
        self, fn: Callable[..., Any], a: tuple[Any, ...], kw: dict[str, Any], name: str
    ) -> DynamicObjectRefGenerator:
        """Run a ``num_returns="dynamic"`` generator to its end: each item becomes an object."""
        produced = self._call_user(fn, a, kw)
        produced = self._user_iterator(produced, name,
                                       "was declared with num_returns='dynamic'")
        refs = []
        try:
            for item in self._user_items(produced):
                refs.append(self.put(item))
        except Exception as exc:
            # As in Ray, the error of a dynamic generator is its last object: the items it
            # yielded before stay readable. (A cancel, a BaseException, fails the whole task.)
            if isinstance(exc, TaskCancelledError):
                raise
            refs.append(self.put_error(self._error(exc, name)))
        finally:
            close = getattr(produced, "close", None)
            if close is not None:
                close()
        return DynamicObjectRefGenerator(refs)

    def _run_task(self, message: tuple[Any, ...]) -> None:
        (_, task_id, fn_id, code, args, deps, return_ids, gen_id, gpu_ids, name,
         backpressure, env) = message
        self._set_gpus(gpu_ids)
        # The task's runtime_env holds while its code loads (imports may need it) and runs,
        # and is undone after: the next task on this worker starts from the job's state.
        restore = apply_env(_runtime_env.local_plan(env)) if env else None
        self._local.runtime_env = env
        try:
            try:
                fn = self._load_function(fn_id, code)
            except BaseException as exc:
                self._send([("done", task_id, None, self._error(exc, name), 0.0)])
                return
            self._run(task_id, fn, None, args, deps, return_ids, gen_id, name, backpressure)
        finally:
            self._local.runtime_env = None
            if restore is not None:
                restore()

    def _current_env(self) -> dict[str, Any] | None:
        """The runtime_env of the running task or of this actor (what children inherit)."""
        if self._is_task_worker:
            return getattr(self._local, "runtime_env", None)
        return self._actor_env

def _sync_iter(agen: Any, loop: asyncio.AbstractEventLoop | None) -> Any:
    runner = asyncio.new_event_loop() if loop is None else None
    try:
        while True:
            coro = agen.__anext__()
            try:
                if runner is not None:
                    item = runner.run_until_complete(coro)
                else:
                    assert loop is not None
                    item = asyncio.run_coroutine_threadsafe(coro, loop).result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if runner is not None:
            runner.close()


def _on_cancel_signal(signum: int, frame: Any) -> None:
    runtime = _current_worker
    if runtime is None:
        return
    if runtime._executing:
        importer = importer_of(frame)
        if importer is not None and sys.gettrace() is None:
            # Raised inside the import, the cancel would leave that package half-imported in
            # this worker (see _imports): it lands at the next line of the code that imported.
            after_import(importer, lambda: _cancel_after_import(runtime))
            return
        runtime._signalled = True
        raise TaskCancelledError("the task was cancelled while it ran")
    runtime._signal_pending = True  # the next task to start checks whether it was meant


def _cancel_after_import(runtime: WorkerRuntime) -> None:
    if runtime._executing:  # the task did not end meanwhile
        runtime._signalled = True
        raise TaskCancelledError("the task was cancelled while it ran (after the import it "
                                 "was in had finished)")


_current_worker: WorkerRuntime | None = None


def worker_main(sock: Any, config: WorkerConfig) -> None:
    """Entry point of every worker process (started from the fork server)."""
    global _current_worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the driver
    signal.signal(signal.SIGUSR1, _on_cancel_signal)
    sys.path[:] = config.sys_path
    try:
        os.chdir(config.cwd)
    except OSError:
        pass
    apply_env(_runtime_env.local_plan(config.job_env))  # ember.init(runtime_env=...)
    chan = WorkerChannel(sock)
    runtime = WorkerRuntime(chan, config)
    _current_worker = runtime
    _api._set_worker_backend(runtime)
    # observe: metrics and library views made here reach the driver in batches
    _observe.set_sender(lambda batch: runtime._send([("observe", batch)]))
    try:
        runtime.run()
    except BaseException:  # a bug in the worker itself: say so on stderr, then leave
        traceback.print_exc()
        os._exit(1)
