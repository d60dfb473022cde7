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

- proxy -> replica: ``("req", rid, scope values, body, model_id)`` (the values of the request's
  ASGI scope in ``SCOPE_KEYS`` order: a tuple pickles in a third of the dict's time, whose keys
  would travel with every request); ``("ack", rid)`` when the messages
  of one non-final frame reached the client; ``("cancel", rid)`` when the client went away;
- replica -> proxy: ``("out", rid, messages, status)``, the ASGI messages sent so far, with
  ``status`` ``None`` (more follow), ``"ok"`` (the response is complete) or an error text; or,
  for the usual response (a head and one body, nothing else in either message, no error),
  ``("done", rid, status code, headers, body)``: a tuple pickles in half the dicts' time.

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
import collections
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
# Each end reads into one buffer of this size, reused (it grows for a larger frame while that
# frame arrives, and shrinks back after it): no allocation per read.
READ_BUFFER_BYTES = 64 << 10
_MIN_READ = 4 << 10
_HEADER = struct.Struct("!I")
_MAGIC = b"emberdc3"  # the replica's greeting: protocol and version
# A complete response's two messages when they hold just these keys: sent as a "done" frame.
_START_KEYS = frozenset(("type", "status", "headers"))
_BODY_KEYS = frozenset(("type", "body"))
SCOPE_KEYS = ("http_version", "method", "scheme", "path", "raw_path", "query_string",
              "root_path", "headers", "server", "client")
_NONCE_BYTES = 32
_DIGEST = hashlib.sha256


def http_scope(values: tuple[Any, ...]) -> dict[str, Any]:
    """The ASGI scope of a request whose values came under ``SCOPE_KEYS`` (a dict literal:
    zipping the keys costs a replica about a microsecond per request)."""
    (http_version, method, scheme, path, raw_path, query_string, root_path, headers, server,
     client) = values
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": http_version, "method": method, "scheme": scheme, "path": path,
            "raw_path": raw_path, "query_string": query_string, "root_path": root_path,
            "headers": headers, "server": server, "client": client}
_DIGEST_BYTES = 32


class FrameTooLarge(ConnectionError):
    """A frame past ``MAX_FRAME_BYTES``: not sent, or (received) the connection ends."""


class NotAuthenticated(ConnectionError):
    """The other end of a direct connection did not prove that it holds the replica's key."""


class ReplicaLost(ConnectionError):
    """The connection to a replica broke: the replica died or is going away."""


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


def _digest(key: bytes, role: bytes, *nonces: bytes) -> bytes:
    return hmac.new(key, role + b"".join(nonces), _DIGEST).digest()


