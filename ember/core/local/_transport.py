"""Length-prefixed frames over a Unix socket pair between the driver and one worker.

The driver's end is non-blocking: a send never waits for a busy worker (the unsent rest is
kept and written when the socket becomes writable), so one slow worker cannot stall the driver.
The worker's end blocks, which is what a process with one job at a time wants. Several frames
sent in a row leave in one system call when the socket is busy, which batches small messages.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from ember.core.local._protocol import encode

_T = TypeVar("_T")
_HEADER = struct.Struct("<Q")
_HEADER_SIZE = _HEADER.size
# One read takes at most this much into a reusable buffer. Reading into a fresh bytes object
# instead (``sock.recv(n)``) costs an allocation of ``n`` bytes per call: for a large ``n`` that
# is an mmap/munmap pair and page faults, which dominated a small round trip.
_SCRATCH = 1 << 16


dumps = encode  # a message's bytes (pickle, or the short layout of a plain actor call)


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


class _FrameReader:
    """Splits a byte stream into frames; reads a socket into one reusable buffer."""

    def __init__(self) -> None:
        self._buf = bytearray()  # the start of a frame whose rest has not arrived yet
        self._need = 0  # bytes still missing from the frame in ``_buf`` (0: unknown)
        self._scratch: bytearray | None = None
        self._view: memoryview | None = None

    def recv(self, sock: socket.socket, flags: int = 0) -> list[bytes] | None:
        """The complete frames that one read yields; None at end of stream. Raises what
        ``recv`` raises (BlockingIOError on a non-blocking socket with nothing to read)."""
        if self._need > _SCRATCH:  # the rest of a large frame: read it in large pieces
            data = sock.recv(self._need, flags)
            return self.feed(data) if data else None
        view = self._view
        if view is None:
            self._scratch = bytearray(_SCRATCH)
            view = self._view = memoryview(self._scratch)
        n = sock.recv_into(view, 0, flags)
        if not n:
            return None
        if not self._buf and n > _HEADER_SIZE:
            (size,) = _HEADER.unpack_from(view)
            if size == n - _HEADER_SIZE:  # exactly one whole frame: the common case
                return [view[_HEADER_SIZE:n].tobytes()]
        return self.feed(view[:n])

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        start = 0
        end = len(buf)
        header = _HEADER_SIZE
        self._need = 0
        while end - start >= header:
            (size,) = _HEADER.unpack_from(buf, start)
            if end - start - header < size:
                self._need = size + header - (end - start)
                break
            frames.append(bytes(buf[start + header : start + header + size]))
            start += header + size
        if start:
            del buf[:start]
        return frames


def recv_frames(sock: socket.socket, reader: _FrameReader) -> list[bytes] | None:
    """The complete frames that one read of a ready socket yields; None once the peer closed."""
    try:
        return reader.recv(sock)
    except (BlockingIOError, InterruptedError):
        return []
    except OSError:
        return None


class DriverChannel:
    """The driver's end: non-blocking sends from any thread, reads from the reactor thread."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._reader = _FrameReader()
        self._pending = bytearray()
        self._lock = threading.Lock()
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def send_many(self, messages: list[Any]) -> bool:
        """Send messages in one write; False when part of it waits for the socket to drain."""
        if len(messages) == 1:
            frame = _frame(dumps(messages[0]))
        else:
            frame = b"".join([_frame(dumps(m)) for m in messages])
        with self._lock:
            if self.closed:
                return True
            if self._pending:
                self._pending += frame
                return False
            try:
                sent = self.sock.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:  # the worker is gone; the reactor notices the closed socket
                return True
            if sent < len(frame):
                self._pending += frame[sent:]
                return False
            return True

    def has_pending(self) -> bool:
        return bool(self._pending)

    def flush(self) -> bool:
        """Write what is pending; True when nothing is left."""
        with self._lock:
            if self.closed or not self._pending:
                return True
            try:
                sent = self.sock.send(self._pending)
            except BlockingIOError:
                return False
            except OSError:
                self._pending.clear()
                return True
            del self._pending[:sent]
            return not self._pending

    def read(self) -> list[bytes] | None:
        """Every complete frame available now; None when the worker closed its end."""
        return recv_frames(self.sock, self._reader)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._pending.clear()
        try:
            self.sock.close()
        except OSError:
            pass


