"""The HTTP data path: a direct socket from the proxy to each replica on the same machine.

An actor call travels proxy -> driver -> replica and back, with thread hand-offs at each end;
for a request that does nothing that costs several times the request itself. So each replica
also listens on a socket of its own (a Linux abstract Unix socket, else TCP on 127.0.0.1), and
the proxy keeps one connection per replica over which every request to it is multiplexed. Both
ends live on their event loops: no thread is involved between the client's bytes and the app.

Frames are a 4-byte length and a pickle:

- proxy -> replica: ``("req", rid, scope, body, model_id)``; ``("ack", rid)`` when the messages
  of one non-final frame reached the client; ``("cancel", rid)`` when the client went away;
- replica -> proxy: ``("out", rid, messages, status)``, the ASGI messages sent so far, with
  ``status`` ``None`` (more follow), ``"ok"`` (the response is complete) or an error text.

A complete response is one frame. A streamed chunk is written the moment the app sends it,
unless it follows the last frame within ``COALESCE_S``: then it leaves at the loop's next turn
with the chunks produced meanwhile. Frames written in one turn share one system call.

Flow control: a response has at most ``FRAMES_IN_FLIGHT`` unacknowledged frames, so a slow
client holds back the generator that streams to it, not the proxy's memory. A connection that
breaks fails every request on it at once (the replica died: 500, never a hang); one the proxy
drops cancels every request it carried on the replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import pickle
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import Any

FRAMES_IN_FLIGHT = 8
MAX_MESSAGES_PER_FRAME = 64
COALESCE_S = 0.001  # a chunk this soon after the last frame waits for the loop's next turn
_HEADER = struct.Struct("!I")

Send = Callable[[dict[str, Any]], Awaitable[None]]
# (scope, body, model_id, send) -> runs the request; its exception is the request's failure.
Handler = Callable[[dict[str, Any], bytes, str, Send], Awaitable[None]]


def _frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    return pickle.loads(await reader.readexactly(size))


class _Coalescer:
    """Frames written during one turn of the event loop leave in one ``write`` (one system
    call for many concurrent requests, instead of one each)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._pending: list[bytes] = []

    def send(self, obj: Any) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(_frame(obj))

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self.writer.is_closing():
                self.writer.write(data)


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# --------------------------------------------------------------------------------------------
# The replica's end.


