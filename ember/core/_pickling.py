"""What the neutral core API needs of pickling, apart from any backend's plumbing.

``ObjectRef``, ``ActorHandle`` and ``RemoteFunction`` (``_refs.py``, ``_remote.py``) take part
in pickling in three ways: a reference pickled inside a value is noted as held by that value
(:func:`note_contained`), references rebuilt only to inspect an error bind to no runtime
(:func:`detached`), and functions and classes travel to workers by value
(:func:`dumps_function`). This module holds that per-thread context; ``_serialization`` (the
local backend's codec, with its shared memory) sets it while it pickles or unpickles. Keeping
it here lets the neutral API be imported without the local backend's plumbing (``_shm``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ember.errors import SerializationError

_local = threading.local()


def note_contained(object_id: int) -> None:
    """Called by ``ObjectRef.__reduce__``: the value being pickled holds this reference."""
    ids = getattr(_local, "contained", None)
    if ids is not None:
        ids.append(object_id)


@contextmanager
def collecting(contained: list[int]) -> Iterator[None]:
    """Append the ids of the references pickled in this thread meanwhile to ``contained``."""
    previous = getattr(_local, "contained", None)
    _local.contained = contained
    try:
        yield
    finally:
        _local.contained = previous


@contextmanager
def detaching() -> Iterator[None]:
    """References and handles unpickled in this thread meanwhile bind to no runtime."""
    previous = getattr(_local, "detached", False)
    _local.detached = True
    try:
        yield
    finally:
        _local.detached = previous


def detached() -> bool:
    """True while a value is unpickled only to be looked at (see :func:`detaching`)."""
    return bool(getattr(_local, "detached", False))


def dumps_function(fn: Any) -> bytes:
    """Pickle a function or class by value where needed (cloudpickle)."""
    import cloudpickle

    try:
        code: bytes = cloudpickle.dumps(fn, protocol=5)
    except Exception as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        raise SerializationError(
            f"could not serialize {name} to ship it to a worker: {exc}. Move unpicklable state "
            "(locks, open files, sockets) into the function body or the actor's __init__."
        ) from exc
    return code
