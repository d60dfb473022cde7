"""A fork server for worker processes.

One small process imports the worker code once and then forks a worker for each request, so a
new worker is ready in a few milliseconds and never inherits the driver's threads or state.

Why not ``multiprocessing``'s forkserver: it re-imports the user's ``__main__`` module in every
child, so a script without an ``if __name__ == "__main__":`` guard would start its whole program
again inside each worker. Ray has no such requirement, and neither does ember.

The server starts with two arguments on its command line: the control socket's descriptor and
the session's segment names (``SegmentNames``: session id and spill folder). Protocol on the
control socket (pickled, length-prefixed frames):
- driver -> server: ``("spawn", uid, config)`` with the worker's socket passed as SCM_RIGHTS;
- server -> driver: ``("spawned", uid, pid)`` and, when a worker ends, ``("exit", pid, code)``
  where ``code`` is the exit status, or ``-signal`` when a signal killed it.
When the control socket closes (the driver exited, shut down or was killed), or the server gets
SIGTERM (systemd stopping a service sends it to every process at once), it kills its workers,
waits until they are dead (so none is left creating a segment), removes the runtime session's
shared-memory segments and spill files, and exits: nothing outlives the driver.

The server runs in a process session of its own (``setsid``), and its workers with it. A signal
to the driver's process group (Ctrl-C, ``kill -9 -PGID``, a job runner ending the job's group)
therefore reaches only the driver, and the server, told by its control socket, cleans up. Were
they in the driver's group, all would die at once, nobody would remove the segments, and they
would stay in /dev/shm until reboot. Only a SIGKILL of the server too (a whole cgroup killed)
still leaves them; then the session's lock, which the server and its workers inherit open,
falls free, and the next runtime on the machine removes them (``_shm.sweep_dead_sessions``).
The server and its workers carry the driver's session id in their environment
(``EMBER_DRIVER_SID``), so whoever tracks a job by its session finds them.
"""

from __future__ import annotations

import array
import os
import pickle
import selectors
import signal
import socket
import subprocess
import sys
from typing import Any, NoReturn

from ember.core import _shm
from ember.core.local._transport import _frame, _FrameReader, recv_frames

_MAX_FDS = 1
DRIVER_SID_VAR = "EMBER_DRIVER_SID"


class ForkServer:
    """The driver's handle on the fork server process."""

    def __init__(self, names: _shm.SegmentNames, session_lock: int | None) -> None:
        parent, child = socket.socketpair()
        # The driver's sys.path, not `-c`'s (which puts the current directory first): the
        # workers must import the same ember, and the same user modules, as the driver.
        code = (f"import sys; sys.path[:] = {sys.path!r}; "
                f"from ember.core.local._forkserver import serve; "
                f"serve({child.fileno()}, {names.session!r}, {names.spill_root!r})")
        # The driver's session id goes along in the environment (workers inherit it), so a
        # supervisor that tracks a job by its session can still find these processes.
        env = {**os.environ, DRIVER_SID_VAR: str(os.getsid(0))}
        self._proc = subprocess.Popen(
            # The session's lock (see _shm.hold_session_lock) stays open in the server and,
            # through fork, in every worker: it is free only once all of them are dead.
            [sys.executable, "-c", code], close_fds=True,
            pass_fds=(child.fileno(),) + (() if session_lock is None else (session_lock,)),
            start_new_session=True, env=env,  # out of the driver's process group: see above
        )
        child.close()
        self.sock = parent
        self._reader = _FrameReader()

    def fileno(self) -> int:
        return self.sock.fileno()

    def spawn(self, uid: int, config: Any, worker_sock: socket.socket,
              output_fds: tuple[int, ...] = ()) -> None:
        """Start a worker on ``worker_sock``; ``output_fds`` (stdout, stderr) become its file
        descriptors 1 and 2 (``config.output_fds`` says how many follow the socket)."""
        payload = _frame(pickle.dumps(("spawn", uid, config), protocol=5))
        fds = array.array("i", [worker_sock.fileno(), *output_fds])
        try:
            self.sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        except OSError:
            pass  # the server is gone: the driver learns it from the end of this socket

    def exit_code(self, timeout: float = 1.0) -> int | None:
        """The server's exit code once it has exited (None while it runs)."""
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def read(self) -> list[tuple[Any, ...]] | None:
        """Notices available now; None once the server is gone."""
        frames = recv_frames(self.sock, self._reader)
        return None if frames is None else [pickle.loads(frame) for frame in frames]

    def close(self, timeout: float = 5.0) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _receive(sock: socket.socket, reader: _FrameReader, pending_fds: list[int]
             ) -> list[bytes] | None:
    fd_size = array.array("i").itemsize
    try:
        data, ancdata, _flags, _addr = sock.recvmsg(1 << 16, socket.CMSG_LEN(16 * fd_size))
    except OSError:  # reset by a driver that closed with notices unread: it is gone either way
        return None
    if not data:
        return None
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(cdata[: len(cdata) - (len(cdata) % fd_size)])
            pending_fds.extend(fds)
    return reader.feed(data)


def serve(control_fd: int, session: str, spill_root: str) -> None:
    """Main loop of the fork server process."""
    import ember.core.local._worker as worker_module  # preload: children start with it
    from ember.core.local._logs import redirect_output

    names = _shm.SegmentNames(session, spill_root)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = socket.socket(fileno=control_fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    # The handlers do nothing: the wakeup pipe carries each signal's number to the loop.
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    reader = _FrameReader()
    pending_fds: list[int] = []
    children: set[int] = set()

    def notify(message: tuple[Any, ...]) -> None:
        try:
            control.sendall(_frame(pickle.dumps(message, protocol=5)))
        except OSError:
            pass

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            notify(("exit", pid, code))

    def end_session() -> NoReturn:
        """Take the workers with us, then remove what they and the driver left."""
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for _ in list(children):
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        _shm.sweep(names)  # only now: a worker killed mid-write can create nothing more
        os._exit(0)

    while True:
        for key, _mask in selector.select():
            if key.fileobj == wake_r:
                try:
                    signals = os.read(wake_r, 4096)
                except BlockingIOError:
                    signals = b""
                if signal.SIGTERM in signals:
                    end_session()
                reap()
                continue
            frames = _receive(control, reader, pending_fds)
            if frames is None:  # the driver is gone
                end_session()
            for frame in frames:
                _kind, uid, config = pickle.loads(frame)
                fd = pending_fds.pop(0)
                output = [pending_fds.pop(0) for _ in range(getattr(config, "output_fds", 0))]
                pid = os.fork()
                if pid == 0:
                    try:
                        selector.close()
                        control.close()
                        os.close(wake_r)
                        os.close(wake_w)
                        signal.set_wakeup_fd(-1)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        signal.signal(signal.SIGTERM, signal.SIG_DFL)
                        for other in pending_fds:
                            os.close(other)
                        if output:
                            redirect_output(*output)
                        worker_module.worker_main(socket.socket(fileno=fd), config)
                    finally:
                        os._exit(1)
                os.close(fd)
                for other in output:
                    os.close(other)
                children.add(pid)
                notify(("spawned", uid, pid))
        reap()

