"""``ObjectRef``, ``ObjectRefGenerator`` and ``DynamicObjectRefGenerator``: handles to values
that a backend holds."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ember.core import _pickling

if TYPE_CHECKING:
    from ember.core._backend import Backend


class ObjectRef:
    """A reference to a value that exists (or will exist) somewhere in the cluster.

    ``ember.get(ref)`` returns the value; ``await ref`` does the same inside ``async`` code;
    ``ref.future()`` gives a ``concurrent.futures.Future``. The value is freed once the last
    reference to it is gone.
    """

    __slots__ = ("__weakref__", "_id", "_rt")

    def __init__(self, object_id: Any, runtime: Backend, *, add_ref: bool = True) -> None:
        self._id = object_id
        self._rt = runtime
        if add_ref:
            runtime.add_local_ref(object_id)

    def __del__(self) -> None:
        try:
            self._rt.remove_local_ref(self._id)
        except Exception:  # interpreter shutdown: nothing left to release
            pass

    def hex(self) -> str:
        """The object's id as a hex string (what ``repr`` shows)."""
        oid = self._id
        if isinstance(oid, int):
            return f"{oid:016x}"
        return oid.hex() if hasattr(oid, "hex") else str(oid)  # a Ray ObjectRef, say

    def __repr__(self) -> str:
        return f"ObjectRef({self.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __reduce__(self) -> tuple[Any, ...]:
        _pickling.note_contained(self._id)
        return (_rebuild_ref, (self._id,))

    def future(self) -> concurrent.futures.Future[Any]:
        """A ``concurrent.futures.Future`` that completes with the value (or its error)."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        rt = self._rt

        def done(_: Any) -> None:
            if not fut.set_running_or_notify_cancel():  # the awaiting task was cancelled
                return
            try:
                value = rt.get([self], None)[0]
            except BaseException as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(value)

        rt.on_ready(self, done)
        return fut

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self.future()).__await__()


def _rebuild_ref(object_id: Any) -> ObjectRef:
    if _pickling.detached():
        return ObjectRef(object_id, DETACHED, add_ref=False)
    from ember.core._api import current_backend

    return current_backend().make_ref(object_id)


class _Detached:
    """The runtime of references and handles rebuilt only to be looked at (see
    ``_pickling.detaching``): they count nothing and cannot be used."""

    name = "detached"

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("add_", "remove_", "on_actor_handle")):
            return lambda *args: None
        raise RuntimeError(
            "this reference was rebuilt only to inspect an error and cannot be used"
        )


DETACHED: Any = _Detached()


class ObjectRefGenerator:
    """The result of a streaming task: yields an ``ObjectRef`` per item as the task produces it.

    Iterate it with ``for ref in gen`` or ``async for ref in gen``; ``ember.get(ref)`` reads the
    item. The producer runs at most a bounded number of items ahead of the consumer.
    """

    def __init__(self, generator_id: Any, runtime: Backend) -> None:
        self._id = generator_id
        self._rt = runtime
        self._index = 0
        self._done = False
        runtime.add_generator_ref(generator_id)

    def __del__(self) -> None:
        try:
            self._rt.remove_generator_ref(self._id)
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._id!r}, next={self._index})"

    def __iter__(self) -> Iterator[ObjectRef]:
        return self

    def __next__(self) -> ObjectRef:
        return self.next_ref(timeout=None)

    def next_ref(self, timeout: float | None = None) -> ObjectRef:
        """The next item's reference; ``StopIteration`` after the last one."""
        if self._done:
            raise StopIteration
        ref = self._rt.generator_next(self._id, self._index, timeout)
        if ref is None:
            self._done = True
            raise StopIteration
        self._index += 1
        return ref

    def __aiter__(self) -> AsyncIterator[ObjectRef]:
        return self

    async def __anext__(self) -> ObjectRef:
        if self._done:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[ObjectRef | None] = loop.create_future()

        def deliver(ref: ObjectRef | None, exc: BaseException | None) -> None:
            def settle() -> None:
                if fut.done():
                    return
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(ref)

            loop.call_soon_threadsafe(settle)

        self._rt.generator_next_async(self._id, self._index, deliver)
        ref = await fut
        if ref is None:
            self._done = True
            raise StopAsyncIteration
        self._index += 1
        return ref

    def completed(self) -> bool:
        """True once the generator has handed out its last item."""
        return self._done


class DynamicObjectRefGenerator:
    """The value of a ``num_returns="dynamic"`` task: a reference per item its generator
    yielded, in order (Ray's older form of a generator task; ``"streaming"`` hands items out
    while the task runs)::

        @ember.remote(num_returns="dynamic")
        def split(n):
            yield from range(n)

        refs = ember.get(split.remote(3))  # a DynamicObjectRefGenerator
        ember.get(list(refs))  # [0, 1, 2]
    """

    def __init__(self, refs: Iterable[ObjectRef]) -> None:
        self._refs = list(refs)

    def __iter__(self) -> Iterator[ObjectRef]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"
