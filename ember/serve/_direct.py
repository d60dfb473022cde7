"""The HTTP data path: a direct socket from the proxy to each replica on the same machine.

An actor call travels proxy -> driver -> replica and back, with thread hand-offs at each end;
for a request that does nothing that costs several times the request itself. So each replica
also listens on a Unix socket of its own, and the proxy keeps one connection per replica over
which every request to it is multiplexed. Both ends live on their event loops: no thread is
involved between the client's bytes and the app.

Who may connect. Frames are pickles, so only the runtime's own processes may send them. The
socket is a Linux abstract one (elsewhere a socket file in a fresh owner-only folder); the
replica refuses a peer whose uid (``SO_PEERCRED``) is not its own, and then both ends prove that
they hold the replica's key (32 random bytes that the proxy got back from the replica's
``http_address`` actor call, i.e. through the runtime, and that are never written anywhere) with
an HMAC challenge and response, as ``multiprocessing.connection`` does with its authkey. Only
then is the first frame read; until then nothing but fixed-size nonces and digests is read.
A frame is at most ``MAX_FRAME_BYTES``: a larger length prefix ends the connection unread.

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
import functools
import hashlib
import hmac
import itertools
import logging
import os
import pickle
import shutil
import socket
import struct
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger("ember.serve")

FRAMES_IN_FLIGHT = 8
MAX_MESSAGES_PER_FRAME = 64
COALESCE_S = 0.001  # a chunk this soon after the last frame waits for the loop's next turn
# The largest frame either end sends or reads; a request body that does not fit (with room for
# the scope) goes to the replica as an actor call instead (see MAX_BODY_BYTES).
MAX_FRAME_BYTES = 1 << 30
MAX_BODY_BYTES = MAX_FRAME_BYTES - (1 << 20)
HANDSHAKE_TIMEOUT_S = 10.0
_HEADER = struct.Struct("!I")
_MAGIC = b"emberdc1"  # the replica's greeting: protocol and version
_NONCE_BYTES = 32
_DIGEST = hashlib.sha256
_DIGEST_BYTES = 32


class FrameTooLarge(ConnectionError):
    """A frame past ``MAX_FRAME_BYTES``: not sent, or (received) the connection ends."""


class NotAuthenticated(ConnectionError):
    """The other end of a direct connection did not prove that it holds the replica's key."""


Send = Callable[[dict[str, Any]], Awaitable[None]]
# (scope, body, model_id, send) -> runs the request; its exception is the request's failure.
Handler = Callable[[dict[str, Any], bytes, str, Send], Awaitable[None]]


def _frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"a frame of {len(data)} bytes is larger than the direct channel's "
                            f"limit of {MAX_FRAME_BYTES} bytes; stream the response in "
                            "smaller chunks (StreamingResponse)")
    return _HEADER.pack(len(data)) + data


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"the peer announced a frame of {size} bytes, more than the "
                            f"limit of {MAX_FRAME_BYTES}: connection closed unread")
    return pickle.loads(await reader.readexactly(size))


def _digest(key: bytes, role: bytes, *nonces: bytes) -> bytes:
    return hmac.new(key, role + b"".join(nonces), _DIGEST).digest()


async def _prove_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       key: bytes) -> None:
    """The proxy's half of the handshake: answer the replica's challenge, then check that the
    replica holds the key too (an impostor that took its address would not)."""
    greeting = await reader.readexactly(len(_MAGIC) + _NONCE_BYTES)
    if not greeting.startswith(_MAGIC):
        raise NotAuthenticated("the peer is not an ember serve replica (wrong greeting)")
    replica_nonce = greeting[len(_MAGIC):]
    proxy_nonce = os.urandom(_NONCE_BYTES)
    writer.write(proxy_nonce + _digest(key, b"proxy", replica_nonce, proxy_nonce))
    try:
        answer = await reader.readexactly(_DIGEST_BYTES)
    except asyncio.IncompleteReadError:
        raise NotAuthenticated("the replica refused this proxy's proof (it holds another "
                               "key)") from None
    if not hmac.compare_digest(answer, _digest(key, b"replica", proxy_nonce, replica_nonce)):
        raise NotAuthenticated("the replica did not prove that it holds its key")


async def _check_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       key: bytes) -> None:
    """The replica's half: challenge the peer, then prove the key in turn."""
    replica_nonce = os.urandom(_NONCE_BYTES)
    writer.write(_MAGIC + replica_nonce)
    reply = await reader.readexactly(_NONCE_BYTES + _DIGEST_BYTES)
    proxy_nonce, proof = reply[:_NONCE_BYTES], reply[_NONCE_BYTES:]
    if not hmac.compare_digest(proof, _digest(key, b"proxy", replica_nonce, proxy_nonce)):
        raise NotAuthenticated("the peer did not prove that it holds the replica's key")
    writer.write(_digest(key, b"replica", proxy_nonce, replica_nonce))


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The uid of the process at the other end of a Unix socket (None where unknown)."""
    sock = writer.get_extra_info("socket")
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is None or option is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class _Coalescer:
    """Frames written during one turn of the event loop leave in one ``write`` (one system
    call for many concurrent requests, instead of one each)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._pending: list[bytes] = []

    def send(self, obj: Any) -> None:
        frame = _frame(obj)
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(frame)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self.writer.is_closing():
                self.writer.write(data)


