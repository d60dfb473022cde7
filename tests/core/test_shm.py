"""``ember/core/_shm.py``: segment files in /dev/shm, their spill copies, and the sweep."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import pytest

from ember.core import _shm
from ember.errors import ObjectLostError
from tests._support import throwaway_session


@pytest.fixture
def names(tmp_path) -> Iterator[_shm.SegmentNames]:
    with throwaway_session(str(tmp_path)) as names:
        yield names


def write_segment(names, data: bytes) -> str:
    name = _shm.new_segment_name(names)
    mm = _shm.create_segment(names, name, len(data))
    mm[: len(data)] = data
    mm.close()
    return name


def test_segment_names_carry_the_session_prefix(names):
    first, second = _shm.new_segment_name(names), _shm.new_segment_name(names)

    assert first != second
    assert first.startswith(f"ember-{names.session}-")


def test_created_segment_is_read_back_by_a_mapping(names):
    name = write_segment(names, b"hello shared memory")

    mm = _shm.map_segment(names, name)

    assert bytes(mm[:19]) == b"hello shared memory"
    assert os.path.exists(os.path.join("/dev/shm", name))


def test_mapping_is_read_only(names):
    mm = _shm.map_segment(names, write_segment(names, b"x" * 100))

    with pytest.raises(TypeError):
        mm[0:1] = b"y"


def test_creating_an_existing_segment_fails(names):
    name = write_segment(names, b"x")

    with pytest.raises(FileExistsError):
        _shm.create_segment(names, name, 10)


def test_a_live_mapping_is_reused(names):
    name = write_segment(names, b"x" * 64)

    first = _shm.map_segment(names, name)

    assert _shm.map_segment(names, name) is first


def test_locate_finds_addresses_inside_live_mappings(names):
    name = write_segment(names, b"x" * 4096)
    mm = _shm.map_segment(names, name)
    base = _shm.buffer_address(mm)

    assert _shm.locate(base + 100, 50) == (name, 100)
    assert _shm.locate(base + 4000, 200) is None  # runs past the end
    del mm
    import gc

    gc.collect()
    assert _shm.locate(base + 100, 50) is None  # the mapping is gone


def test_spilled_segment_moves_to_disk_and_stays_readable(names, tmp_path):
    name = write_segment(names, b"spill me" * 1000)

    assert _shm.spill_segment(names, name)

    assert not os.path.exists(os.path.join("/dev/shm", name))
    assert os.path.exists(names.spill_path(name))
    assert not list(tmp_path.rglob("*.partial"))
    assert _shm.segment_exists(names, name)
    assert bytes(_shm.map_segment(names, name)[:8]) == b"spill me"


def test_spilling_a_missing_segment_reports_false(names):
    assert _shm.spill_segment(names, _shm.new_segment_name(names)) is False


def test_unlinked_segment_cannot_be_mapped(names):
    name = write_segment(names, b"x")
    _shm.unlink_segment(names, name)
    _shm.unlink_segment(names, name)  # twice is fine

    assert not _shm.segment_exists(names, name)
    with pytest.raises(ObjectLostError, match=name):
        _shm.map_segment(names, name)


def test_sweep_removes_the_sessions_segments_only(names, tmp_path):
    with throwaway_session(str(tmp_path)) as other:
        mine = [write_segment(names, b"a"), write_segment(names, b"b")]
        _shm.spill_segment(names, mine[1])
        theirs = write_segment(other, b"c")
        assert _shm.sweep(names) == 2

        assert not any(_shm.segment_exists(names, n) for n in mine)
        assert not os.path.exists(names.spill_folder())
        assert _shm.segment_exists(other, theirs)


@pytest.mark.alone
def test_only_sessions_whose_processes_all_died_are_swept(tmp_path):
    dead = _shm.SegmentNames(f"testdead{os.urandom(4).hex()}", str(tmp_path))
    live = _shm.SegmentNames(f"testlive{os.urandom(4).hex()}", str(tmp_path))
    unlocked = _shm.SegmentNames(f"testnolock{os.urandom(4).hex()}", str(tmp_path))
    live_lock = _shm.hold_session_lock(live)
    try:
        os.close(_shm.hold_session_lock(dead))  # its last holder is gone: the lock is free
        dead_segments = [write_segment(dead, b"x" * 100) for _ in range(2)]
        _shm.spill_segment(dead, dead_segments[1])
        live_segment = write_segment(live, b"y" * 100)
        unlocked_segment = write_segment(unlocked, b"z" * 100)  # no lock file: not judged

        assert _shm.sweep_dead_sessions(str(tmp_path)) >= 2

        assert not any(_shm.segment_exists(dead, n) for n in dead_segments)
        assert not os.path.exists(dead.spill_folder())
        assert not os.path.exists(_shm._lock_path(dead.session))
        assert _shm.segment_exists(live, live_segment)
        assert _shm.segment_exists(unlocked, unlocked_segment)
    finally:
        os.close(live_lock)
        for names in (dead, live, unlocked):
            _shm.sweep(names)
    assert not os.path.exists(_shm._lock_path(live.session))  # sweep takes the lock file too



def test_spill_files_are_the_users_alone_whatever_the_umask(names, tmp_path):
    name = write_segment(names, b"secret" * 100)
    old_umask = os.umask(0)
    try:
        assert _shm.spill_segment(names, name)
    finally:
        os.umask(old_umask)

    assert os.listdir(tmp_path) == [os.path.basename(names.spill_folder())]
    assert stat.S_IMODE(os.stat(names.spill_folder()).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(names.spill_path(name)).st_mode) == 0o600
    assert bytes(_shm.map_segment(names, name)[:6]) == b"secret"


def test_a_spill_folder_that_others_can_enter_is_never_used(names):
    # Someone who learned the session id made its spill folder first, open to all.
    os.mkdir(names.spill_folder())
    os.chmod(names.spill_folder(), 0o777)
    name = write_segment(names, b"x" * 100)
    try:
        with pytest.raises(PermissionError, match="only this user"):
            _shm.spill_segment(names, name)
        assert os.listdir(names.spill_folder()) == []
        assert os.path.exists(names.shm_path(name))  # still readable from shared memory
        _shm.sweep(names)
        assert os.path.isdir(names.spill_folder())  # not ours alone: left to its owner
    finally:
        os.rmdir(names.spill_folder())
