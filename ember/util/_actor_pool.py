"""``ActorPool``: spread work over a fixed set of actors, as Ray's ``ray.util.ActorPool``."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import ember
from ember.core._refs import ObjectRef

V = TypeVar("V")


class ActorPool:
    """Hands each value to an idle actor of the pool; values wait while all are busy.

    ``fn(actor, value)`` starts the work and returns its ``ObjectRef``::

        pool = ActorPool([Doubler.remote(), Doubler.remote()])
        list(pool.map(lambda actor, v: actor.double.remote(v), [1, 2, 3]))  # [2, 4, 6]

    ``map`` yields results in the order of the values, ``map_unordered`` as they finish;
    ``submit`` with ``get_next``/``get_next_unordered`` does the same one value at a time.
    """

    def __init__(self, actors: list[Any]) -> None:
        self._idle: list[Any] = list(actors)
        self._waiting: deque[tuple[Callable[[Any, Any], Any], Any]] = deque()
        self._running: dict[Any, tuple[int, Any]] = {}  # result -> (submission index, actor)
        self._by_index: dict[int, Any] = {}  # submission index -> result
        self._next_index = 0  # index of the next submission
        self._next_return = 0  # index of the next result that get_next returns

    # -- submitting -----------------------------------------------------------------------------
    def submit(self, fn: Callable[[Any, V], Any], value: V) -> None:
        """Run ``fn(actor, value)`` on an idle actor, or once one is free."""
        if not self._idle:
            self._waiting.append((fn, value))
            return
        actor = self._idle.pop()
        result = fn(actor, value)
        key = _key(result)
        self._running[key] = (self._next_index, actor)
        self._by_index[self._next_index] = result
        self._next_index += 1

    def map(self, fn: Callable[[Any, V], Any], values: Iterable[V]) -> Iterator[Any]:
        """Results of ``fn(actor, value)`` for every value, in the order of ``values``.

        Every value is submitted before this returns (as in Ray); the iterator then yields
        the results."""
        self._drop_unread()
        for value in values:
            self.submit(fn, value)
        return self._results(self.get_next)

    def map_unordered(self, fn: Callable[[Any, V], Any], values: Iterable[V]) -> Iterator[Any]:
        """Results of ``fn(actor, value)`` for every value, as they finish (every value is
        submitted before this returns)."""
        self._drop_unread()
        for value in values:
            self.submit(fn, value)
        return self._results(self.get_next_unordered)

    def _results(self, get: Callable[[], Any]) -> Iterator[Any]:
        while self.has_next():
            yield get()

    def _drop_unread(self) -> None:
        # A new map starts from a clean pool: results nobody read are dropped and their actors
        # go back to the pool at once (an actor still busy with one takes the new work
        # behind it), as Ray's does.
        while self.has_next():
            try:
                self.get_next(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass

    # -- results --------------------------------------------------------------------------------
    def has_next(self) -> bool:
        """Whether any submitted work has a result still to read."""
        return bool(self._running)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order.

        Raises ``TimeoutError`` when ``timeout`` seconds pass first; with
        ``ignore_if_timedout=True`` that result is then skipped (its actor is returned to the
        pool) before the error is raised.
        """
        if not self.has_next():
            raise StopIteration("no more results to get: submit work first")
        result = self._by_index[self._next_return]
        timed_out = False
        if timeout is not None:
            refs = _refs(result)
            ready, _ = ember.wait(refs, num_returns=len(refs), timeout=timeout)
            timed_out = len(ready) < len(refs)
        if timed_out and not ignore_if_timedout:
            raise TimeoutError(f"no result within {timeout} s")
        self._finish(result)
        if timed_out:
            raise TimeoutError(f"no result within {timeout} s; that submission is skipped")
        return ember.get(result)

    def get_next_unordered(
        self, timeout: float | None = None, ignore_if_timedout: bool = False
    ) -> Any:
        """The first result to finish, whatever its submission order.

        Raises ``TimeoutError`` when none finishes within ``timeout`` seconds; with
        ``ignore_if_timedout=True`` the oldest submission is then skipped (its actor is
        returned to the pool) before the error is raised, as Ray's docstring describes.
        """
        if not self.has_next():
            raise StopIteration("no more results to get: submit work first")
        firsts = [_refs(result)[0] for result in self._by_index.values()]
        ready, _ = ember.wait(firsts, num_returns=1, timeout=timeout)
        if not ready:
            if ignore_if_timedout:
                self._finish(self._by_index[min(self._by_index)])
                raise TimeoutError(f"no result within {timeout} s; the oldest submission "
                                   "is skipped")
            raise TimeoutError(f"no result within {timeout} s")
        result = next(r for r in self._by_index.values() if _refs(r)[0] == ready[0])
        self._finish(result)
        return ember.get(result)

    def _finish(self, result: Any) -> None:
        index, actor = self._running.pop(_key(result))
        del self._by_index[index]
        # get_next returns the oldest result still unread (get_next_unordered may have taken
        # some out of order).
        while self._next_return < self._next_index and self._next_return not in self._by_index:
            self._next_return += 1
        self._return(actor)

    def _return(self, actor: Any) -> None:
        self._idle.append(actor)
        if self._waiting:
            self.submit(*self._waiting.popleft())

    # -- actors ---------------------------------------------------------------------------------
    def has_free(self) -> bool:
        """Whether an actor is idle and no value waits for one."""
        return bool(self._idle) and not self._waiting

    def pop_idle(self) -> Any | None:
        """Take an idle actor out of the pool (None when none is free)."""
        return self._idle.pop() if self.has_free() else None

    def push(self, actor: Any) -> None:
        """Add an actor to the pool (it must not be in it already)."""
        busy = [a for _, a in self._running.values()]
        if actor in self._idle or actor in busy:
            raise ValueError("this actor already belongs to the pool")
        self._return(actor)


def _refs(result: Any) -> list[ObjectRef]:
    return list(result) if isinstance(result, (list, tuple)) else [result]


def _key(result: Any) -> Any:
    return tuple(result) if isinstance(result, list) else result
