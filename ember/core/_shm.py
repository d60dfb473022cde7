"""Shared-memory segments: files in /dev/shm (or, once spilled, in the session's spill folder).

A segment holds the large out-of-band buffers of one object. It is written once by its producer
and mapped read-only by every reader, so a numpy array read from it is a zero-copy view. Each
process keeps a registry of its live mappings (weakly: a mapping lives exactly as long as some
view of it) so that a buffer that already lies in a segment can be referenced instead of copied.

Everything a session leaves on disk is its user's alone: segments and spill files are 0600, and
spill files lie in a folder of the session's own (``ember-spill-<session>`` in the spill
directory, 0700, made at the first spill and removed with the session), never under a
predictable name in a shared temp dir.
"""

from __future__ import annotations

import ctypes
import fcntl
import itertools
import mmap
import os
import stat
import threading
import weakref
from dataclasses import dataclass

from ember.core._settings import SEGMENT_PREFIX
from ember.core._settings import SHM_DIR as SHM_DIR  # also read from here by ember.core.local

ALIGN = 64


class _PyBuffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.py_object),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.POINTER(ctypes.c_ssize_t)),
        ("strides", ctypes.POINTER(ctypes.c_ssize_t)),
        ("suboffsets", ctypes.POINTER(ctypes.c_ssize_t)),
        ("internal", ctypes.c_void_p),
    ]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None
_PyBUF_SIMPLE = 0


def buffer_address(obj: object) -> int:
    """Start address of a contiguous buffer (read-only ones too)."""
    view = _PyBuffer()
    if _get_buffer(obj, ctypes.byref(view), _PyBUF_SIMPLE) != 0:  # pragma: no cover
        raise BufferError("object does not expose a contiguous buffer")
    try:
        return int(view.buf or 0)
    finally:
        _release_buffer(ctypes.byref(view))


def aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class SegmentNames:
    """Names of the segments of one runtime session; lets shutdown sweep them all."""

    session: str
    spill_root: str  # the spill directory (EMBER_SPILL_DIR): the session's folder goes in it

    def prefix(self) -> str:
        return f"{SEGMENT_PREFIX}{self.session}-"

    def shm_path(self, name: str) -> str:
        return os.path.join(SHM_DIR, name)

    def spill_folder(self) -> str:
        return os.path.join(self.spill_root, f"{SEGMENT_PREFIX}spill-{self.session}")

    def spill_path(self, name: str) -> str:
        return os.path.join(self.spill_folder(), name)


_counter = itertools.count()
_registry_lock = threading.Lock()
# name -> (weakref to mmap, base address, size)
_mapped: dict[str, tuple[weakref.ref[mmap.mmap], int, int]] = {}


def new_segment_name(names: SegmentNames) -> str:
    return f"{names.prefix()}{os.getpid()}-{next(_counter)}"


def create_segment(names: SegmentNames, name: str, size: int) -> mmap.mmap:
    """Create a segment file of ``size`` bytes and map it writable, pages pre-faulted."""
    path = names.shm_path(name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, max(size, 1))
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        return mmap.mmap(fd, max(size, 1), flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)


def map_segment(names: SegmentNames, name: str) -> mmap.mmap:
    """Map a segment for reading, reusing this process's live mapping when there is one."""
    with _registry_lock:
        entry = _mapped.get(name)
        if entry is not None:
            live = entry[0]()
            if live is not None:
                return live
    for path in (names.shm_path(name), names.spill_path(name)):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        remember_mapping(name, mm)
        return mm
    from ember.errors import ObjectLostError

    raise ObjectLostError(f"shared-memory segment {name!r} no longer exists (object was freed)")


def remember_mapping(name: str, mm: mmap.mmap) -> None:
    base = buffer_address(mm)

    def forget(ref: weakref.ref[mmap.mmap]) -> None:
        _forget(name, ref)

    with _registry_lock:
        _mapped[name] = (weakref.ref(mm, forget), base, len(mm))


def _forget(name: str, ref: weakref.ref[mmap.mmap]) -> None:
    with _registry_lock:
        entry = _mapped.get(name)
        if entry is not None and entry[0] is ref:
            del _mapped[name]


def locate(address: int, nbytes: int) -> tuple[str, int] | None:
    """(segment name, offset) when [address, address+nbytes) lies inside a live mapping."""
    with _registry_lock:
        for name, (ref, base, size) in _mapped.items():
            if base <= address and address + nbytes <= base + size and ref() is not None:
                return name, address - base
    return None


def segment_exists(names: SegmentNames, name: str) -> bool:
    return os.path.exists(names.shm_path(name)) or os.path.exists(names.spill_path(name))