class _Connection(asyncio.BufferedProtocol):
    """One end of a direct connection, on its event loop.

    Reading: bytes land in one reused buffer; during the handshake the subclass asks for
    fixed-size messages (``_expect``), and only once it calls ``_open`` are frames decoded and
    handed to ``_frame_received``. Writing: the frames sent during one turn of the loop leave in
    one ``write`` (one system call for many concurrent requests)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray(READ_BUFFER_BYTES)
        self._start = 0  # unread bytes are self._buf[self._start:self._end]
        self._end = 0
        self._expected = 0  # > 0: the size of the handshake message awaited
        self._frames_open = False
        self._pending: list[bytes] = []

    # -- writing -----------------------------------------------------------------------------
    def send(self, obj: Any) -> None:
        """Queue a frame; it leaves at the end of this turn of the loop (``FrameTooLarge``: not
        queued)."""
        frame = _frame(obj)
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(frame)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if self._transport is not None and not self._transport.is_closing():
                self._transport.write(data)

    # -- reading -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self._buf) - self._end < _MIN_READ:
            self._make_room()
        return memoryview(self._buf)[self._end:]

    def _make_room(self) -> None:
        used = self._end - self._start
        needed = used + _MIN_READ  # the size of the message being read, as far as known
        if self._frames_open and used >= _HEADER.size:  # a frame (its size was checked)
            needed = _HEADER.size + _HEADER.unpack_from(self._buf, self._start)[0]
        size = len(self._buf)
        if needed > size:  # a large frame arriving: double, up to its size (copies stay O(n))
            size = min(needed, 2 * size)
        elif self._start == 0:
            return  # what is missing fits behind what is there
        fresh = bytearray(size)  # never resized in place: the transport may hold a view
        fresh[:used] = memoryview(self._buf)[self._start:self._end]
        self._buf, self._start, self._end = fresh, 0, used

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        try:
            while self._expected:
                if self._end - self._start < self._expected:
                    return
                message = bytes(self._buf[self._start:self._start + self._expected])
                self._start += self._expected
                self._expected = 0
                self._handshake_received(message)
            if self._frames_open:
                self._read_frames()
        except FrameTooLarge as exc:
            self._fail(exc)
        except Exception as exc:  # a frame we cannot decode: the connection cannot go on
            self._fail(ConnectionError(f"an unreadable frame: {exc!r}"))
        finally:
            if self._start == self._end:
                self._start = self._end = 0
                if len(self._buf) > READ_BUFFER_BYTES:  # after a large frame: give it back
                    self._buf = bytearray(READ_BUFFER_BYTES)

    def _read_frames(self) -> None:
        view = memoryview(self._buf)
        try:
            while self._frames_open and self._end - self._start >= _HEADER.size:
                (size,) = _HEADER.unpack_from(view, self._start)
                if size > MAX_FRAME_BYTES:
                    raise FrameTooLarge(f"the peer announced a frame of {size} bytes, more than "
                                        f"the limit of {MAX_FRAME_BYTES}: connection closed "
                                        "unread")
                begin = self._start + _HEADER.size
                if self._end - begin < size:
                    return
                self._start = begin + size
                self._frame_received(pickle.loads(view[begin:begin + size]))
        finally:
            view.release()

    def _expect(self, size: int) -> None:
        self._expected = size

    def _open(self) -> None:
        """Authenticated: frames may be read from now on."""
        self._frames_open = True
        if self._end > self._start:  # came right behind the handshake
            self._read_frames()

    def _fail(self, exc: BaseException) -> None:
        self._frames_open = False
        self._expected = 0
        if self._transport is not None:
            self._transport.abort()

    def _handshake_received(self, message: bytes) -> None:
        raise NotImplementedError

    def _frame_received(self, frame: Any) -> None:
        raise NotImplementedError


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
        self.connections: set[_ReplicaConnection] = set()

    async def start(self) -> tuple[str, str, bytes]:
        """Listen; returns ``(hostname, socket address, key)`` for ``DirectChannel.connect``.
        The key is a secret: hand it on only through the runtime."""
        if self.address is None:
            if sys.platform.startswith("linux"):
                path = f"\0ember-serve-{os.getpid()}-{os.urandom(6).hex()}"
            else:  # no abstract names: a socket file in a folder only this user can enter
                self._folder = tempfile.mkdtemp(prefix="ember-serve-")
                path = os.path.join(self._folder, "replica.sock")
            loop = asyncio.get_running_loop()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:  # bound here, then handed over: uvloop cannot bind abstract names itself
                sock.bind(path)
                sock.listen(128)
                sock.setblocking(False)
                self._server = await loop.create_unix_server(
                    lambda: _ReplicaConnection(self, loop), sock=sock)
            except BaseException:
                sock.close()
                raise
            self.address = (socket.gethostname(), path, self._key)
        return self.address

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


class _ReplicaConnection(_Connection):
    """A proxy's connection inside the replica: challenge it, then run its requests."""

    def __init__(self, server: DirectServer, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._server = server
        self._nonce = os.urandom(_NONCE_BYTES)
        self._timer: asyncio.TimerHandle | None = None
        self._running: dict[int, asyncio.Task[None]] = {}
        self._credits: dict[int, asyncio.Semaphore] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        uid = _peer_uid(transport)
        if uid is not None and uid != os.geteuid():
            logger.warning("serve replica: refused a direct connection from uid %d (only this "
                           "runtime's user, uid %d, may connect)", uid, os.geteuid())
            transport.close()
            return
        self._server.connections.add(self)
        self._timer = self._loop.call_later(HANDSHAKE_TIMEOUT_S, self._refuse,
                                            "no proof within the handshake's time")
        self._transport.write(_MAGIC + self._nonce)  # type: ignore[union-attr]
        self._expect(_NONCE_BYTES + _DIGEST_BYTES)

    def _handshake_received(self, message: bytes) -> None:
        proxy_nonce, proof = message[:_NONCE_BYTES], message[_NONCE_BYTES:]
        if not hmac.compare_digest(proof, _digest(self._server._key, b"proxy", self._nonce,
                                                  proxy_nonce)):
            self._refuse("the peer did not prove that it holds the replica's key")
            return
        if self._timer is not None:
            self._timer.cancel()
        self._transport.write(  # type: ignore[union-attr]
            _digest(self._server._key, b"replica", proxy_nonce, self._nonce))
        self._open()

    def _refuse(self, why: str) -> None:
        if not self._frames_open and self._transport is not None:
            logger.warning("serve replica: refused a direct connection that did not "
                           "authenticate (%s)", why)
            self._expected = 0
            self._transport.close()

    def _frame_received(self, frame: Any) -> None:
        kind, rid = frame[0], frame[1]
        if kind == "req":
            # The task forgets itself as it ends (_respond).
            self._running[rid] = self._loop.create_task(
                self._respond(rid, http_scope(frame[2]), frame[3], frame[4]))
        elif kind == "ack":
            credit = self._credits.get(rid)
            if credit is not None:
                credit.release()
        elif kind == "cancel":
            # Forgotten here too: a task cancelled before its first step runs none of its code.
            running = self._running.pop(rid, None)
            self._credits.pop(rid, None)
            if running is not None:
                running.cancel()

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, FrameTooLarge):
            logger.warning("serve replica: closed the proxy's connection: %s", exc)
        super()._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        # The proxy went away (or shut down): what it asked for is no longer wanted.
        self._frames_open = False
        if self._timer is not None:
            self._timer.cancel()
        self._server.connections.discard(self)
        for task in list(self._running.values()):
            task.cancel()

    async def _respond(self, rid: int, scope: dict[str, Any], body: bytes,
                       model_id: str) -> None:
        pending: list[dict[str, Any]] = []
        loop = self._loop
        last_write = float("-inf")
        flush_handle: asyncio.Handle | None = None
        have_credit = False
        closed = False
        too_large: FrameTooLarge | None = None  # a frame that could not go: the response fails
        credit: asyncio.Semaphore | None = None

        def write_pending() -> None:
            nonlocal flush_handle, last_write, have_credit, too_large
            if flush_handle is not None:
                flush_handle.cancel()
                flush_handle = None
            if pending and not closed and too_large is None:
                try:
                    self.send(("out", rid, list(pending), None))
                except FrameTooLarge as exc:
                    too_large = exc
                pending.clear()
                self.flush()
                last_write = loop.time()
                have_credit = False

        async def send(message: dict[str, Any]) -> None:
            nonlocal flush_handle, have_credit, credit
            if too_large is not None:
                raise too_large
            pending.append(message)
            if message["type"] != "http.response.body" or not message.get("more_body"):
                return  # the head waits for the first chunk; the last leaves with the end
            # A streamed chunk. Each frame takes a credit: at most FRAMES_IN_FLIGHT frames wait
            # for the client. A chunk that comes a while after the last frame leaves at once,
            # even if the generator then computes the next one without giving the loop a turn
            # (a model's forward pass); chunks that come back to back share a frame.
            if not have_credit:
                if credit is None:  # the first streamed frame: the window opens
                    credit = self._credits[rid] = asyncio.Semaphore(FRAMES_IN_FLIGHT)
                await credit.acquire()
                have_credit = True
            if loop.time() - last_write >= COALESCE_S or len(pending) >= MAX_MESSAGES_PER_FRAME:
                write_pending()
            elif flush_handle is None:
                flush_handle = loop.call_soon(write_pending)

        status = "ok"
        try:
            await self._server._handler(scope, body, model_id, send)
        except asyncio.CancelledError:
            closed = True
            raise
        except BaseException as exc:  # goes to the proxy: 500, or a cut stream
            status = f"{type(exc).__name__}: {exc}"
        finally:
            if flush_handle is not None:
                flush_handle.cancel()
            # The request is over (no done callback: one call less per request).
            self._running.pop(rid, None)
            self._credits.pop(rid, None)
        if too_large is not None:
            pending, status = [], f"{type(too_large).__name__}: {too_large}"
        try:
            if status == "ok" and len(pending) == 2 and _whole(*pending):
                start, end = pending  # the usual response: in a short frame
                self.send(("done", rid, start["status"], start["headers"], end["body"]))
            else:
                self.send(("out", rid, pending, status))
        except FrameTooLarge as exc:
            self.send(("out", rid, [], f"{type(exc).__name__}: {exc}"))


