"""``ember/core/local/_store.py``: the driver's object table, reference counts and spilling.

The store is driven directly here (no processes); its segments are real files so that freeing
and spilling are observed where a user would see them: in /dev/shm and in the spill folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from ember.core import _serialization as ser
from ember.core import _shm
from ember.core.local._store import ObjectStore
from ember.errors import ObjectLostError
from tests._support import throwaway_session

MB = 1 << 20


@pytest.fixture
def names(tmp_path) -> Iterator[_shm.SegmentNames]:
    with throwaway_session(str(tmp_path)) as names:
        yield names


def big(names, megabytes: float = 1, fill: int = 1) -> ser.Stored:
    return ser.dumps(np.full(int(megabytes * MB) // 8, fill, dtype=np.int64), names, 1024)


def on_disk(names, stored) -> dict[str, str]:
    """Where each segment of ``stored`` lives now: 'shm', 'spill' or 'gone'."""
    out = {}
    for segment in ser.segments_of(stored):
        if os.path.exists(names.shm_path(segment)):
            out[segment] = "shm"
        elif os.path.exists(names.spill_path(segment)):
            out[segment] = "spill"
        else:
            out[segment] = "gone"
    return out


def test_value_is_pending_until_resolved_and_wakes_its_callbacks(names):
    store = ObjectStore(names, capacity=100 * MB)
    store.new(1)
    woken = []

    assert not store.is_ready(1)
    assert store.add_callback(1, woken.append)
    for callback in store.resolve(1, ser.dumps("v", None, 0), is_error=False):
        callback(1)

    assert woken == [1]
    assert store.is_ready(1)
    assert not store.add_callback(1, woken.append)  # already there: the caller reads it now
    stored, is_error = store.value(1)
    assert ser.loads(stored, names) == "v" and not is_error


def test_removed_callback_is_not_woken(names):
    store = ObjectStore(names, capacity=100 * MB)
    store.new(1)
    woken = []
    store.add_callback(1, woken.append)

    store.remove_callback([1], woken.append)

    assert store.resolve(1, ser.dumps("v", None, 0), False) == []


def test_last_decref_frees_the_segment(names):
    store = ObjectStore(names, capacity=100 * MB)
    stored = big(names)
    store.new(1, refs=2)
    store.resolve(1, stored, False)

    store.decref(1)
    assert set(on_disk(names, stored).values()) == {"shm"}
    store.decref(1)

    assert set(on_disk(names, stored).values()) == {"gone"}
    assert store.value(1) is None
    assert store.stats()["shared_memory_bytes"] == 0


def test_segment_shared_by_two_objects_lives_until_both_are_gone(names):
    store = ObjectStore(names, capacity=100 * MB)
    first = big(names)
    view = ser.loads(first, names)
    second = ser.dumps({"again": view}, names, 1024)  # references the same segment
    store.new(1)
    store.resolve(1, first, False)
    store.new(2)
    store.resolve(2, second, False)

    store.decref(1)
    assert set(on_disk(names, first).values()) == {"shm"}
    store.decref(2)
    assert set(on_disk(names, first).values()) == {"gone"}


def test_value_keeps_the_refs_it_contains_alive(names):
    store = ObjectStore(names, capacity=100 * MB)
    inner = big(names)
    store.new(1)
    store.resolve(1, inner, False)
    outer = (ser.dumps(["holder"], None, 0)[0], (), (1,))  # a value that contains ref 1
    store.new(2)
    store.resolve(2, outer, False)

    store.decref(1)  # the user dropped the inner ref: the outer value still holds it
    assert store.value(1) is not None
    store.decref(2)

    assert store.value(1) is None
    assert set(on_disk(names, inner).values()) == {"gone"}


def test_value_for_a_freed_object_is_discarded(names):
    store = ObjectStore(names, capacity=100 * MB)
    store.new(1)
    store.decref(1)  # nobody wants the result any more
    stored = big(names)

    assert store.resolve(1, stored, False) == []
    assert set(on_disk(names, stored).values()) == {"gone"}


def test_value_referring_to_a_freed_segment_becomes_object_lost_error(names):
    store = ObjectStore(names, capacity=100 * MB)
    first = big(names)
    view = ser.loads(first, names)
    again = ser.dumps(view, names, 1024)  # only references the segment
    for segment in ser.segments_of(first):
        _shm.unlink_segment(names, segment)
    store.new(1)

    store.resolve(1, again, False)

    stored, is_error = store.value(1)
    assert is_error
    with pytest.raises(ObjectLostError):
        raise ser.loads(stored, names)


def test_store_over_capacity_spills_the_oldest_segments_to_disk(names):
    store = ObjectStore(names, capacity=int(2.5 * MB))
    values = [big(names, 1, fill=i) for i in range(4)]
    for oid, stored in enumerate(values, start=1):
        store.new(oid)
        store.resolve(oid, stored, False)

    where = [next(iter(on_disk(names, v).values())) for v in values]
    assert where[:2] == ["spill", "spill"] and where[2:] == ["shm", "shm"]
    stats = store.stats()
    assert stats["shared_memory_bytes"] <= 2.5 * MB
    assert stats["spilled_bytes"] >= 2 * MB
    for i, stored in enumerate(values):  # every value is still readable, spilled or not
        assert int(ser.loads(stored, names)[0]) == i


def test_freeing_a_spilled_object_removes_its_spill_file(names):
    store = ObjectStore(names, capacity=int(1.5 * MB))
    first, second = big(names), big(names)
    store.new(1)
    store.resolve(1, first, False)
    store.new(2)
    store.resolve(2, second, False)
    assert set(on_disk(names, first).values()) == {"spill"}

    store.decref(1)

    assert set(on_disk(names, first).values()) == {"gone"}
    assert store.stats()["spilled_bytes"] == 0


def test_incref_of_an_unknown_object_reports_it(names):
    store = ObjectStore(names, capacity=MB)

    assert store.incref(99) is False
    store.decref(99)  # harmless
    assert store.is_ready(99)  # nothing to wait for: a get reports it as lost instead
