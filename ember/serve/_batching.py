"""``@serve.batch``: callers pass one item each, the decorated method receives them as a list.

``BatchPolicy`` is the decision part, pure (time is passed in): when a batch starts and which
waiting calls it takes. The rule:

- a batch starts only while fewer than ``max_concurrent_batches`` batches run;
- it takes the oldest waiting calls, at most ``max_batch_size`` of them, in arrival order;
- it starts as soon as ``max_batch_size`` calls wait, or once the oldest waiting call has waited
  ``batch_wait_timeout_s`` counted from its arrival or from the moment a batch slot last became
  free for it, whichever is later (a call never waits for batch-mates longer than that while it
  could run).

The plumbing below (``batch``) keeps one queue per instance and event loop, follows the policy
on that loop, and hands each caller its own result, exception or stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import math
import weakref
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ember.serve import _multiplex

# What a streaming batch handler puts in a caller's slot to end that caller's stream (Ray's).
STREAM_END = (StopIteration, StopAsyncIteration)


def _check_settings(max_batch_size: Any, batch_wait_timeout_s: Any,
                    max_concurrent_batches: Any = 1) -> None:
    if not isinstance(max_batch_size, int) or isinstance(max_batch_size, bool) \
            or max_batch_size < 1:
        raise ValueError(f"max_batch_size={max_batch_size!r} must be an integer >= 1")
    if not isinstance(batch_wait_timeout_s, (int, float)) or isinstance(
            batch_wait_timeout_s, bool) or not batch_wait_timeout_s >= 0 \
            or math.isinf(batch_wait_timeout_s):
        raise ValueError(f"batch_wait_timeout_s={batch_wait_timeout_s!r} must be a finite "
                         "number of seconds >= 0")
    if not isinstance(max_concurrent_batches, int) or isinstance(max_concurrent_batches, bool) \
            or max_concurrent_batches < 1:
        raise ValueError(f"max_concurrent_batches={max_concurrent_batches!r} must be an "
                         "integer >= 1")


@dataclass
class BatchPolicy:
    """When the next batch starts and what it holds (see the module's docstring for the rule).

    Events in: ``arrive``, ``leave``, ``batch_finished``, ``configure``; decisions out:
    ``next_batch(now)`` (the keys of a batch to start now, or ``None``) and ``wake_at()`` (the
    time at which ``next_batch`` will have a batch if no other event happens first).
    """

    max_batch_size: int = 10
    batch_wait_timeout_s: float = 0.01
    max_concurrent_batches: int = 1
    _waiting: OrderedDict[Hashable, float] = field(default_factory=OrderedDict, repr=False)
    _running: int = 0
    _free_since: float = -math.inf  # since when a batch slot has been free (while one is)

    def __post_init__(self) -> None:
        _check_settings(self.max_batch_size, self.batch_wait_timeout_s,
                        self.max_concurrent_batches)

    def configure(self, max_batch_size: int | None = None,
                  batch_wait_timeout_s: float | None = None) -> None:
        """New settings; they apply to the calls already waiting too."""
        size = self.max_batch_size if max_batch_size is None else max_batch_size
        wait = self.batch_wait_timeout_s if batch_wait_timeout_s is None else batch_wait_timeout_s
        _check_settings(size, wait)
        self.max_batch_size, self.batch_wait_timeout_s = size, wait

    def arrive(self, key: Hashable, now: float) -> None:
        if key in self._waiting:
            raise ValueError(f"call {key!r} is already waiting")
        self._waiting[key] = now

    def leave(self, key: Hashable) -> bool:
        """The caller gave up. True when it was still waiting (it is no longer); False when it
        is not waiting (already in a batch, or unknown)."""
        return self._waiting.pop(key, None) is not None

    def batch_finished(self, now: float) -> None:
        if self._running <= 0:
            raise ValueError("batch_finished() without a running batch")
        if self._running == self.max_concurrent_batches:
            self._free_since = now
        self._running -= 1

    def wake_at(self) -> float | None:
        """When ``next_batch`` will return a batch unless another event comes first; ``None``
        when only an event can make one (nothing waits, or every slot is busy)."""
        if not self._waiting or self._running >= self.max_concurrent_batches:
            return None
        oldest = next(iter(self._waiting.values()))
        start = max(oldest, self._free_since)
        if len(self._waiting) >= self.max_batch_size:
            return start
        return start + self.batch_wait_timeout_s

    def next_batch(self, now: float) -> list[Hashable] | None:
        """The keys of the batch to start now, oldest first, or ``None``."""
        due = self.wake_at()
        if due is None or now < due:
            return None
        size = min(self.max_batch_size, len(self._waiting))
        keys = list(itertools.islice(self._waiting, size))
        for key in keys:
            del self._waiting[key]
        self._running += 1
        return keys

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return self._running


# --------------------------------------------------------------------------------------------
# The plumbing.


class _Stream:
    """One caller's share of a streaming batch: the items for it, then its end."""

    def __init__(self) -> None:
        self.items: deque[Any] = deque()
        self.ready = asyncio.Event()
        self.ended = False
        self.error: BaseException | None = None
        self.gone = False  # the caller stopped listening

    def push(self, item: Any) -> None:
        self.items.append(item)
        self.ready.set()

    def end(self, error: BaseException | None = None) -> None:
        if not self.ended:
            self.ended, self.error = True, error
            self.ready.set()


@dataclass
class _Call:
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    model_id: str
    future: asyncio.Future[Any] | None = None
    stream: _Stream | None = None

    @property
    def abandoned(self) -> bool:
        if self.stream is not None:
            return self.stream.gone or self.stream.ended
        return self.future is None or self.future.done()


class _Settings:
    """What ``@serve.batch`` was given; the setters change it for every queue of the handler."""

    def __init__(self, max_batch_size: int, batch_wait_timeout_s: float,
                 max_concurrent_batches: int) -> None:
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.max_concurrent_batches = max_concurrent_batches
        self.queues: weakref.WeakSet[_BatchQueue] = weakref.WeakSet()

    def __getstate__(self) -> dict[str, Any]:  # shipped to replicas: without live queues
        return {k: v for k, v in self.__dict__.items() if k != "queues"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.queues = weakref.WeakSet()

    def update(self, max_batch_size: int | None = None,
               batch_wait_timeout_s: float | None = None) -> None:
        _check_settings(self.max_batch_size if max_batch_size is None else max_batch_size,
                        self.batch_wait_timeout_s if batch_wait_timeout_s is None
                        else batch_wait_timeout_s)
        if max_batch_size is not None:
            self.max_batch_size = max_batch_size
        if batch_wait_timeout_s is not None:
            self.batch_wait_timeout_s = batch_wait_timeout_s
        for queue in list(self.queues):
            queue.reconfigure()


class _BatchQueue:
    """The waiting calls of one handler (one instance, one event loop), run as the policy says."""

    def __init__(self, handler: Callable[..., Any], signature: inspect.Signature,
                 settings: _Settings, streaming: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self._handler = handler
        self._signature = signature
        self._settings = settings
        self._streaming = streaming
        self.policy = BatchPolicy(settings.max_batch_size, settings.batch_wait_timeout_s,
                                  settings.max_concurrent_batches)
        self._calls: dict[int, _Call] = {}
        self._keys = itertools.count()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        settings.queues.add(self)

    def put(self, call: _Call) -> int:
        key = next(self._keys)
        self._calls[key] = call
        self.policy.arrive(key, self.loop.time())
        self._kick()
        return key

    def leave(self, key: int) -> None:
        """The caller went away; a call still waiting leaves the queue."""
        if self.policy.leave(key):
            self._calls.pop(key, None)
            self._kick()

    def reconfigure(self) -> None:
        """The settings changed: apply them on this queue's loop (a sync ``reconfigure`` runs
        in a thread of its own)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self._apply_settings()
        elif not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile: nothing waits
                self.loop.call_soon_threadsafe(self._apply_settings)

    def _apply_settings(self) -> None:
        self.policy.configure(self._settings.max_batch_size, self._settings.batch_wait_timeout_s)
        self._kick()

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = self.loop.create_task(self._form_batches())
        else:
            self._wakeup.set()

    async def _form_batches(self) -> None:
        while True:
            self._wakeup.clear()
            now = self.loop.time()
            while (keys := self.policy.next_batch(now)) is not None:
                calls = [self._calls.pop(k) for k in keys]  # type: ignore[call-overload]
                task = self.loop.create_task(self._run_batch(calls))
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)
            if self.policy.waiting == 0:
                return  # a new call starts this task again
            wake = self.policy.wake_at()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(),
                                       None if wake is None else max(0.0, wake - now))

    async def _run_batch(self, calls: list[_Call]) -> None:
        try:
            groups: dict[str, list[_Call]] = {}
            for call in calls:
                if not call.abandoned:
                    groups.setdefault(call.model_id, []).append(call)
            run = self._run_stream if self._streaming else self._run_once
            # one slot for the whole batch, however many models its calls name (as Ray does)
            await asyncio.gather(*(run(group) for group in groups.values()))
        finally:
            self.policy.batch_finished(self.loop.time())
            self._kick()

    def _batched_arguments(self, calls: list[_Call]) -> tuple[list[Any], dict[str, Any]]:
        """One list per parameter, in the order of ``calls``. A parameter that some calls gave
        and others left out takes its default for those."""
        bound = [self._signature.bind_partial(*c.args, **c.kwargs).arguments for c in calls]
        given = {name for b in bound for name in b}
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for name, param in self._signature.parameters.items():
            if name not in given:
                continue
            values = []
            for b in bound:
                if name in b:
                    values.append(b[name])
                elif param.default is not inspect.Parameter.empty:
                    values.append(param.default)
                else:
                    raise TypeError(f"a call to the batched function left out argument "
                                    f"{name!r}, which other calls in its batch gave")
            if param.kind is inspect.Parameter.KEYWORD_ONLY:
                kwargs[name] = values
            else:
                args.append(values)
        return args, kwargs

    def _results(self, results: Any, size: int) -> Sequence[Any]:
        if not isinstance(results, Sequence) or isinstance(results, (str, bytes)) \
                or len(results) != size:
            got = (f"a {type(results).__name__} of length {len(results)}"
                   if isinstance(results, Sequence) else f"a {type(results).__name__}")
            raise TypeError(f"the batched function {_name(self._handler)} was given {size} "
                            f"items and returned {got}; return a list with one result per "
                            "item, in the same order")
        return results

    async def _run_once(self, calls: list[_Call]) -> None:
        _multiplex.set_multiplexed_model_id(calls[0].model_id)
        try:
            args, kwargs = self._batched_arguments(calls)
            results = self._results(await self._handler(*args, **kwargs), len(calls))
        except Exception as exc:
            for call in calls:
                assert call.future is not None
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        for call, result in zip(calls, results, strict=True):
            assert call.future is not None
            if not call.future.done():
                call.future.set_result(result)

    async def _run_stream(self, calls: list[_Call]) -> None:
        _multiplex.set_multiplexed_model_id(calls[0].model_id)
        streams = [call.stream for call in calls]
        generator: Any = None
        try:
            args, kwargs = self._batched_arguments(calls)
            generator = self._handler(*args, **kwargs)
            step = generator.__anext__()
            while True:
                outputs = self._results(await step, len(calls))
                for stream, output in zip(streams, outputs, strict=True):
                    assert stream is not None
                    if stream.gone or stream.ended:
                        continue
                    if output in STREAM_END or isinstance(output, STREAM_END):
                        stream.end()
                    else:
                        stream.push(output)
                if all(s is not None and (s.gone or s.ended) for s in streams):
                    break  # nobody listens any more: closing the generator runs its finally
                gone = frozenset(i for i, s in enumerate(streams) if s is not None and s.gone)
                step = generator.asend(gone)
        except StopAsyncIteration:
            pass
        except Exception as exc:
            for stream in streams:
                assert stream is not None
                stream.end(exc)
        finally:
            if generator is not None:
                with contextlib.suppress(Exception):
                    await generator.aclose()
            for stream in streams:
                assert stream is not None
                stream.end()


class _Queues(dict[str, Any]):
    """Where a batched function keeps its queue: shipped to a replica empty."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Queues, ())


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", repr(func))


def batch(
    _func: Callable[..., Any] | None = None,
    /,
    max_batch_size: int = 10,
    batch_wait_timeout_s: float = 0.01,
    max_concurrent_batches: int = 1,
) -> Any:
    """Batch the calls of an ``async def`` method or function: each caller passes one item and
    gets one result; the function receives a list per parameter and returns a list of results.

    A batch starts when ``max_batch_size`` calls wait, or when the oldest has waited
    ``batch_wait_timeout_s``; at most ``max_concurrent_batches`` batches run at once. Calls for
    different multiplexed models go to separate calls of the function (each sees its own
    ``serve.get_multiplexed_model_id()``). If the function raises, every caller of that batch
    gets the exception. ``handler.set_max_batch_size(n)`` and
    ``handler.set_batch_wait_timeout_s(s)`` change the settings (from ``reconfigure``, say).

    ::

        @serve.deployment
        class Model:
            @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
            async def predict(self, inputs: list[str]) -> list[str]:
                return [s.upper() for s in inputs]

            async def __call__(self, request):
                return await self.predict(await request.body())   # one item in, one out

    **Streaming**: an ``async def`` generator yields one list per step, one item per caller;
    each caller iterates its own stream (``async for token in self.generate(prompt)``). Yield
    ``StopIteration`` in a caller's slot to end that caller's stream. A caller that stops
    listening leaves the batch without disturbing the others, and the generator learns it:
    ``yield`` evaluates to the set of positions whose callers have gone, so it can drop their
    work; when every caller has gone the generator is closed (its ``finally`` runs).
    """
    if _func is not None and not callable(_func):
        raise TypeError(f"@serve.batch decorates an async function or method, got {_func!r}")
    _check_settings(max_batch_size, batch_wait_timeout_s, max_concurrent_batches)

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        streaming = inspect.isasyncgenfunction(func)
        if not (streaming or inspect.iscoroutinefunction(func)):
            raise TypeError(
                f"@serve.batch needs an 'async def' function or async generator; "
                f"{_name(func)} is neither: make it 'async def'")
        signature = inspect.signature(func)
        params = list(signature.parameters.values())
        is_method = bool(params) and params[0].name == "self"
        if is_method:
            params = params[1:]
        if not params or any(p.kind in (inspect.Parameter.VAR_POSITIONAL,
                                        inspect.Parameter.VAR_KEYWORD) for p in params):
            raise TypeError(f"@serve.batch: {_name(func)} must take named parameters (one "
                            "list per parameter), without *args or **kwargs")
        item_signature = signature.replace(parameters=params)
        settings = _Settings(max_batch_size, batch_wait_timeout_s, max_concurrent_batches)
        attr = f"__ember_batch_queue_{func.__name__}"
        loose = _Queues()  # the function's queue (a method's live in its instance)

        def queue_for(args: tuple[Any, ...]) -> tuple[_BatchQueue, tuple[Any, ...]]:
            loop = asyncio.get_running_loop()
            if is_method:
                if not args:
                    raise TypeError(f"{_name(func)} is a method: call it on an instance")
                instance, args = args[0], args[1:]
                holder = instance.__dict__
                handler: Callable[..., Any] = functools.partial(func, instance)
            else:
                holder, handler = loose, func
            queue = holder.get(attr)
            if queue is None or queue.loop is not loop:
                queue = holder[attr] = _BatchQueue(handler, item_signature, settings, streaming)
            return queue, args

        def make_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call:
            try:
                item_signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{_name(func)}: each caller passes one item per parameter: "
                                f"{exc}") from None
            return _Call(args, kwargs, _multiplex.get_multiplexed_model_id())

        if streaming:

            @functools.wraps(func)
            async def stream_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                queue, args = queue_for(args)
                call = make_call(args, kwargs)
                stream = call.stream = _Stream()
                key = queue.put(call)
                try:
                    while True:
                        while not stream.items:
                            if stream.ended:
                                if stream.error is not None:
                                    raise stream.error
                                return
                            stream.ready.clear()
                            await stream.ready.wait()
                        yield stream.items.popleft()
                finally:
                    stream.gone = True
                    queue.leave(key)

            wrapper: Any = stream_wrapper
        else:

            @functools.wraps(func)
            async def call_wrapper(*args: Any, **kwargs: Any) -> Any:
                queue, args = queue_for(args)
                call = make_call(args, kwargs)
                future = call.future = queue.loop.create_future()
                key = queue.put(call)
                try:
                    return await future
                finally:
                    if not future.done():
                        future.cancel()
                    queue.leave(key)

            wrapper = call_wrapper

        wrapper.set_max_batch_size = lambda n: settings.update(max_batch_size=n)
        wrapper.set_batch_wait_timeout_s = lambda s: settings.update(batch_wait_timeout_s=s)
        wrapper._get_max_batch_size = lambda: settings.max_batch_size
        wrapper._get_batch_wait_timeout_s = lambda: settings.batch_wait_timeout_s
        decorated: Callable[..., Any] = wrapper
        return decorated

    return decorate(_func) if _func is not None else decorate
