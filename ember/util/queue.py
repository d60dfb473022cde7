"""``Queue``: a first-in, first-out queue that tasks and actors share, as Ray's
``ray.util.queue``.

The items live in an ``async`` actor; a ``Queue`` object is a handle to it and may be passed
to tasks and actors. A blocking ``get`` or ``put`` waits in the actor without holding a
thread there::

    from ember.util.queue import Empty, Queue

    q = Queue(maxsize=100)
    producer.remote(q)  # calls q.put(item)
    item = q.get(timeout=5)  # raises Empty after 5 s without an item
"""

from __future__ import annotations

import asyncio
import queue as _stdlib_queue
from collections.abc import Iterable
from typing import Any

import ember
from ember.errors import EmberError

__all__ = ["Empty", "Full", "Queue"]


class Empty(EmberError, _stdlib_queue.Empty):
    """No item came within the timeout (or ``get_nowait`` found the queue empty)."""


class Full(EmberError, _stdlib_queue.Full):
    """No room came within the timeout (or ``put_nowait`` found the queue full)."""


class _QueueActor:
    """Holds the items; its blocking calls wait on the actor's event loop."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.items: asyncio.Queue[Any] = asyncio.Queue(maxsize)

    async def qsize(self) -> int:
        return self.items.qsize()

    async def put(self, item: Any, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self.items.put(item), timeout)
        except asyncio.TimeoutError:
            raise Full(f"the queue stayed full for {timeout} s") from None

    async def get(self, timeout: float | None = None) -> Any:
        try:
            return await asyncio.wait_for(self.items.get(), timeout)
        except asyncio.TimeoutError:
            raise Empty(f"no item came within {timeout} s") from None

    async def put_nowait(self, item: Any) -> None:
        try:
            self.items.put_nowait(item)
        except asyncio.QueueFull:
            raise Full(f"the queue is full ({self.maxsize} items)") from None

    async def put_nowait_batch(self, items: list[Any]) -> None:
        if self.maxsize > 0 and len(items) + self.items.qsize() > self.maxsize:
            raise Full(f"{len(items)} items do not fit: the queue holds "
                       f"{self.items.qsize()} of at most {self.maxsize}")
        for item in items:
            self.items.put_nowait(item)

    async def get_nowait(self) -> Any:
        try:
            return self.items.get_nowait()
        except asyncio.QueueEmpty:
            raise Empty("the queue is empty") from None

    async def get_nowait_batch(self, num_items: int) -> list[Any]:
        if num_items > self.items.qsize():
            raise Empty(f"asked for {num_items} items but the queue holds "
                        f"{self.items.qsize()}")
        return [self.items.get_nowait() for _ in range(num_items)]


class Queue:
    """A FIFO queue of at most ``maxsize`` items (0: no bound), held by an actor.

    ``actor_options`` are the options of that actor (``num_cpus``, ``name``, ...). Blocking
    calls take ``block`` and ``timeout`` as ``queue.Queue``'s do and raise ``Empty`` or
    ``Full`` (subclasses of the standard library's) when time runs out.
    """

    def __init__(self, maxsize: int = 0, actor_options: dict[str, Any] | None = None) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
            raise ValueError(f"maxsize={maxsize!r} must be an integer >= 0 (0: no bound)")
        self.maxsize = maxsize
        actor_class = _queue_actor_class()
        if actor_options:
            actor_class = actor_class.options(**actor_options)
        self.actor: Any = actor_class.remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """How many items the queue holds now."""
        return int(_answer(self.actor.qsize.remote()))

    qsize = size

    def empty(self) -> bool:
        """Whether the queue holds no item right now.

        >>> from ember.util.queue import Queue
        >>> queue = Queue(maxsize=2)
        >>> queue.empty()
        True
        >>> queue.put_nowait("job-1"); queue.put("job-2"); queue.full()
        True
        >>> queue.get_nowait(), queue.get(), queue.empty()
        ('job-1', 'job-2', True)
        """
        return self.size() == 0

    def full(self) -> bool:
        """Whether the queue holds ``maxsize`` items right now (never, with no ``maxsize``)."""
        return 0 < self.maxsize <= self.size()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item``; when the queue is full, wait (``block``) up to ``timeout`` seconds
        for room, then raise ``Full``."""
        if not block:
            return self.put_nowait(item)
        _check_timeout(timeout)
        _answer(self.actor.put.remote(item, timeout))

    async def put_async(self, item: Any, block: bool = True,
                        timeout: float | None = None) -> None:
        """``put`` for ``async`` code."""
        if not block:
            await _answer_async(self.actor.put_nowait.remote(item))
            return
        _check_timeout(timeout)
        await _answer_async(self.actor.put.remote(item, timeout))

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Take the oldest item; when the queue is empty, wait (``block``) up to ``timeout``
        seconds for one, then raise ``Empty``."""
        if not block:
            return self.get_nowait()
        _check_timeout(timeout)
        return _answer(self.actor.get.remote(timeout))

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """``get`` for ``async`` code."""
        if not block:
            return await _answer_async(self.actor.get_nowait.remote())
        _check_timeout(timeout)
        return await _answer_async(self.actor.get.remote(timeout))

    def put_nowait(self, item: Any) -> None:
        """Put ``item`` at once, or raise ``ember.util.queue.Full`` (``put(item, block=False)``)."""
        _answer(self.actor.put_nowait.remote(item))

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Add all of ``items`` at once, or none of them (``Full``)."""
        _answer(self.actor.put_nowait_batch.remote(list(items)))

    def get_nowait(self) -> Any:
        """Take an item at once, or raise ``ember.util.queue.Empty`` (``get(block=False)``)."""
        return _answer(self.actor.get_nowait.remote())

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Take ``num_items`` items at once, or none of them (``Empty``)."""
        if not isinstance(num_items, int) or num_items < 0:
            raise ValueError(f"num_items={num_items!r} must be an integer >= 0")
        return list(_answer(self.actor.get_nowait_batch.remote(num_items)))

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """Stop the queue's actor; its items are lost. (``force`` and ``grace_period_s`` are
        accepted for Ray's signature: the actor is killed at once.)"""
        if self.actor is not None:
            ember.kill(self.actor)
            self.actor = None


_actor_class: Any = None


def _queue_actor_class() -> Any:
    """``_QueueActor`` as an actor class, made once (its code then ships once)."""
    global _actor_class
    if _actor_class is None:
        _actor_class = ember.remote(_QueueActor)
    return _actor_class


def _answer(ref: Any) -> Any:
    """The value of a call to the queue's actor; its ``Empty``/``Full`` raised as itself
    (without the remote traceback that task errors carry)."""
    try:
        return ember.get(ref)
    except (Empty, Full) as exc:
        raise _plain(exc) from None


async def _answer_async(ref: Any) -> Any:
    try:
        return await ref
    except (Empty, Full) as exc:
        raise _plain(exc) from None


def _plain(exc: Exception) -> Exception:
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, (Empty, Full)) else exc


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout={timeout!r} must be a number >= 0 or None")