def spin_poll(check: Callable[[], _T], seconds: float) -> _T | None:
    """Call ``check`` (a non-blocking look) until it returns something true, for at most
    ``seconds``; that result, or None.

    A process that blocks in the kernel between two messages of a quick exchange pays for
    its CPU going idle and being woken by the sender: on a virtual machine that costs tens of
    microseconds per message, more than the work of the exchange itself. Looking for a
    short while before blocking keeps a busy exchange on awake CPUs. Each look is a system
    call that lets other threads take the GIL. The loop does not yield the CPU: on a busy
    machine a yield can cost the spinner a whole time slice, so it costs other processes at
    most ``seconds`` of CPU instead, and callers stop spinning when waits run long.
    """
    deadline = time.perf_counter() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.perf_counter() > deadline:
            return None


class SpinGate:
    """When a waiting side should spin (a pure policy): after a wait that spinning caught in
    time, spin again; after one it missed, skip the next 1, then 2, 4, ... up to 64 waits.

    A quick exchange on idle CPUs keeps spinning. Where spinning does not pay (long calls, an
    idle peer, or more runnable processes than CPUs, where a spinner holds the CPU its peer
    needs), it is soon tried only once every 64 waits.
    """

    MAX_SKIP = 64
    __slots__ = ("_backoff", "_skip")

    def __init__(self) -> None:
        self._skip = 0
        self._backoff = 0

    def should_spin(self) -> bool:
        if self._skip:
            self._skip -= 1
            return False
        return True

    def spin(self, check: Callable[[], _T], seconds: float) -> _T | None:
        """:func:`spin_poll` ``check`` for up to ``seconds`` if spinning has been paying, and
        record how it went; the result, or None (not spun, or nothing came)."""
        if not self.should_spin():
            return None
        started = time.perf_counter()
        result = spin_poll(check, seconds)
        self.caught(bool(result) and time.perf_counter() - started <= 2 * seconds)
        return result

    def caught(self, in_time: bool) -> None:
        """Record a spin's outcome: True when the message came while spinning and the whole
        wait took at most twice the spin time (not descheduled meanwhile)."""
        if in_time:
            self._backoff = 0
        else:
            self._backoff = min(max(1, 2 * self._backoff), self.MAX_SKIP)
            self._skip = self._backoff


class WorkerChannel:
    """The worker's end: blocking sends (thread-safe) and blocking reads.

    With ``spin`` > 0 (an actor running calls one at a time), a read first polls the socket
    for up to ``spin`` seconds (see :func:`spin_poll`) when its :class:`SpinGate` says that
    spinning has been paying.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self._reader = _FrameReader()
        self._frames: deque[bytes] = deque()
        self._lock = threading.Lock()
        self.spin = 0.0
        self._gate = SpinGate()

    def send_many(self, messages: list[Any]) -> None:
        if len(messages) == 1:
            data = _frame(dumps(messages[0]))
        else:
            data = b"".join([_frame(dumps(m)) for m in messages])
        with self._lock:
            self.sock.sendall(data)

    def recv(self, timeout: float | None = None) -> bytes | None:
        """The next frame; None at end of stream. Raises TimeoutError after ``timeout`` s."""
        if (self.spin and timeout is None and not self._frames
                and self._gate.spin(self._try_read, self.spin) and self._frames):
            return self._frames.popleft()
        while not self._frames:
            if timeout is not None:
                ready, _, _ = select.select([self.sock], [], [], timeout)
                if not ready:
                    raise TimeoutError
            try:
                frames = self._reader.recv(self.sock)
            except InterruptedError:
                continue
            except OSError:
                return None
            if frames is None:
                return None
            self._frames.extend(frames)
        return self._frames.popleft()

    def _try_read(self) -> bool:
        """Read without blocking; True when a frame (or the end of the stream) is in."""
        try:
            frames = self._reader.recv(self.sock, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True  # the blocking read reports it
        if frames is None:
            return True  # likewise: the stream ended
        self._frames.extend(frames)
        return bool(self._frames)

    def has_buffered(self) -> bool:
        return bool(self._frames)
