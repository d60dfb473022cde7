"""Helpers for this suite's tests that run in the test process (never shipped to workers).

What users need too (``eventually``, ``FakeClock``, ``LeakCheck``, ``ServeTestClient``) lives in
``ember.testing``; this module keeps what only this suite's own tests use.

Code that runs inside tasks and actors is defined inside the test functions themselves: cloudpickle
ships such nested functions by value, so workers never need to import the ``tests`` package.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from ember.core._shm import SegmentNames

SHM_DIR = "/dev/shm"
SEGMENT_PREFIX = "ember-"


def session_pids(sid: int) -> list[int]:
    """Processes of session ``sid`` (a subprocess started with ``start_new_session=True`` and
    all it started, however deep), and the local backend's fork server and workers that a
    driver in that session started in a session of their own (they carry
    ``EMBER_DRIVER_SID``); Linux only."""
    tag = f"EMBER_DRIVER_SID={sid}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    found.append(int(entry))
                    continue
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if tag in f.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:  # gone meanwhile, or not ours to read
                pass
    return found


def ember_segments(folder: str = SHM_DIR) -> set[str]:
    """Names of the ember segments in ``folder`` (by default the shared-memory mount)."""
    try:
        return {name for name in os.listdir(folder) if name.startswith(SEGMENT_PREFIX)}
    except FileNotFoundError:
        return set()


@contextmanager
def throwaway_session(spill_dir: str | None = None) -> Iterator[SegmentNames]:
    """Segment names of a throwaway session, whose lock this process holds meanwhile (as a
    runtime's processes do), so that other test processes running at the same time take its
    segments for a live program's, not for leftovers, and never sweep them. Its segments,
    spill files and lock file are removed afterwards. Spill files go to ``spill_dir`` (the
    temp folder by default)."""
    from ember.core import _shm

    names = _shm.SegmentNames(f"test{os.urandom(4).hex()}", spill_dir or tempfile.gettempdir())
    lock = _shm.hold_session_lock(names)
    try:
        yield names
    finally:
        _shm.sweep(names)
        os.close(lock)


def settle(read: Callable[[], int], *, quiet: float = 0.5, timeout: float = 10.0) -> int:
    """Read a growing counter until it stops changing for ``quiet`` seconds; returns it."""
    deadline = time.monotonic() + timeout
    value = read()
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = read()
        if now != value:
            value, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            break
    return value


def is_gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie that nobody reaped counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def alive_after(processes: Iterable[psutil.Process], timeout: float = 5.0) -> list[psutil.Process]:
    """The processes of ``processes`` that are still running ``timeout`` s from now at the latest."""
    procs = list(processes)
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if not is_gone(p.pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)


def describe(processes: Iterable[psutil.Process]) -> str:
    out = []
    for proc in processes:
        try:
            out.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]!r}")
        except psutil.Error:
            out.append(str(proc.pid))
    return ", ".join(out)


def mapped_file(address: int) -> str | None:
    """The file whose mapping holds ``address`` in this process (from /proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                return fields[5].strip() if len(fields) == 6 else None
    return None


class Gate:
    """A latch made of a file, for remote code to wait on without calling ``ember.get``.

    Remote code polls ``os.path.exists(gate.path)``; a task waiting that way keeps its CPUs,
    unlike one blocked in ``ember.get`` (whose CPUs both backends lend to other work).
    """

    def __init__(self, folder: Path, name: str = "gate") -> None:
        self.path = str(folder / name)

    def open(self) -> None:
        Path(self.path).touch()
