"""The driver's object table: values, reference counts, shared-memory segments and spilling.

``ObjectTable`` is the bookkeeping, pure (the scheduler's records of objects); ``ObjectStore``
adds what touches the machine: unlinking a segment that nobody holds any more, and spilling the
oldest segments to disk when the store runs past its capacity.

Not thread-safe by itself: the driver calls it with its lock held. Every method is quick except
spilling.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from ember.core import _shm
from ember.core._serialization import Stored

logger = logging.getLogger("ember")

Callback = Callable[[int], None]


class Obj:
    __slots__ = ("callbacks", "error", "refs", "stored")

    def __init__(self) -> None:
        self.stored: Stored | None = None  # None while the value is pending
        self.error = False
        self.refs = 0
        self.callbacks: list[Callback] | None = None


class Segment:
    __slots__ = ("refs", "size", "spilled")

    def __init__(self, size: int) -> None:
        self.size = size
        self.refs = 0
        self.spilled = False


class ObjectTable:
    """Values, reference counts and the segments they lie in; callbacks for pending values."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.objects: dict[int, Obj] = {}
        # Insertion order doubles as age: the oldest segments spill first.
        self.segments: OrderedDict[str, Segment] = OrderedDict()
        self.used = 0
        self.spilled_bytes = 0

    # -- references ---------------------------------------------------------------------
    def new(self, oid: int, refs: int = 1) -> Obj:
        obj = Obj()
        obj.refs = refs
        self.objects[oid] = obj
        return obj

    def incref(self, oid: int, n: int = 1) -> bool:
        obj = self.objects.get(oid)
        if obj is None:
            return False
        obj.refs += n
        return True

    def decref(self, oid: int, n: int = 1) -> None:
        obj = self.objects.get(oid)
        if obj is None:
            return
        obj.refs -= n
        if obj.refs > 0:
            return
        del self.objects[oid]
        if obj.stored is not None:
            self.unpin(obj.stored)

    # -- values -------------------------------------------------------------------------
    def pin(self, stored: Stored) -> bool:
        """Count ``stored``'s segments and contained refs as held; False if a segment is gone."""
        if not stored[1] and not stored[2]:  # a small value that holds nothing
            return True
        ok = True
        for name, _offset, _nbytes, size in stored[1]:
            segment = self.segments.get(name)
            if segment is None:
                if not size:  # a reference to a segment that was already freed
                    ok = False
                    continue
                segment = self.segments[name] = Segment(size)
                self.used += size
            segment.refs += 1
        for cid in stored[2]:
            self.incref(cid)
        if self.used > self.capacity:
            self._spill()
        return ok

    def unpin(self, stored: Stored) -> None:
        if not stored[1] and not stored[2]:
            return
        for name, _offset, _nbytes, _size in stored[1]:
            segment = self.segments.get(name)
            if segment is None:
                continue
            segment.refs -= 1
            if segment.refs <= 0:
                del self.segments[name]
                if segment.spilled:
                    self.spilled_bytes -= segment.size
                else:
                    self.used -= segment.size
                self._free_segment(name)
        for cid in stored[2]:
            self.decref(cid)

    def discard_unowned(self, stored: Stored) -> None:
        """Free the fresh segments of a value nobody holds a reference to any more."""
        for name, _offset, _nbytes, size in stored[1]:
            if size and name not in self.segments:
                self._free_segment(name)

    def resolve(self, oid: int, stored: Stored, is_error: bool) -> list[Callback]:
        """Record a value; returns the callbacks waiting for it (the caller runs them)."""
        obj = self.objects.get(oid)
        if obj is None or obj.stored is not None:
            self.discard_unowned(stored)
            return []
        if not self.pin(stored):
            from ember.core._serialization import dumps
            from ember.errors import ObjectLostError

            self.unpin(stored)
            stored = dumps(ObjectLostError(
                "the value referred to shared memory that was already freed"), None, 0)
            is_error = True
        obj.stored = stored
        obj.error = is_error
        callbacks, obj.callbacks = obj.callbacks, None
        return callbacks or []

    def add_callback(self, oid: int, callback: Callback) -> bool:
        """Run ``callback(oid)`` when the value arrives; False when it is already there."""
        obj = self.objects.get(oid)
        if obj is None or obj.stored is not None:
            return False
        if obj.callbacks is None:
            obj.callbacks = [callback]
        else:
            obj.callbacks.append(callback)
        return True

    def remove_callback(self, oids: Iterable[int], callback: Callback) -> None:
        for oid in oids:
            obj = self.objects.get(oid)
            if obj is not None and obj.callbacks and callback in obj.callbacks:
                obj.callbacks.remove(callback)

    def is_ready(self, oid: int) -> bool:
        obj = self.objects.get(oid)
        return obj is None or obj.stored is not None

    def value(self, oid: int) -> tuple[Stored, bool] | None:
        obj = self.objects.get(oid)
        if obj is None or obj.stored is None:
            return None
        return obj.stored, obj.error

    # -- capacity ---------------------------------------------------------------------------
    def _free_segment(self, name: str) -> None:
        """A segment that nothing refers to any more (the store unlinks it)."""

    def _spill(self) -> None:
        """The store is past its capacity (the store spills its oldest segments)."""

    def stats(self) -> dict[str, Any]:
        return {
            "objects": len(self.objects), "segments": len(self.segments),
            "shared_memory_bytes": self.used, "spilled_bytes": self.spilled_bytes,
            "capacity_bytes": self.capacity,
        }


class ObjectStore(ObjectTable):
    """The table over real shared memory: freeing unlinks a segment, capacity spills to disk."""

    def __init__(self, names: _shm.SegmentNames, capacity: int) -> None:
        super().__init__(capacity)
        self.names = names
        self._spill_failed = False

    def _free_segment(self, name: str) -> None:
        _shm.unlink_segment(self.names, name)

    def _spill(self) -> None:
        for name, segment in list(self.segments.items()):
            if self.used <= self.capacity:
                return
            if segment.spilled:
                continue
            try:
                spilled = _shm.spill_segment(self.names, name)
            except OSError as exc:  # said (once), not raised: the value stays in shared memory
                if not self._spill_failed:
                    self._spill_failed = True
                    logger.warning("object store over %d bytes, but cannot spill to disk: %s",
                                   self.capacity, exc)
                return
            if spilled:
                segment.spilled = True
                self.used -= segment.size
                self.spilled_bytes += segment.size
                logger.info("object store over %d bytes: spilled %s (%d bytes) to %s",
                            self.capacity, name, segment.size, self.names.spill_folder())
