"""``Pool``: the standard library's ``multiprocessing.Pool`` API over actors, as Ray's
``ray.util.multiprocessing.Pool``.

Each of the pool's processes is an actor that runs ``initializer(*initargs)`` once, then the
chunks of work it is handed, in order. Code written for ``multiprocessing`` ports by changing
the import, and runs on a cluster with the ray backend::

    from ember.util.multiprocessing import Pool

    def square(x):
        return x * x

    with Pool(processes=2) as pool:
        print(pool.map(square, range(10)))          # [0, 1, 4, ..., 81]
        for y in pool.imap_unordered(square, range(10)):
            print(y)                                # as each one finishes

An exception raised by the function comes back to the caller as that exception (the same
type, with the remote traceback as its ``__cause__``), as with ``multiprocessing``. A result
that is not ready within ``get(timeout)`` raises ``TimeoutError``, which is both
``multiprocessing.TimeoutError`` and the builtin ``TimeoutError``. A pool that is closed
refuses new work with ``ValueError``.

``Pool()`` starts ember (``ember.init()``, or ``ember.init(address=ray_address)``) when it
is not running yet. ``processes`` defaults to the cluster's CPUs and may not exceed them; the
actors ask for no CPU of their own unless ``ray_remote_args`` says otherwise (e.g.
``{"num_cpus": 1}``). ``context`` is accepted for compatibility and ignored.
"""

from __future__ import annotations

import itertools
import multiprocessing as _stdlib_multiprocessing
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import ember
from ember.errors import GetTimeoutError, TaskError, picklable_cause

__all__ = ["AsyncResult", "IMapIterator", "Pool", "TimeoutError"]


class TimeoutError(GetTimeoutError, _stdlib_multiprocessing.TimeoutError):
    """A pool's result was not ready in time (also ``multiprocessing.TimeoutError`` and the
    builtin ``TimeoutError``)."""


# An item's outcome: (True, value) or (False, TaskError wrapping what the function raised).
_Outcome = tuple[bool, Any]
# The calls of one chunk: (args, kwargs) each.
_Calls = list[tuple[tuple[Any, ...], dict[str, Any]]]