class DirectServer:
    """Serves the proxy's connections inside a replica; ``handler`` runs each request."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        self.address: tuple[str, Any] | None = None

    async def start(self) -> tuple[str, Any]:
        """Listen; returns ``(hostname, address)`` for ``DirectChannel.connect``."""
        if self.address is None:
            if sys.platform.startswith("linux"):
                path = f"\0ember-serve-{os.getpid()}-{os.urandom(6).hex()}"
                self._server = await asyncio.start_unix_server(self._connection, path=path)
                self.address = (socket.gethostname(), ("unix", path))
            else:
                self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
                port = self._server.sockets[0].getsockname()[1]
                self.address = (socket.gethostname(), ("tcp", ("127.0.0.1", port)))
        return self.address

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        _set_nodelay(writer)
        out = _Coalescer(writer)
        running: dict[int, asyncio.Task[None]] = {}
        credits: dict[int, asyncio.Semaphore] = {}
        try:
            while True:
                frame = await _read_frame(reader)
                kind, rid = frame[0], frame[1]
                if kind == "req":
                    task = asyncio.create_task(
                        self._respond(rid, frame[2], frame[3], frame[4], out, credits)
                    )
                    running[rid] = task
                    task.add_done_callback(functools.partial(_forget, running, credits, rid))
                elif kind == "ack":
                    if rid in credits:
                        credits[rid].release()
                elif kind == "cancel" and rid in running:
                    running[rid].cancel()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass  # the proxy went away (or shut down): what it asked for is no longer wanted
        finally:
            for task in list(running.values()):
                task.cancel()
            writer.close()

    async def _respond(self, rid: int, scope: dict[str, Any], body: bytes, model_id: str,
                       out: _Coalescer, credits: dict[int, asyncio.Semaphore]) -> None:
        pending: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        last_write = float("-inf")
        flush_handle: asyncio.Handle | None = None
        have_credit = False
        closed = False
        credit = credits.get(rid)

        def write_pending() -> None:
            nonlocal flush_handle, last_write, have_credit
            if flush_handle is not None:
                flush_handle.cancel()
                flush_handle = None
            if pending and not closed:
                out.send(("out", rid, list(pending), None))
                pending.clear()
                out.flush()
                last_write = loop.time()
                have_credit = False

        async def send(message: dict[str, Any]) -> None:
            nonlocal flush_handle, have_credit, credit
            pending.append(message)
            if message.get("type") != "http.response.body" or not message.get("more_body"):
                return  # the head waits for the first chunk; the last leaves with the end
            # A streamed chunk. Each frame takes a credit: at most FRAMES_IN_FLIGHT frames wait
            # for the client. A chunk that comes a while after the last frame leaves at once,
            # even if the generator then computes the next one without giving the loop a turn
            # (a model's forward pass); chunks that come back to back share a frame.
            if not have_credit:
                if credit is None:  # the first streamed frame: the window opens
                    credit = credits[rid] = asyncio.Semaphore(FRAMES_IN_FLIGHT)
                await credit.acquire()
                have_credit = True
            if loop.time() - last_write >= COALESCE_S or len(pending) >= MAX_MESSAGES_PER_FRAME:
                write_pending()
            elif flush_handle is None:
                flush_handle = loop.call_soon(write_pending)

        status = "ok"
        try:
            await self._handler(scope, body, model_id, send)
        except asyncio.CancelledError:
            closed = True
            raise
        except BaseException as exc:  # goes to the proxy: 500, or a cut stream
            status = f"{type(exc).__name__}: {exc}"
        finally:
            if flush_handle is not None:
                flush_handle.cancel()
        out.send(("out", rid, pending, status))


def _forget(running: dict[int, Any], credits: dict[int, Any], rid: int, _: Any) -> None:
    running.pop(rid, None)
    credits.pop(rid, None)


# --------------------------------------------------------------------------------------------
# The proxy's end.


class ReplicaLost(ConnectionError):
    """The connection to a replica broke: the replica died or is going away."""


class DirectChannel:
    """The proxy's connection to one replica; ``open`` starts a request over it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._out = _Coalescer(writer)
        self._ids = itertools.count()
        self._streams: dict[int, asyncio.Queue[Any]] = {}
        self.lost: BaseException | None = None
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, address: tuple[str, Any]) -> DirectChannel | None:
        """A channel to the replica at ``address``, or ``None`` when it cannot be reached
        from here (another machine): then the caller uses actor calls instead."""
        host, (family, where) = address
        if host != socket.gethostname():
            return None
        try:
            if family == "unix":
                # Connected here, then handed over: uvloop cannot connect to abstract names.
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(where)  # a local socket: at once
                except OSError:
                    sock.close()
                    raise
                sock.setblocking(False)
                reader, writer = await asyncio.open_unix_connection(sock=sock)
            else:
                reader, writer = await asyncio.open_connection(*where)
        except OSError:
            return None
        _set_nodelay(writer)
        return cls(reader, writer)

    def open(self, scope: dict[str, Any], body: bytes, model_id: str
             ) -> tuple[int, asyncio.Queue[Any]]:
        """Send a request; its frames (``(messages, status)``) arrive on the queue, or a
        ``ReplicaLost`` when the connection breaks."""
        if self.lost is not None:
            raise self.lost
        rid = next(self._ids)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._streams[rid] = queue
        self._out.send(("req", rid, scope, body, model_id))
        return rid, queue

    def ack(self, rid: int) -> None:
        if self.lost is None:
            self._out.send(("ack", rid))

    def cancel(self, rid: int) -> None:
        self._streams.pop(rid, None)
        if self.lost is None:
            self._out.send(("cancel", rid))

    def close(self) -> None:
        self._task.cancel()
        self._writer.close()

    async def _read(self) -> None:
        try:
            while True:
                _, rid, messages, status = await _read_frame(self._reader)
                queue = self._streams.get(rid)
                if queue is None:
                    continue  # cancelled meanwhile
                if status is not None:
                    del self._streams[rid]
                queue.put_nowait((messages, status))
        except asyncio.CancelledError:
            self.lost = ReplicaLost("the proxy closed its connection to the replica")
            raise
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            self.lost = ReplicaLost(f"the replica died (its connection closed: {exc!r})")
        except BaseException as exc:  # a frame we cannot read: treat the replica as lost
            self.lost = ReplicaLost(f"the connection to the replica failed: {exc!r}")
        finally:
            streams, self._streams = self._streams, {}
            for queue in streams.values():
                queue.put_nowait(self.lost)
            self._writer.close()
