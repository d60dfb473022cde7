"""Sync generators driven from a replica's event loop, closed when their consumer goes away.

A sync generator runs its body in a thread (``next`` would block the loop). When the consumer
leaves (the HTTP client disconnected, the handle's caller dropped the stream) the awaiting task
is cancelled, but the thread cannot be: the generator stays suspended, its ``finally`` (which
frees a KV-cache slot or a lock) never runs, and ``close()`` from the loop would fail with
"generator already executing" while a ``next`` is under way. ``SyncIterator`` closes it in a
thread once it is idle: at once, or right after the ``next`` in flight returns.

Starlette's ``iterate_in_threadpool`` (used by ``StreamingResponse`` over a sync iterator, and by
FastAPI) has the same fault; ``install_starlette_hook`` makes a replica process use
``iterate_in_threadpool`` below instead, and ``close_request_iterators`` closes every such
iterator a request opened when the request ends, however it ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import sys
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, TypeVar

logger = logging.getLogger("ember.serve")

T = TypeVar("T")
_END = object()

# The sync iterators opened while serving the current request (set by the replica).
_request_iterators: contextvars.ContextVar[list[SyncIterator[Any]] | None] = (
    contextvars.ContextVar("ember_serve_request_iterators", default=None))


class SyncIterator(AsyncIterator[T]):
    """``async for`` over a sync iterator whose ``next`` runs in a thread; ``aclose`` (or the
    end of the request that opened it) closes it in a thread as soon as it is idle."""

    def __init__(self, iterator: Iterator[T]) -> None:
        self._iterator = iterator
        self._lock = threading.Lock()
        self._running = False
        self._close_requested = False
        self._closed = False
        self._context = contextvars.copy_context()
        opened = _request_iterators.get()
        if opened is not None:
            opened.append(self)

    def __aiter__(self) -> SyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        with self._lock:
            if self._close_requested:
                raise StopAsyncIteration
            self._running = True
        context = contextvars.copy_context()  # the caller's (request id, model id), as to_thread
        step = asyncio.get_running_loop().run_in_executor(
            None, functools.partial(context.run, self._step))
        # Shielded: cancelling the caller must not cancel a step still queued in the executor
        # (it would never run, and nothing would ever close the iterator).
        item = await asyncio.shield(step)
        if item is _END:
            raise StopAsyncIteration
        produced: T = item  # not the end marker: what the iterator yielded
        return produced

    def _step(self) -> Any:
        item: Any = _END  # also when next() raises: a generator that raised is finished
        try:
            item = next(self._iterator, _END)
            return item
        finally:
            with self._lock:
                self._running = False
                close_now = self._close_requested and not self._closed
                self._closed = self._closed or close_now or item is _END
            if close_now:  # closed while this next() ran: close here, in its own thread
                self._close()

    def close_soon(self) -> None:
        """Close the iterator in a thread: now if it is idle, else when its ``next`` returns."""
        with self._lock:
            if self._close_requested:
                return
            self._close_requested = True
            if self._running or self._closed:
                return
            self._closed = True
        threading.Thread(target=self._close, name="ember-serve-close", daemon=True).start()

    async def aclose(self) -> None:
        self.close_soon()

    def _close(self) -> None:
        close = getattr(self._iterator, "close", None)
        if close is None:
            return
        try:
            self._context.copy().run(close)
        except Exception:  # the generator's finally failed: report it, nobody else will
            logger.exception("serve: closing a sync generator raised")

    def __del__(self) -> None:
        if not self._closed:
            try:
                self.close_soon()
            except Exception:  # interpreter shutdown: no threads to start any more
                pass


def iterate_in_threadpool(iterator: Iterable[T]) -> AsyncIterator[T]:
    """A drop-in for ``starlette.concurrency.iterate_in_threadpool`` that closes the iterator."""
    return SyncIterator(iter(iterator))


def open_request_iterators() -> contextvars.Token[list[SyncIterator[Any]] | None]:
    """Start collecting the sync iterators the current request opens."""
    return _request_iterators.set([])


def close_request_iterators(token: contextvars.Token[list[SyncIterator[Any]] | None]) -> None:
    """The request ended: close every sync iterator it opened (finished ones are no-ops)."""
    opened = _request_iterators.get() or []
    try:
        _request_iterators.reset(token)
    except ValueError:  # reset from another context: the list is ours either way
        pass
    for iterator in opened:
        iterator.close_soon()


def install_starlette_hook() -> None:
    """Make ``StreamingResponse`` (and FastAPI) in this process iterate sync iterators with
    ``iterate_in_threadpool`` above. A replica process calls this once; starlette's own
    function leaves a sync generator suspended forever when the client goes away."""
    try:
        import starlette.concurrency
        import starlette.responses
    except ImportError:  # no starlette: nothing streams through it here
        return
    for module in (starlette.concurrency, starlette.responses, sys.modules.get("fastapi.routing")):
        if module is not None and hasattr(module, "iterate_in_threadpool"):
            setattr(module, "iterate_in_threadpool", iterate_in_threadpool)  # noqa: B010
