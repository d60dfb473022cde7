"""``ember/core/_serialization.py``: values to bytes and back, large buffers in shared memory."""

from __future__ import annotations

import math
import os
import pickle
import threading

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ember.core import _serialization as ser
from ember.core import _shm
from ember.core._refs import ObjectRef
from ember.errors import ObjectLostError, SerializationError
from tests._support import ember_segments, mapped_file, throwaway_session


def session_segments(names: _shm.SegmentNames) -> set[str]:
    return {n for n in ember_segments() if n.startswith(names.prefix())}


scalars = (
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=64)
    | st.floats(allow_nan=False)
)
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=5) | st.tuples(inner, inner)
                   | st.dictionaries(st.text(max_size=8), inner, max_size=5)
                   | st.frozensets(st.integers(), max_size=5)),
    max_leaves=20,
)
arrays = hnp.arrays(
    # numpy's own pickling turns big-endian datetimes little-endian: not ours to test.
    dtype=hnp.scalar_dtypes().filter(lambda dtype: dtype.kind not in "mM"),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=16),
)


def numpy_offers_buffer(array: np.ndarray) -> bool:
    """Whether numpy hands this array to pickle as an out-of-band buffer at all."""
    offered: list[pickle.PickleBuffer] = []
    pickle.dumps(array, protocol=5, buffer_callback=offered.append)
    return bool(offered)


def assert_same(a, b):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray)
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@given(values)
def test_plain_values_round_trip_inline(value):
    stored = ser.dumps(value, None, 0)

    assert stored[1] == () and stored[2] == ()
    assert ser.loads(stored, None) == value


@given(values, st.integers(min_value=0, max_value=1 << 20))
def test_values_without_buffers_never_touch_shared_memory(value, threshold):
    with throwaway_session() as names:
        stored = ser.dumps(value, names, threshold)

        assert stored[1] == ()
        assert session_segments(names) == set()
        assert ser.loads(stored, names) == value


@given(arrays, st.integers(min_value=0, max_value=512))
def test_arrays_round_trip_through_shared_memory_or_inline(array, threshold):
    with throwaway_session() as names:
        stored = ser.dumps({"x": array, "meta": [1, 2]}, names, threshold)
        loaded = ser.loads(stored, names)

        assert_same(array, loaded["x"])
        assert loaded["meta"] == [1, 2]
        out_of_band = bool(stored[1])
        if numpy_offers_buffer(array) and array.nbytes >= threshold:
            assert out_of_band, "a buffer over the threshold travelled inline"
        if out_of_band:
            assert not loaded["x"].flags.writeable
            assert {loc[0] for loc in stored[1]} <= session_segments(names)


def test_large_array_is_read_zero_copy_from_its_segment():
    array = np.arange(1 << 16, dtype=np.int64)
    with throwaway_session() as names:
        stored = ser.dumps(array, names, 1024)
        first = ser.loads(stored, names)
        second = ser.loads(stored, names)

        ((segment, _offset, nbytes, size),) = stored[1]
        assert nbytes == array.nbytes and size >= nbytes
        assert mapped_file(first.ctypes.data) == os.path.join("/dev/shm", segment)
        assert np.shares_memory(first, second)  # both readers see the one copy
        with pytest.raises(ValueError):
            first[0] = 1


def test_small_buffers_stay_inline_below_the_threshold():
    with throwaway_session() as names:
        stored = ser.dumps(np.zeros(10), names, 1024)

        assert stored[1] == ()
        assert session_segments(names) == set()


def test_buffers_of_one_value_share_one_new_segment():
    with throwaway_session() as names:
        stored = ser.dumps([np.ones(1000), np.zeros(2000), b"x" * 10], names, 100)

        assert len(stored[1]) == 2
        assert len(ser.new_segments(stored)) == 1
        assert len(session_segments(names)) == 1


def test_array_already_in_shared_memory_is_referenced_not_copied():
    with throwaway_session() as names:
        first = ser.dumps(np.arange(10_000), names, 1024)
        loaded = ser.loads(first, names)

        again = ser.dumps({"same": loaded}, names, 1024)

        assert ser.new_segments(again) == []
        assert ser.segments_of(again) == ser.segments_of(first)
        assert len(session_segments(names)) == 1
        np.testing.assert_array_equal(ser.loads(again, names)["same"], np.arange(10_000))


def test_slice_of_a_shared_array_is_referenced_at_its_offset():
    with throwaway_session() as names:
        loaded = ser.loads(ser.dumps(np.arange(10_000), names, 1024), names)

        again = ser.dumps(loaded[5000:], names, 1024)

        assert ser.new_segments(again) == []
        np.testing.assert_array_equal(ser.loads(again, names), np.arange(5000, 10_000))


def test_reading_a_freed_segment_raises_object_lost_error():
    with throwaway_session() as names:
        stored = ser.dumps(np.arange(10_000), names, 1024)
        for segment in ser.segments_of(stored):
            _shm.unlink_segment(names, segment)

        with pytest.raises(ObjectLostError):
            ser.loads(stored, names)


def test_lambdas_and_local_classes_round_trip():
    class Point:
        def __init__(self, x):
            self.x = x

    offset = 3
    stored = ser.dumps({"f": lambda v: v + offset, "p": Point(4)}, None, 0)
    loaded = ser.loads(stored, None)

    assert loaded["f"](1) == 4
    assert loaded["p"].x == 4


def test_unpicklable_value_raises_serialization_error_naming_its_type():
    with pytest.raises(SerializationError, match="dict") as info:
        ser.dumps({"lock": threading.Lock()}, None, 0)

    assert isinstance(info.value, TypeError)


def test_failed_serialization_leaves_no_segment_behind():
    with throwaway_session() as names:
        with pytest.raises(SerializationError):
            ser.dumps([np.ones(10_000), threading.Lock()], names, 100)

        assert session_segments(names) == set()


class _Refs:
    """The reference-counting side of a backend, recorded instead of acted on."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def add_local_ref(self, oid: int) -> None:
        self.counts[oid] = self.counts.get(oid, 0) + 1

    def remove_local_ref(self, oid: int) -> None:
        self.counts[oid] -= 1


@given(st.lists(st.integers(min_value=1, max_value=1 << 40), max_size=6))
def test_contained_object_refs_are_recorded(ids):
    runtime = _Refs()
    refs = [ObjectRef(oid, runtime) for oid in ids]

    stored = ser.dumps({"refs": refs, "n": len(refs)}, None, 0)

    assert sorted(stored[2]) == sorted(ids)


def test_contained_refs_are_recorded_per_value_not_across_values():
    runtime = _Refs()
    ser.dumps([ObjectRef(1, runtime)], None, 0)

    assert ser.dumps([2, 3], None, 0)[2] == ()


def test_function_code_ships_by_value():
    scale = 2.5
    code = ser.dumps_function(lambda x: x * scale)

    import cloudpickle

    assert cloudpickle.loads(code)(2) == 5.0


def test_unshippable_function_raises_serialization_error_with_the_fix():
    lock = threading.Lock()

    def uses_lock():
        with lock:
            return 1

    with pytest.raises(SerializationError, match="uses_lock") as info:
        ser.dumps_function(uses_lock)

    assert "__init__" in str(info.value) or "function body" in str(info.value)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_floats_round_trip_bit_for_bit(x):
    loaded = ser.loads(ser.dumps(x, None, 0), None)

    assert (math.isnan(x) and math.isnan(loaded)) or loaded == x
