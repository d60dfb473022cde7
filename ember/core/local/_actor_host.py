"""The actor side of a worker process: creating the actor it hosts, and running its calls on
the main thread, a thread pool or an event loop."""

# WorkerRuntime is one class split by concern into mixins and its process loop (see
# _worker_client.py); methods declare `self: WorkerRuntime` so that mypy checks them against the
# whole class, which mypy reports under "misc", off for this module only.
# mypy: disable-error-code="misc"

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ember.core import _runtime_env
from ember.core import _serialization as ser
from ember.core._refs import DynamicObjectRefGenerator
from ember.core._remote import register_code
from ember.core.local._process_env import apply_env
from ember.core.local._protocol import COLLECT
from ember.core.local._worker_client import TASK_NAME
from ember.errors import TaskCancelledError

if TYPE_CHECKING:
    from ember.core.local._worker import WorkerRuntime


class _PartialReturns(Exception):
    """A generator declared with ``num_returns=n`` raised ``cause`` after ``stored`` (fewer
    than n items): those become its first returns and the error the rest."""

    def __init__(self, stored: tuple[ser.Stored, ...], cause: BaseException) -> None:
        super().__init__(f"{len(stored)} items, then {type(cause).__name__}")
        self.stored = stored
        self.cause = cause


class ActorHostMixin:
    # Set here when the actor starts, declared by WorkerRuntime.__init__ as None beforehand.
    _pool: ThreadPoolExecutor | None
    _loop: asyncio.AbstractEventLoop | None
    _async_limit: asyncio.Semaphore | None

    def _create_actor(self: WorkerRuntime, message: tuple[Any, ...]) -> None:
        (_, actor_id, _class_id, code, args, deps, max_concurrency, gpu_ids, name, _namespace,
         restarted, is_async, env, registered_name) = message
        self._is_task_worker = False
        self._actor_id = actor_id
        self._actor_restarted = restarted
        self._actor_name = registered_name
        self._set_gpus(gpu_ids)
        if env:  # for the actor's whole life: this process is its own
            apply_env(_runtime_env.local_plan(env))
            self._actor_env = env
        try:
            import cloudpickle

            cls = cloudpickle.loads(code)
            register_code(_class_id, cls, code)
            a, kw = self._load_args(args, deps)
            self._executing = True
            try:
                self._instance = cls(*a, **kw)
            finally:
                self._executing = False
        except BaseException as exc:
            self._send([("actor_failed", actor_id, self._error(exc, f"{name}.__init__"))])
            self._exiting = True
            return
        if is_async:
            self._start_loop(max_concurrency or 1000)
        elif max_concurrency and max_concurrency > 1:
            self._inline = False
            self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="ember-actor")
        else:  # one call at a time on this thread: poll briefly for the next one
            self._chan.spin = self._cfg.spin_s
        self._send([("actor_ready", actor_id)])

    def _start_loop(self: WorkerRuntime, limit: int) -> None:
        loop = _new_actor_loop()
        ready = threading.Event()

        def run_loop() -> None:
            asyncio.set_event_loop(loop)
            self._async_limit = asyncio.Semaphore(limit)
            ready.set()
            loop.run_forever()

        threading.Thread(target=run_loop, name="ember-actor-loop", daemon=True).start()
        ready.wait()
        self._loop = loop
        self._inline = False

    def _call_name(self: WorkerRuntime, method: str) -> str:
        name = self._call_names.get(method)
        if name is None:
            name = self._call_names[method] = f"{type(self._instance).__qualname__}.{method}"
        return name

    def _ray_call_name(self: WorkerRuntime, method: str) -> str:
        """``Class.method``, as Ray's ``get_task_name()`` names an actor call."""
        return f"{type(self._instance).__name__}.{method}"

    def _run_call(self: WorkerRuntime, message: tuple[Any, ...]) -> None:
        _, call_id, method, args, deps, return_ids, gen_id, backpressure = message
        self._run(call_id, None, method, args, deps, return_ids, gen_id, self._call_name(method),
                  backpressure)

    async def _run_call_async(self: WorkerRuntime, message: tuple[Any, ...]) -> None:
        _, call_id, method, args, deps, return_ids, gen_id, backpressure = message
        name = self._call_name(method)
        TASK_NAME.set(self._ray_call_name(method))  # this asyncio task's own context
        assert self._async_limit is not None
        started = time.perf_counter()
        results = error = None
        keep: list[Any] = []  # a generator's items, alive until "done" is sent (_store_returns)
        running = asyncio.current_task()
        assert running is not None
        self._async_calls[call_id] = running  # ember.cancel cancels it (see _control)
        try:
            async with self._async_limit:
                if call_id in self._cancel_requested:
                    raise asyncio.CancelledError
                fn = getattr(self._instance, method)
                a, kw = self._load_args(args, deps)
                if gen_id is not None:
                    await self._stream_async(gen_id, fn, a, kw, name, backpressure)
                elif backpressure == COLLECT:
                    produced = fn(*a, **kw)
                    if hasattr(produced, "__anext__"):
                        refs = [self.put(item) async for item in produced]
                    else:
                        refs = [self.put(item) for item in produced]
                    results = self._store_returns(DynamicObjectRefGenerator(refs), return_ids,
                                                  name)
                else:
                    result = fn(*a, **kw)
                    if inspect.isawaitable(result):
                        result = await result
                    results = self._store_returns(result, return_ids, name, keep)
        except _PartialReturns as partial:
            results, error = partial.stored, self._error(partial.cause, name)
        except BaseException as exc:
            if isinstance(exc, SystemExit):
                self._exit_actor(call_id, gen_id, name, exc)
            if isinstance(exc, asyncio.CancelledError) and call_id in self._cancel_requested:
                self._signalled = True
                exc = TaskCancelledError(f"{name} was cancelled")
            error = self._error(exc, name)
            if gen_id is not None:
                self._send([("item", gen_id, -1, error, True)])
                error = None
        finally:
            self._async_calls.pop(call_id, None)
            self._cancel_requested.discard(call_id)
        self._send([("done", call_id, results, error, time.perf_counter() - started)])

    async def _stream_async(
        self: WorkerRuntime, gen_id: int, fn: Callable[..., Any], a: tuple[Any, ...], kw: dict[str, Any],
        name: str, backpressure: int,
    ) -> None:
        produced = fn(*a, **kw)
        index = 0
        is_async = hasattr(produced, "__anext__")
        try:
            while gen_id not in self._closed_generators:
                try:
                    item = await produced.__anext__() if is_async else next(produced)
                except (StopAsyncIteration, StopIteration):
                    break
                stored = ser.dumps(item, self._names, self._cfg.threshold)
                self._send([("item", gen_id, index, stored, False)])
                index += 1
                if backpressure > 0 and self._acks.get(gen_id, 0) <= index - backpressure:
                    target = index - backpressure
                    await asyncio.to_thread(
                        self._wait_until,
                        lambda target=target: self._acks.get(gen_id, 0) > target
                        or gen_id in self._closed_generators,
                    )
        finally:
            if is_async:
                await produced.aclose()
            else:
                produced.close()
            self._closed_generators.discard(gen_id)


def _new_actor_loop() -> asyncio.AbstractEventLoop:
    """An async actor's event loop: uvloop where it is installed (the serve extra brings it).
    Its turns, timers and socket reads cost a fraction of the stdlib loop's (which allocates
    256 KiB per read): a serve replica spends most of its time per request there."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