def _whole(start: dict[str, Any], end: dict[str, Any]) -> bool:
    """Whether two messages are a response's head and its one body, with nothing else."""
    return (start.keys() == _START_KEYS and end.keys() == _BODY_KEYS
            and start["type"] == "http.response.start" and end["type"] == "http.response.body")


def _peer_uid(transport: asyncio.BaseTransport) -> int | None:
    """The uid of the process at the other end of a Unix socket (None where unknown)."""
    sock = transport.get_extra_info("socket")
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is None or option is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


# --------------------------------------------------------------------------------------------
# The proxy's end.


class Frames:
    """The frames of one response, in order: ``(messages, status)`` tuples, then possibly a
    ``ReplicaLost`` (an ``asyncio.Queue`` without the costs a request cannot afford)."""

    __slots__ = ("_items", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._loop = loop

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = self._loop.create_future()
            await self._waiter
        return self._items.popleft()

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    def qsize(self) -> int:
        return len(self._items)


class DirectChannel(_Connection):
    """The proxy's connection to one replica; ``open`` starts a request over it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: bytes) -> None:
        super().__init__(loop)
        self._key = key
        self._ids = itertools.count()
        self._streams: dict[int, Frames] = {}
        self.lost: BaseException | None = None
        self._ready: asyncio.Future[None] = loop.create_future()
        self._replica_nonce = b""
        self._proxy_nonce = os.urandom(_NONCE_BYTES)

    @classmethod
    async def connect(cls, address: tuple[str, str, bytes]) -> DirectChannel | None:
        """A channel to the replica at ``address`` (from ``DirectServer.start``), or ``None``
        when it cannot be reached from here (another machine): then the caller uses actor
        calls instead. Raises ``NotAuthenticated`` when the two ends do not hold the same key,
        ``ConnectionError`` when the replica does not finish the handshake in time."""
        host, path, key = address
        if host != socket.gethostname():
            return None
        loop = asyncio.get_running_loop()
        try:
            # Connected here, then handed over: uvloop cannot connect to abstract names.
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)  # a local socket: at once
                sock.setblocking(False)
                _, channel = await loop.create_unix_connection(lambda: cls(loop, key),
                                                               sock=sock)
            except BaseException:
                sock.close()
                raise
        except OSError:
            return None
        try:
            await asyncio.wait_for(channel._ready, HANDSHAKE_TIMEOUT_S)
        except NotAuthenticated:
            channel.close()
            raise
        except (asyncio.TimeoutError, ConnectionError, OSError) as exc:
            channel.close()  # a replica that is busy or going away: the caller uses actor calls
            raise ConnectionError(f"the replica at {path!r} did not complete the handshake "
                                  f"({exc!r})") from exc
        return channel

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._expect(len(_MAGIC) + _NONCE_BYTES)

    def _handshake_received(self, message: bytes) -> None:
        """The proxy's half of the handshake: answer the replica's challenge, then check that
        the replica holds the key too (an impostor that took its address would not)."""
        if not self._replica_nonce:
            if not message.startswith(_MAGIC):
                self._refused(NotAuthenticated("the peer is not an ember serve replica (wrong "
                                               "greeting)"))
                return
            self._replica_nonce = message[len(_MAGIC):]
            self._transport.write(  # type: ignore[union-attr]
                self._proxy_nonce
                + _digest(self._key, b"proxy", self._replica_nonce, self._proxy_nonce))
            self._expect(_DIGEST_BYTES)
            return
        if not hmac.compare_digest(message, _digest(self._key, b"replica", self._proxy_nonce,
                                                    self._replica_nonce)):
            self._refused(NotAuthenticated("the replica did not prove that it holds its key"))
            return
        self._open()
        if not self._ready.done():
            self._ready.set_result(None)

    def _refused(self, exc: BaseException) -> None:
        if not self._ready.done():
            self._ready.set_exception(exc)
        self._fail(exc)

    def open(self, scope: dict[str, Any], body: bytes, model_id: str) -> tuple[int, Frames]:
        """Send a request; its frames (``(messages, status)``) arrive on the queue, or a
        ``ReplicaLost`` when the connection breaks. ``FrameTooLarge`` when the body is past
        ``MAX_BODY_BYTES`` (send it as an actor call instead)."""
        return self.request(tuple([scope.get(key) for key in SCOPE_KEYS]), body, model_id)

    def request(self, values: tuple[Any, ...], body: bytes, model_id: str
                ) -> tuple[int, Frames]:
        """``open`` with the scope given as its values under ``SCOPE_KEYS``, in that order."""
        if self.lost is not None:
            raise self.lost
        rid = next(self._ids)
        self.send(("req", rid, values, body, model_id))
        frames = self._streams[rid] = Frames(self._loop)
        return rid, frames

    def ack(self, rid: int) -> None:
        if self.lost is None:
            self.send(("ack", rid))

    def cancel(self, rid: int) -> None:
        self._streams.pop(rid, None)
        if self.lost is None:
            self.send(("cancel", rid))

    def close(self) -> None:
        if self.lost is None:
            self.lost = ReplicaLost("the proxy closed its connection to the replica")
        if self._transport is not None:
            self._transport.close()

    def _frame_received(self, frame: Any) -> None:
        if frame[0] == "done":  # a whole response, head and body
            _, rid, code, headers, body = frame
            frames = self._streams.pop(rid, None)
            if frames is not None:  # (else cancelled meanwhile)
                frames.put_nowait(([{"type": "http.response.start", "status": code,
                                     "headers": headers},
                                    {"type": "http.response.body", "body": body}], "ok"))
            return
        _, rid, messages, status = frame
        frames = self._streams.get(rid)
        if frames is None:
            return  # cancelled meanwhile
        if status is not None:
            del self._streams[rid]
        frames.put_nowait((messages, status))

    def _fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = ReplicaLost(f"the connection to the replica failed: {exc!r}")
        super()._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._frames_open = False
        if self.lost is None:
            self.lost = ReplicaLost(f"the replica died (its connection closed: {exc!r})")
        if not self._ready.done():
            self._ready.set_exception(
                NotAuthenticated("the replica refused this proxy's proof (it holds another key)")
                if self._replica_nonce else ConnectionError(f"the connection closed ({exc!r})"))
        streams, self._streams = self._streams, {}
        for frames in streams.values():
            frames.put_nowait(self.lost)
