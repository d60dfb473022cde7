"""Workers' stdout and stderr, read by the driver: kept per process for ``ember logs`` and, when
``log_to_driver`` is on, printed on the driver's own streams prefixed ``(Name pid=N)`` as Ray
does.

Each worker gets two pipes from the driver (passed through the fork server beside its socket)
that become its file descriptors 1 and 2, so everything it writes lands here: ``print``, C
libraries, and the traceback of a crash. One thread reads every pipe; it touches the driver's
records only to name the line's task (a read without the lock: a line written while a task
ends may be named after its neighbour, which is all a log prefix needs).
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from ember.core._observe import ProcessLog, Store

logger = logging.getLogger("ember")

_CHUNK = 1 << 16
_MAX_LINE = 16 * 1024  # a longer line is cut (a process printing megabytes without newlines)


class _Pipe:
    __slots__ = ("fd", "log", "partial", "stream")

    def __init__(self, fd: int, log: ProcessLog, stream: str) -> None:
        self.fd, self.log, self.stream = fd, log, stream
        self.partial = b""


class OutputCapture:
    """The thread that reads every worker's output pipes."""

    def __init__(self, store: Store, log_to_driver: bool,
                 task_of: Callable[[Any], tuple[str | None, int | None]]) -> None:
        self._store = store
        self.log_to_driver = log_to_driver
        self._task_of = task_of  # worker uid -> (name of what it runs, task id) or (None, None)
        self._epoll = select.epoll()
        self._pipes: dict[int, _Pipe] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="ember-logs", daemon=True)
        self._thread.start()

    def open(self, uid: Any, name: str, actor_id: int | None) -> tuple[int, int]:
        """Pipes for a new worker: returns the write ends (stdout, stderr) to hand it; the
        caller closes them once they are handed over."""
        log = self._store.open_log(uid, name, actor_id)
        ends = []
        for stream in ("stdout", "stderr"):
            read_end, write_end = os.pipe()
            os.set_blocking(read_end, False)
            with self._lock:
                self._pipes[read_end] = _Pipe(read_end, log, stream)
            self._epoll.register(read_end, select.EPOLLIN)
            ends.append(write_end)
        return ends[0], ends[1]

    def _loop(self) -> None:
        while not self._closed:
            try:
                events = self._epoll.poll()
            except OSError:  # closed under us at shutdown
                return
            for fd, _mask in events:
                if fd == self._wake_r:
                    continue
                with self._lock:
                    pipe = self._pipes.get(fd)
                if pipe is not None:
                    self._read(pipe)

    def _read(self, pipe: _Pipe) -> None:
        try:
            data = os.read(pipe.fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the process ended: keep what it left without a newline too
            if pipe.partial:
                self._emit(pipe, [pipe.partial])
                pipe.partial = b""
            self._close_pipe(pipe)
            return
        data = pipe.partial + data
        *lines, pipe.partial = data.split(b"\n")
        if len(pipe.partial) > _MAX_LINE:
            lines.append(pipe.partial)
            pipe.partial = b""
        if lines:
            self._emit(pipe, lines)

    def _emit(self, pipe: _Pipe, raw: list[bytes]) -> None:
        texts = [line[:_MAX_LINE].decode("utf-8", "replace").rstrip("\r") for line in raw]
        log = pipe.log
        name, task_id = self._task_of(log.uid)
        if name is not None and log.actor_id is None:
            log.name = name
        self._store.add_lines(log, pipe.stream, texts, task_id)
        if self.log_to_driver:
            out: TextIO = sys.stdout if pipe.stream == "stdout" else sys.stderr
            prefix = f"({log.name} pid={log.pid if log.pid is not None else '?'}) "
            try:
                out.write("".join(f"{prefix}{text}\n" for text in texts))
                out.flush()
            except (OSError, ValueError):  # the driver's stream is closed: keep the log only
                pass

    def _close_pipe(self, pipe: _Pipe) -> None:
        with self._lock:
            self._pipes.pop(pipe.fd, None)
        try:
            self._epoll.unregister(pipe.fd)
        except (OSError, ValueError):
            pass
        os.close(pipe.fd)

    def close(self) -> None:
        """Stop reading: drains what the ended workers left in their pipes first."""
        self._closed = True
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        with self._lock:
            pipes = list(self._pipes.values())
        for pipe in pipes:
            try:
                while True:  # what is already in the pipe (the workers are gone by now)
                    data = os.read(pipe.fd, _CHUNK)
                    if not data:
                        break
                    pipe.partial += data
                    *lines, pipe.partial = pipe.partial.split(b"\n")
                    if lines:
                        self._emit(pipe, lines)
            except OSError:
                pass
            if pipe.partial:
                self._emit(pipe, [pipe.partial])
            self._close_pipe(pipe)
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def redirect_output(stdout_fd: int, stderr_fd: int) -> None:
    """In a new worker: make the pipes its stdout and stderr, flushed line by line."""
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    os.close(stdout_fd)
    os.close(stderr_fd)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(line_buffering=True)
            except (OSError, ValueError):
                pass
