"""``LeakCheck``: nothing an ember runtime started may outlive it.

What counts as left behind:

- processes: children of this process (however deep) that appeared during the check, and the
  runtime's own processes when the check shuts the runtime down itself, still running
  ``timeout`` seconds after the end (zombies count as gone);
- shared-memory segments (``/dev/shm/ember-<session>-...``) that appeared during the check and
  whose runtime session is over, and every segment of a runtime the check shut down itself.
  A session is over when its lock file (``/dev/shm/.ember-<session>.lock``, held by each of its
  processes; see ``ember/core/_shm.py``) is gone or free: segments of other programs that use
  ember on the machine at the same time are not this test's business;
- temp folders, when asked to look at one: entries named ``ember-*`` that appeared in it
  during the check.

Linux only (it reads ``/proc``), as the local backend is.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from types import TracebackType

from ember.core import SEGMENT_PREFIX, SHM_DIR

_LOCK_PREFIX, _LOCK_SUFFIX = "." + SEGMENT_PREFIX, ".lock"  # ember/core/_shm.py's lock files


class LeakCheck:
    """Fails a test that leaves an ember process, shared-memory segment or temp folder behind.

    It notes what exists when it is made; ``check()`` (or the end of a ``with`` block) fails
    with an ``AssertionError`` that lists what appeared since and is still there. If a runtime
    is still running then, the check shuts it down first (``ember.shutdown()``) and also
    holds that runtime to leaving nothing: its processes must end and its segments go, even
    those that existed before the check began. When the ``with`` block raises, the runtime is
    still shut down but nothing is checked, so the test's own error is what you see.

    ``timeout`` is how long processes get to exit. ``temp_dir`` is a temp folder to hold to
    the same rule (new ``ember-*`` entries are left behind); it is not looked at by default,
    because other programs using ember at the same time (another test worker, say) make
    ``ember-*`` folders in the machine's temp folder too. Give a test a temp folder of its own
    before its runtime starts, and pass it::

        def test_training(tmp_path, monkeypatch):
            monkeypatch.setenv("TMPDIR", str(tmp_path))       # for the runtime's workers
            monkeypatch.setattr(tempfile, "tempdir", None)    # for this process
            with LeakCheck(temp_dir=str(tmp_path)):
                ...

    >>> import ember
    >>> with LeakCheck(timeout=10):
    ...     _ = ember.init(num_cpus=1)
    ...     print(ember.get(ember.put("value")))
    value

    As a pytest fixture for every test::

        @pytest.fixture(autouse=True)
        def no_leaks():
            with LeakCheck():
                yield
    """

    def __init__(self, *, timeout: float = 5.0, temp_dir: str | os.PathLike[str] | None = None
                 ) -> None:
        self.timeout = timeout
        self.temp_dir = None if temp_dir is None else os.fspath(temp_dir)
        self._me = os.getpid()
        self._children = _descendants(self._me)
        self._segments = _segments()
        self._temp = _temp_entries(self.temp_dir)
        self._sessions: set[str] = set()  # runtimes this check shut down itself

    def __enter__(self) -> LeakCheck:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.check()
        else:
            with contextlib.suppress(Exception):  # the block's own error is the one to see
                self._shutdown_runtime()

    def check(self) -> None:
        """Raise ``AssertionError`` naming whatever was left behind (see ``leftovers``)."""
        problems = self.leftovers()
        if problems:
            raise AssertionError("ember left things behind: " + "; ".join(problems))

    def leftovers(self) -> list[str]:
        """What was left behind, one line per kind (empty when nothing was); shuts down a
        runtime that is still running first."""
        runtime_pids = self._shutdown_runtime()
        problems = []
        suspects = (_descendants(self._me) - self._children) | runtime_pids
        alive = _still_running(suspects, self.timeout)
        if alive:
            problems.append("processes still running: " + ", ".join(map(_describe, alive)))
        segments = self._left_segments()
        if segments:
            problems.append(f"shared-memory segments left in {SHM_DIR}: {segments}")
        if self.temp_dir is not None:
            temp = sorted(_temp_entries(self.temp_dir) - self._temp)
            if temp:
                problems.append(f"temp folders left in {self.temp_dir}: {temp}")
        return problems

    def _shutdown_runtime(self) -> set[int]:
        """Shut down a runtime still running; returns its processes (listed before, since a
        worker orphaned on the way would no longer be this process's descendant after)."""
        import ember

        if not ember.is_initialized():
            return set()
        with contextlib.suppress(Exception):  # a broken runtime still gets shut down
            self._sessions.add(ember.get_runtime_context().get_job_id())
        pids = _descendants(self._me)
        ember.shutdown()
        return pids

    def _left_segments(self) -> list[str]:
        now = _segments()
        suspects = {name for name in now if _session_of(name) in self._sessions}
        suspects |= {name for name in now - self._segments
                     if not _session_alive(_session_of(name))}
        # A session removes its segments before its lock file: a segment still there after
        # its lock was seen gone is left for good (not one caught in the middle of a sweep).
        return sorted(name for name in suspects if os.path.exists(os.path.join(SHM_DIR, name)))


# -- /proc and /dev/shm --------------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()  # after "pid (command) "
    return fields[0].decode(), int(fields[1])


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                children.setdefault(stat[1], []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _running(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie nobody reaped has exited


def _still_running(pids: set[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = sorted(pid for pid in pids if _running(pid))
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = "?"
    return f"{pid} {command[:120]!r}"


def _segments() -> set[str]:
    try:
        return {name for name in os.listdir(SHM_DIR) if name.startswith(SEGMENT_PREFIX)}
    except FileNotFoundError:
        return set()


def _session_of(segment: str) -> str:
    return segment[len(SEGMENT_PREFIX):].split("-", 1)[0]


def _session_alive(session: str) -> bool:
    """Whether some process of the runtime session still holds its lock."""
    try:
        fd = os.open(os.path.join(SHM_DIR, f"{_LOCK_PREFIX}{session}{_LOCK_SUFFIX}"), os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the lock if this check took it
    return False


def _temp_entries(folder: str | None) -> set[str]:
    if folder is None:
        return set()
    try:
        return {name for name in os.listdir(folder) if name.startswith(SEGMENT_PREFIX)}
    except FileNotFoundError:
        return set()