# --------------------------------------------------------------------------------------------
# The replica's end.


class DirectServer:
    """Serves the proxy's connections inside a replica; ``handler`` runs each request."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._folder: str | None = None
        self._key = os.urandom(32)
        self.address: tuple[str, str, bytes] | None = None

    async def start(self) -> tuple[str, str, bytes]:
        """Listen; returns ``(hostname, socket address, key)`` for ``DirectChannel.connect``.
        The key is a secret: hand it on only through the runtime."""
        if self.address is None:
            if sys.platform.startswith("linux"):
                path = f"\0ember-serve-{os.getpid()}-{os.urandom(6).hex()}"
            else:  # no abstract names: a socket file in a folder only this user can enter
                self._folder = tempfile.mkdtemp(prefix="ember-serve-")
                path = os.path.join(self._folder, "replica.sock")
            self._server = await asyncio.start_unix_server(self._connection, path=path)
            self.address = (socket.gethostname(), path, self._key)
        return self.address

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            uid = _peer_uid(writer)
            if uid is not None and uid != os.geteuid():
                logger.warning("serve replica: refused a direct connection from uid %d "
                               "(only this runtime's user, uid %d, may connect)",
                               uid, os.geteuid())
                writer.close()
                return
            await asyncio.wait_for(_check_proxy(reader, writer, self._key),
                                   HANDSHAKE_TIMEOUT_S)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError,
                OSError) as exc:
            logger.warning("serve replica: refused a direct connection that did not "
                           "authenticate (%s)", exc)
            writer.close()
            return
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
        except FrameTooLarge as exc:
            logger.warning("serve replica: closed the proxy's connection: %s", exc)
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
        too_large: FrameTooLarge | None = None  # a frame that could not go: the response fails
        credit = credits.get(rid)

        def write_pending() -> None:
            nonlocal flush_handle, last_write, have_credit, too_large
            if flush_handle is not None:
                flush_handle.cancel()
                flush_handle = None
            if pending and not closed and too_large is None:
                try:
                    out.send(("out", rid, list(pending), None))
                except FrameTooLarge as exc:
                    too_large = exc
                pending.clear()
                out.flush()
                last_write = loop.time()
                have_credit = False

        async def send(message: dict[str, Any]) -> None:
            nonlocal flush_handle, have_credit, credit
            if too_large is not None:
                raise too_large
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
        if too_large is not None:
            pending, status = [], f"{type(too_large).__name__}: {too_large}"
        try:
            out.send(("out", rid, pending, status))
        except FrameTooLarge as exc:
            out.send(("out", rid, [], f"{type(exc).__name__}: {exc}"))


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
    async def connect(cls, address: tuple[str, str, bytes]) -> DirectChannel | None:
        """A channel to the replica at ``address`` (from ``DirectServer.start``), or ``None``
        when it cannot be reached from here (another machine): then the caller uses actor
        calls instead. Raises ``NotAuthenticated`` when the two ends do not hold the same key,
        ``ConnectionError`` when the replica does not finish the handshake in time."""
        host, path, key = address
        if host != socket.gethostname():
            return None
        try:
            # Connected here, then handed over: uvloop cannot connect to abstract names.
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)  # a local socket: at once
            except OSError:
                sock.close()
                raise
            sock.setblocking(False)
            reader, writer = await asyncio.open_unix_connection(sock=sock)
        except OSError:
            return None
        try:
            await asyncio.wait_for(_prove_proxy(reader, writer, key), HANDSHAKE_TIMEOUT_S)
        except NotAuthenticated:
            writer.close()
            raise
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError) as exc:
            writer.close()  # a replica that is busy or going away: the caller uses actor calls
            raise ConnectionError(f"the replica at {path!r} did not complete the handshake "
                                  f"({exc!r})") from exc
        return cls(reader, writer)

    def open(self, scope: dict[str, Any], body: bytes, model_id: str
             ) -> tuple[int, asyncio.Queue[Any]]:
        """Send a request; its frames (``(messages, status)``) arrive on the queue, or a
        ``ReplicaLost`` when the connection breaks. ``FrameTooLarge`` when the body is past
        ``MAX_BODY_BYTES`` (send it as an actor call instead)."""
        if self.lost is not None:
            raise self.lost
        rid = next(self._ids)
        self._out.send(("req", rid, scope, body, model_id))
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._streams[rid] = queue
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
