"""Values to bytes and back, with large buffers placed in shared memory once.

A serialized value is a ``Stored`` tuple ``(data, buffers, contained)``:

- ``data``: the pickle stream (protocol 5);
- ``buffers``: one ``(segment, offset, nbytes, new_segment_size)`` per out-of-band buffer that
  was too large to travel inline; ``new_segment_size`` is 0 when the buffer already lay in an
  existing segment and is only referenced;
- ``contained``: ids of the ``ObjectRef``s pickled inside the value, which the value keeps alive.

Plain ``pickle`` runs first because it is fast; ``cloudpickle`` takes over for what it cannot
handle (lambdas, local classes).
"""

from __future__ import annotations

import pickle
from typing import Any

from ember.core import _shm
from ember.core._pickling import collecting, detaching
from ember.core._pickling import detached as detached  # re-exported: the codec's vocabulary
from ember.core._pickling import dumps_function as dumps_function
from ember.core._pickling import note_contained as note_contained
from ember.errors import SerializationError

Stored = tuple[bytes, tuple[tuple[str, int, int, int], ...], tuple[int, ...]]

EMPTY: tuple[()] = ()


def _pickle(value: Any, buffer_callback: Any, reset: Any) -> bytes:
    try:
        data = pickle.dumps(value, protocol=5, buffer_callback=buffer_callback)
        # Classes and functions of the user's script live in ``__main__``, which workers never
        # import: those must travel by value. (A false alarm only costs a second pickling.)
        if b"__main__" not in data:
            return data
    except Exception:
        pass
    import cloudpickle

    reset()  # the second pickling collects buffers and references afresh
    by_value: bytes = cloudpickle.dumps(value, protocol=5, buffer_callback=buffer_callback)
    return by_value


_SIMPLE = frozenset((type(None), bool, int, float, str, bytes))


def dumps(value: Any, names: _shm.SegmentNames | None, threshold: int) -> Stored:
    """Serialize ``value``; buffers of ``threshold`` bytes or more go to shared memory.

    With ``names=None`` every buffer stays inline (used where no store exists).
    """
    if type(value) in _SIMPLE and (type(value) is not bytes or len(value) < threshold):
        return pickle.dumps(value, protocol=5), EMPTY, EMPTY  # the common small case
    large: list[pickle.PickleBuffer] = []
    contained: list[int] = []

    def keep_large(buf: pickle.PickleBuffer) -> bool:
        if names is not None and buf.raw().nbytes >= threshold:
            large.append(buf)
            return False  # out of band
        return True  # serialize in band

    def reset() -> None:
        large.clear()
        contained.clear()

    with collecting(contained):
        try:
            data = _pickle(value, keep_large, reset)
        except Exception as exc:
            raise SerializationError(
                f"could not serialize a value of type {type(value).__qualname__}: {exc}"
            ) from exc
    if not large:
        return data, EMPTY, tuple(contained) if contained else EMPTY
    assert names is not None
    return data, _place_buffers(large, names), tuple(contained) if contained else EMPTY


def _place_buffers(
    large: list[pickle.PickleBuffer], names: _shm.SegmentNames
) -> tuple[tuple[str, int, int, int], ...]:
    locations: list[tuple[str, int, int, int] | None] = []
    fresh: list[tuple[int, memoryview]] = []
    total = 0
    for buf in large:
        raw = buf.raw()
        found = _shm.locate(_shm.buffer_address(raw), raw.nbytes)
        if found is not None and _shm.segment_exists(names, found[0]):
            locations.append((found[0], found[1], raw.nbytes, 0))
        else:
            locations.append(None)
            fresh.append((len(locations) - 1, raw))
            total += _shm.aligned(raw.nbytes)
    if fresh:
        name = _shm.new_segment_name(names)
        mm = _shm.create_segment(names, name, total)
        offset = 0
        try:
            for index, raw in fresh:
                mm[offset : offset + raw.nbytes] = raw
                locations[index] = (name, offset, raw.nbytes, total)
                offset += _shm.aligned(raw.nbytes)
        finally:
            mm.close()
    return tuple(loc for loc in locations if loc is not None)


def loads(stored: Stored, names: _shm.SegmentNames | None) -> Any:
    data, buffers, _ = stored
    if not buffers:
        return pickle.loads(data)
    assert names is not None
    views = []
    for segment, offset, nbytes, _size in buffers:
        mm = _shm.map_segment(names, segment)
        views.append(memoryview(mm)[offset : offset + nbytes].toreadonly())
    return pickle.loads(data, buffers=views)


def loads_detached(stored: Stored, names: _shm.SegmentNames | None) -> Any:
    """Unpickle a value only to look at it (its type, its message), as the local driver does
    with its lock held: ``ObjectRef``s and actor handles inside it bind to no runtime and are
    not counted, so rebuilding them cannot wait for that lock."""
    with detaching():
        return loads(stored, names)


def new_segments(stored: Stored) -> list[tuple[str, int]]:
    """Segments that this serialization created (name, size)."""
    seen: dict[str, int] = {}
    for segment, _offset, _nbytes, size in stored[1]:
        if size:
            seen[segment] = size
    return list(seen.items())


def segments_of(stored: Stored) -> set[str]:
    return {loc[0] for loc in stored[1]}


def refuse_generator(value: Any, name: str) -> None:
    """Raise a ``SerializationError`` naming ``name`` when a task or method that is not a
    generator function returned a generator object: it cannot be pickled, and the fix is to
    declare the function as what it is."""
    import inspect

    if inspect.isgenerator(value) or inspect.isasyncgen(value):
        kind = "an async generator" if inspect.isasyncgen(value) else "a generator"
        raise SerializationError(
            f"{name} returned {kind} object, which cannot be sent back. To stream its items, "
            f"make {name} itself a generator function (yield in its body) or declare it with "
            "num_returns='streaming'; to return them all, return a list"
        )