class _PoolProcess:
    """One process of a pool: runs the initializer once, then chunks of calls."""

    def __init__(self, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
        if initializer is not None:
            initializer(*initargs)

    def ready(self) -> bool:
        return True

    def run(self, func: Callable[..., Any],
            calls: _Calls) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        for args, kwargs in calls:
            try:
                outcomes.append((True, func(*args, **kwargs)))
            except Exception as exc:
                name = getattr(func, "__qualname__", repr(func))
                outcomes.append((False, TaskError.wrap(picklable_cause(exc), name,
                                                       traceback.format_exc())))
        return outcomes


_remote_process: Any = None


def _process_class() -> Any:
    global _remote_process
    if _remote_process is None:
        _remote_process = ember.remote(num_cpus=0)(_PoolProcess)
    return _remote_process


def _raise(failure: BaseException) -> None:
    """Raise what the function raised: its own exception (the ``TaskError`` that carries the
    remote traceback becomes its ``__cause__``), as ``multiprocessing`` does."""
    cause = failure.cause if isinstance(failure, TaskError) else None
    if cause is not None and not isinstance(cause, TaskError):
        raise cause from failure
    raise failure


def _outcomes(chunk: Any) -> list[_Outcome]:
    """The outcomes of a finished chunk; a chunk that failed as a whole (its actor died, its
    function could not be unpickled there) fails every item of it."""
    try:
        outcomes: list[_Outcome] = ember.get(chunk)
    except Exception as exc:
        return [(False, exc)]
    return outcomes


class AsyncResult:
    """The result of ``apply_async``, ``map_async`` or ``starmap_async``.

    ``get(timeout=None)`` returns it (or raises what the function raised, or ``TimeoutError``);
    ``wait(timeout=None)`` waits without raising; ``ready()`` says whether it is done and
    ``successful()`` (once ready) whether no call raised. A ``callback`` gets the result and an
    ``error_callback`` the first exception, on a thread of the pool, before ``get`` returns.
    """

    def __init__(self, chunks: list[Any], single: bool,
                 callback: Callable[[Any], None] | None = None,
                 error_callback: Callable[[BaseException], None] | None = None) -> None:
        self._chunks = chunks
        self._single = single
        self._outcome: _Outcome | None = None
        self._thread: threading.Thread | None = None
        if callback is not None or error_callback is not None:
            self._thread = threading.Thread(
                target=self._call_back, args=(callback, error_callback), daemon=True,
                name="ember-pool-callback")
            self._thread.start()

    def _call_back(self, callback: Callable[[Any], None] | None,
                   error_callback: Callable[[BaseException], None] | None) -> None:
        ok, value = self._settle()
        if ok and callback is not None:
            callback(value)
        elif not ok and error_callback is not None:
            error_callback(value.cause if isinstance(value, TaskError)
                           and value.cause is not None else value)

    def _all_done(self, timeout: float | None) -> bool:
        if not self._chunks:
            return True
        ready, _ = ember.wait(self._chunks, num_returns=len(self._chunks), timeout=timeout)
        return len(ready) == len(self._chunks)

    def _settle(self) -> _Outcome:
        if self._outcome is None:
            values: list[Any] = []
            outcome: _Outcome | None = None
            for chunk in self._chunks:
                for ok, value in _outcomes(chunk):
                    if not ok:
                        outcome = (False, value)
                        break
                    values.append(value)
                if outcome is not None:
                    break
            self._outcome = outcome or (True, values[0] if self._single else values)
        return self._outcome

    def wait(self, timeout: float | None = None) -> None:
        """Return once the result is ready or ``timeout`` seconds have passed."""
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self._all_done(timeout)

    def ready(self) -> bool:
        """Whether the result is ready (and its callback has run)."""
        if self._thread is not None:
            return not self._thread.is_alive()
        return self._all_done(0)

    def successful(self) -> bool:
        """Whether every call returned without raising; ``ValueError`` while not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} is not ready yet; wait() for it first")
        return self._settle()[0]

    def get(self, timeout: float | None = None) -> Any:
        """The result, once ready: raises ``TimeoutError`` when it is not ready within
        ``timeout`` seconds, or the exception the function raised."""
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError(f"the result was not ready within {timeout} s")
        ok, value = self._settle()
        if not ok:
            _raise(value)
        return value


class IMapIterator:
    """The results of ``imap`` (in the order of the inputs) or ``imap_unordered`` (as they
    finish). Inputs are read and handed out as results are taken, a few chunks per process
    ahead; ``next(timeout)`` raises ``TimeoutError`` when no result comes in time."""

    def __init__(self, pool: Pool, func: Callable[..., Any], iterable: Iterable[Any],
                 chunksize: int, ordered: bool) -> None:
        self._pool = pool
        self._func = func
        self._inputs = iter(iterable)
        self._chunksize = chunksize
        self._ordered = ordered
        self._running: deque[Any] = deque()  # chunk refs, in submission order
        self._results: deque[_Outcome] = deque()
        self._exhausted = False
        self._fill()

    def _fill(self) -> None:
        while not self._exhausted and len(self._running) < 2 * self._pool._processes:
            calls: _Calls = [((x,), {})
                             for x in itertools.islice(self._inputs, self._chunksize)]
            if len(calls) < self._chunksize:
                self._exhausted = True
            if calls:
                self._running.append(self._pool._submit(self._func, calls))

    def __iter__(self) -> IMapIterator:
        return self

    def __next__(self) -> Any:
        return self.next()

    def next(self, timeout: float | None = None) -> Any:
        """The next result; ``StopIteration`` after the last one."""
        if not self._results:
            if not self._running:
                raise StopIteration
            if self._ordered:
                chunk = self._running[0]
                ready, _ = ember.wait([chunk], num_returns=1, timeout=timeout)
            else:
                ready, _ = ember.wait(list(self._running), num_returns=1, timeout=timeout)
            if not ready:
                raise TimeoutError(f"no result within {timeout} s")
            chunk = ready[0]
            self._running.remove(chunk)
            self._results.extend(_outcomes(chunk))
            self._fill()
        ok, value = self._results.popleft()
        if not ok:
            _raise(value)
        return value


class Pool:
    """A pool of ``processes`` actors with ``multiprocessing.Pool``'s methods (Ray's
    ``ray.util.multiprocessing.Pool``).

    ``map``/``starmap`` split the inputs into chunks (``chunksize``, by default about four per
    process) and hand them round the processes; ``imap``/``imap_unordered`` stream the
    results; ``apply``/``apply_async`` run one call. ``maxtasksperchild`` replaces a process
    after that many chunks. ``close()`` takes no more work (the processes still finish what
    they were given), ``terminate()`` stops them at once; ``join()`` after either waits for
    the work given and lets the processes go. Leaving a ``with`` block terminates the pool.
    """

    def __init__(self, processes: int | None = None,
                 initializer: Callable[..., Any] | None = None,
                 initargs: Iterable[Any] | None = None, maxtasksperchild: int | None = None,
                 context: Any = None, ray_address: str | None = None,
                 ray_remote_args: dict[str, Any] | None = None) -> None:
        if processes is not None and (isinstance(processes, bool)
                                      or not isinstance(processes, int) or processes <= 0):
            raise ValueError(f"processes={processes!r} must be a positive number of processes")
        if maxtasksperchild is not None and (isinstance(maxtasksperchild, bool) or not
                                             isinstance(maxtasksperchild, int)
                                             or maxtasksperchild <= 0):
            raise ValueError(f"maxtasksperchild={maxtasksperchild!r} must be None or a "
                             "positive number of chunks")
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer={initializer!r} must be callable")
        if not ember.is_initialized():
            if ray_address is not None:
                ember.init(address=ray_address)
            else:
                ember.init(num_cpus=processes)
        cpus = int(ember.cluster_resources().get("CPU", 0))
        if processes is None:
            processes = max(cpus, 1)
        elif processes > cpus:
            raise ValueError(f"a pool of {processes} processes needs {processes} CPUs, and the "
                             f"cluster has {cpus}; ask for at most {cpus} processes")
        self._processes = processes
        self._initializer = initializer
        self._initargs = tuple(initargs or ())
        self._maxtasks = maxtasksperchild
        self._process_class = _process_class().options(**(ray_remote_args or {}))
        self._lock = threading.Lock()
        self._actors = [self._start_process() for _ in range(processes)]
        self._chunks_run = [0] * processes
        self._next = 0
        self._stopping: list[Any] = []  # refs that resolve once a retired process is idle
        self._closed = False
        # Fail here when the initializer raises, rather than on the first call.
        ember.get([actor.ready.remote() for actor in self._actors])

    def _start_process(self) -> Any:
        return self._process_class.remote(self._initializer, self._initargs)

    def _check_running(self) -> None:
        if self._closed:
            raise ValueError("Pool not running: it was closed or terminated; make a new Pool")

    def _retire(self, actor: Any) -> None:
        # Resolves once the actor has done the work it holds (an actor runs calls in order);
        # once its handle is dropped too, it stops.
        self._stopping.append(actor.ready.remote())

    def _submit(self, func: Callable[..., Any],
                calls: _Calls) -> Any:
        with self._lock:
            if not self._actors:  # joined: its processes are gone
                raise ValueError("Pool not running: it was closed and joined; make a new Pool")
            index = self._next
            self._next = (index + 1) % self._processes
            ref = self._actors[index].run.remote(func, calls)
            self._chunks_run[index] += 1
            if self._maxtasks is not None and self._chunks_run[index] >= self._maxtasks:
                self._retire(self._actors[index])
                self._actors[index] = self._start_process()
                self._chunks_run[index] = 0
            return ref

    def _chunks(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None,
                star: bool) -> list[Any]:
        self._check_running()
        items = list(iterable)
        if chunksize is None:
            chunksize, extra = divmod(len(items), self._processes * 4)
            chunksize += bool(extra)
        elif chunksize <= 0:
            raise ValueError(f"chunksize={chunksize!r} must be a positive number of items")
        shipped: Any = func
        if items and len(items) > chunksize > 1:  # ship the function once, not per chunk
            shipped = ember.put(func)
        calls: _Calls = [(tuple(item) if star else (item,), {}) for item in items]
        return [self._submit(shipped, calls[i:i + chunksize])
                for i in range(0, len(calls), max(chunksize, 1))]

    # -- one call ---------------------------------------------------------------------------
    def apply(self, func: Callable[..., Any], args: tuple[Any, ...] | None = None,
              kwargs: dict[str, Any] | None = None) -> Any:
        """``func(*args, **kwargs)`` in one of the processes; its result."""
        return self.apply_async(func, args, kwargs).get()

    def apply_async(self, func: Callable[..., Any], args: tuple[Any, ...] | None = None,
                    kwargs: dict[str, Any] | None = None,
                    callback: Callable[[Any], None] | None = None,
                    error_callback: Callable[[BaseException], None] | None = None,
                    ) -> AsyncResult:
        """Start ``func(*args, **kwargs)`` in one of the processes; an ``AsyncResult``."""
        self._check_running()
        ref = self._submit(func, [(tuple(args or ()), dict(kwargs or {}))])
        return AsyncResult([ref], True, callback, error_callback)

    # -- many calls -------------------------------------------------------------------------
    def map(self, func: Callable[[Any], Any], iterable: Iterable[Any],
            chunksize: int | None = None) -> list[Any]:
        """``[func(x) for x in iterable]``, computed by the processes."""
        results: list[Any] = self.map_async(func, iterable, chunksize).get()
        return results

    def map_async(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                  chunksize: int | None = None, callback: Callable[[Any], None] | None = None,
                  error_callback: Callable[[BaseException], None] | None = None,
                  ) -> AsyncResult:
        """Start ``map``; an ``AsyncResult`` of the list of results."""
        return AsyncResult(self._chunks(func, iterable, chunksize, star=False), False,
                           callback, error_callback)

    def starmap(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None) -> list[Any]:
        """``[func(*args) for args in iterable]``, computed by the processes."""
        results: list[Any] = self.starmap_async(func, iterable, chunksize).get()
        return results

    def starmap_async(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                      chunksize: int | None = None,
                      callback: Callable[[Any], None] | None = None,
                      error_callback: Callable[[BaseException], None] | None = None,
                      ) -> AsyncResult:
        """Start ``starmap``; an ``AsyncResult`` of the list of results."""
        return AsyncResult(self._chunks(func, iterable, chunksize, star=True), False,
                           callback, error_callback)

    def imap(self, func: Callable[[Any], Any], iterable: Iterable[Any],
             chunksize: int = 1) -> IMapIterator:
        """``func(x)`` for each input, yielded in the order of the inputs."""
        return self._imap(func, iterable, chunksize, ordered=True)

    def imap_unordered(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                       chunksize: int = 1) -> IMapIterator:
        """``func(x)`` for each input, yielded as each chunk finishes."""
        return self._imap(func, iterable, chunksize, ordered=False)

    def _imap(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int | None,
              ordered: bool) -> IMapIterator:
        self._check_running()
        chunksize = 1 if chunksize is None else chunksize
        if chunksize <= 0:
            raise ValueError(f"chunksize={chunksize!r} must be a positive number of items")
        return IMapIterator(self, func, iterable, chunksize, ordered)

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Take no more work; the processes finish what they were given, then stop."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for actor in self._actors:
                self._retire(actor)

    def terminate(self) -> None:
        """Stop the processes now; work still running or queued is lost."""
        self.close()
        for actor in self._actors:
            ember.kill(actor)

    def join(self) -> None:
        """Wait until the processes of a closed (or terminated) pool have stopped working."""
        if not self._closed:
            raise ValueError("Pool is still running: call close() or terminate() first")
        with self._lock:
            stopping, self._stopping = self._stopping, []
            self._actors = []
        if stopping:
            ember.wait(stopping, num_returns=len(stopping))

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def __reduce__(self) -> Any:
        raise NotImplementedError("a Pool cannot be passed to another process; pass its "
                                  "results, or make a Pool where it is used")