def unlink_segment(names: SegmentNames, name: str) -> None:
    for path in (names.shm_path(name), names.spill_path(name)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _is_private_folder(st: os.stat_result) -> bool:
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
            and not st.st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def _make_spill_folder(names: SegmentNames) -> str:
    """The session's spill folder, made owner-only (0700) if it does not exist yet. One that
    exists but is not this user's alone (someone made it first) is refused, not used."""
    folder = names.spill_folder()
    try:
        os.mkdir(folder, 0o700)
        os.chmod(folder, 0o700)  # whatever the umask
    except FileExistsError:
        pass
    st = os.lstat(folder)
    if not _is_private_folder(st):
        raise PermissionError(
            f"spill folder {folder!r} is not a folder that only this user can enter (owner uid "
            f"{st.st_uid}, mode {stat.filemode(st.st_mode)}): refusing to spill into it; remove "
            "it, or point EMBER_SPILL_DIR at a directory other users cannot write")
    return folder


def spill_segment(names: SegmentNames, name: str) -> bool:
    """Move a segment from shared memory to the spill folder; readers find it in either place.

    The spill file is complete (written, then renamed into place) before the shared-memory file
    is removed, so at every moment one complete copy exists under a known path. Raises
    ``OSError`` when the spill folder cannot be made or written.
    """
    src = names.shm_path(name)
    dst = os.path.join(_make_spill_folder(names), name)
    tmp = dst + ".partial"
    try:
        with open(src, "rb") as fin:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "wb") as fout:
                while True:
                    chunk = fin.read(16 << 20)
                    if not chunk:
                        break
                    fout.write(chunk)
    except FileNotFoundError:
        return False
    os.replace(tmp, dst)
    os.unlink(src)
    return True


def sweep(names: SegmentNames) -> int:
    """Remove every segment of the session (shared memory and spill files), its spill folder
    and its lock file; returns the number of segments removed."""
    removed = 0
    prefix = names.prefix()
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        entries = []
    for entry in entries:
        if entry.startswith(prefix):
            try:
                os.unlink(os.path.join(SHM_DIR, entry))
                removed += 1
            except OSError:
                pass
    folder = names.spill_folder()
    try:
        private = _is_private_folder(os.lstat(folder))
    except OSError:
        private = False
    if private:  # one that is not the user's own was never used: leave it to its owner
        for entry in os.listdir(folder):
            try:
                os.unlink(os.path.join(folder, entry))
                removed += not entry.endswith(".partial")
            except OSError:
                pass
        try:
            os.rmdir(folder)
        except OSError:
            pass
    try:
        os.unlink(_lock_path(names.session))
    except OSError:
        pass
    return removed


# -- sessions whose every process died ---------------------------------------------------------
# Each runtime session has a lock file, /dev/shm/.ember-<session>.lock, held with a shared
# flock by the driver, the fork server and the workers (one open file, inherited). The kernel
# drops the lock when the last of them dies, however it dies. A new runtime that can take the
# lock exclusively knows the session is dead and removes what it left: the cleanup for the
# cases no process of the session lived through (a whole cgroup killed, the OOM killer).
_LOCK_PREFIX = "." + SEGMENT_PREFIX
_LOCK_SUFFIX = ".lock"


def _lock_path(session: str) -> str:
    return os.path.join(SHM_DIR, f"{_LOCK_PREFIX}{session}{_LOCK_SUFFIX}")


def hold_session_lock(names: SegmentNames) -> int:
    """Create the session's lock file and hold it (shared); returns the descriptor, which
    child processes must inherit. It appears under its name only once it is locked, so a
    sweeping runtime never takes a starting session for a dead one."""
    final = _lock_path(names.session)
    staging = f"{final}.{os.getpid()}.new"
    fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.rename(staging, final)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(staging)
        except OSError:
            pass
        raise
    os.set_inheritable(fd, True)
    return fd


def sweep_dead_sessions(spill_root: str) -> int:
    """Remove the segments of every session whose processes all died without cleaning up
    (their lock is free); returns the number of segments removed. Sessions still running, and
    segments without a lock file, are left alone."""
    removed = 0
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return 0
    for entry in entries:
        if not (entry.startswith(_LOCK_PREFIX) and entry.endswith(_LOCK_SUFFIX)):
            continue
        session = entry[len(_LOCK_PREFIX):-len(_LOCK_SUFFIX)]
        try:
            fd = os.open(os.path.join(SHM_DIR, entry), os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: a process of that session is alive
            os.close(fd)
            continue
        try:
            removed += sweep(SegmentNames(session, spill_root))
        finally:
            os.close(fd)
    return removed
