"""Helpers for tests that run in the test process (never shipped to workers).

Code that runs inside tasks and actors is defined inside the test functions themselves: cloudpickle
ships such nested functions by value, so workers never need to import the ``tests`` package.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import psutil

SHM_DIR = "/dev/shm"
SEGMENT_PREFIX = "ember-"

T = TypeVar("T")


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


_sessions_seen: set[str] = set()


def note_session() -> None:
    """Remember the running runtime's session, so leak checks can tell its segments apart.

    Other programs on the machine (a benchmark, another test run) may use ember at the same time;
    their segments are none of this test's business.
    """
    import ember

    if ember.is_initialized():
        _sessions_seen.add(ember.get_runtime_context().get_job_id())


def segments_of_this_process(names: set[str]) -> set[str]:
    """The segments in ``names`` made by this process or by a runtime it started.

    A segment is named ``ember-{session}-{pid of its creator}-{n}``.
    """
    mine = set()
    for name in names:
        parts = name.split("-")
        if len(parts) >= 4 and (parts[1] in _sessions_seen or parts[2] == str(os.getpid())):
            mine.add(name)
    return mine


def wait_for(predicate: Callable[[], T], *, timeout: float = 30.0, what: str = "a condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` s.

    For state that settles asynchronously (a freed segment, a process that exits, resource
    counts on the ray backend). It never asserts how long the wait took.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        time.sleep(0.02)


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


def shutdown_and_check(timeout: float = 5.0) -> None:
    """``ember.shutdown()``, then fail if any process the runtime started is still running.

    The processes are listed before shutdown: a worker orphaned by its fork server would no
    longer show up among this process's children afterwards.
    """
    import ember

    note_session()
    started = psutil.Process().children(recursive=True)
    ember.shutdown()
    alive = alive_after(started, timeout)
    assert not alive, f"ember.shutdown() left processes running: {describe(alive)}"
    leaked = segments_of_this_process(ember_segments())
    assert not leaked, f"ember.shutdown() left shared-memory segments: {sorted(leaked)}"


class Gate:
    """A latch made of a file, for remote code to wait on without calling ``ember.get``.

    Remote code polls ``os.path.exists(gate.path)``; a task waiting that way keeps its CPUs,
    unlike one blocked in ``ember.get`` (whose CPUs both backends lend to other work).
    """

    def __init__(self, folder: Path, name: str = "gate") -> None:
        self.path = str(folder / name)

    def open(self) -> None:
        Path(self.path).touch()
