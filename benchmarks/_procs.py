"""Process plumbing shared by the benchmarks (not a benchmark: ``report.py`` skips ``_*.py``).

Every framework runs in a child process of its own session, so that what it leaves running
(Ray's daemons) can be found afterwards, given time to exit, and killed if it does not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time


def session_pids(sid: int) -> list[int]:
    """Processes still in session ``sid``, and ember's fork server and workers that a driver in
    that session started in a session of their own (they carry ``EMBER_DRIVER_SID``); Linux
    only (empty elsewhere)."""
    if not os.path.isdir("/proc"):
        return []
    tag = f"EMBER_DRIVER_SID={sid}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
                    continue
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if tag in f.read().split(b"\0"):
                        pids.append(int(entry))
    return pids


def reap_session(sid: int, grace_s: float = 30.0, *, say: bool = True) -> list[int]:
    """Give what session ``sid`` still runs ``grace_s`` to exit, then kill it; returns the pids
    it had to kill."""
    deadline = time.monotonic() + grace_s
    while (left := session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        if say:
            print(f"[benchmark] killing pid {pid}, left behind by a child", file=sys.stderr)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return left


def wait_for_quiet_cpus(what: str, busy: list[str], *, threshold_pct: float = 15.0,
                        max_wait_s: float = 10.0) -> None:
    """Start measuring only once the CPUs are (nearly) idle; append ``what`` to ``busy`` when
    they never were within ``max_wait_s``."""
    try:
        import psutil
    except ImportError:
        time.sleep(1.0)
        return
    deadline = time.monotonic() + max_wait_s
    while psutil.cpu_percent(interval=0.25) > threshold_pct:
        if time.monotonic() > deadline:
            busy.append(what)
            return


def run_child(argv: list[str], timeout_s: float) -> tuple[str, str, int]:
    """Run ``python ARGV`` in a session of its own; returns (stdout, stderr, exit code). A child
    over ``timeout_s`` is killed with all it started, and its stderr says so."""
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        stderr += f"\n[benchmark] child timed out after {timeout_s:.0f} s and was killed"
    reap_session(proc.pid)
    return stdout, stderr, proc.returncode
