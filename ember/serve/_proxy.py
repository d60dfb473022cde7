"""The HTTP proxy: uvicorn serving a small ASGI app inside an async actor.

It checks the request head first (431 past the header limits of ``HTTPOptions``; 400 for a
``serve_multiplexed_model_id`` that is not a valid model id), gives the request its id (the
client's ``x-request-id``, or a new one; every response carries it back), matches the longest
route prefix (404 when none does), reads the body (413 past ``max_body_bytes``), asks that
application's router for a replica (503 with ``Retry-After`` when every replica is full and the
deployment allows no queue, or its queue is full), and relays the replica's ASGI messages to the client as they come, so streamed chunks are not held back. Requests
travel to replicas on this machine over a direct socket (``_direct``; authenticated, see there),
else as actor calls. When the client goes away the request is cancelled on the replica, which
closes its generator. A handler's failure is answered 500 with a generic message naming the
request id (the replica logs the traceback under that id); ``show_error_details`` puts the error
text in the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import socket
import sys
import threading
from typing import Any

from ember.errors import ActorDiedError
from ember.serve import _direct
from ember.serve._direct import DirectChannel, NotAuthenticated, ReplicaLost
from ember.serve._handle import await_ref, router_client
from ember.serve._multiplex import model_id_problem
from ember.serve._replica import INTERNAL_REQUEST_KEY
from ember.serve.config import HTTPOptions
from ember.serve.context import new_request_id

logger = logging.getLogger("ember.serve")

MODEL_ID_HEADER = b"serve_multiplexed_model_id"
REQUEST_ID_HEADER = b"x-request-id"
MAX_REQUEST_ID_LENGTH = 256
FIRST_ROUTING_WAIT_S = 5.0
NO_REPLICA_WAIT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
RETRY_AFTER_S = b"1"  # seconds, in the Retry-After header of a 503
DEFAULT_MAX_BODY_BYTES = 100 * 2**20
WATCH_AFTER_S = 0.005


class Proxy:
    def __init__(self) -> None:
        self._routes: dict[str, tuple[str, str]] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._socket: socket.socket | None = None
        # replica id -> its direct connection (None: reach it by actor calls), being made or made
        self._channels: dict[str, asyncio.Future[DirectChannel | None]] = {}
        self._clients: dict[tuple[str, str], Any] = {}
        self._options = HTTPOptions().proxy_options()
        self._max_body = DEFAULT_MAX_BODY_BYTES
        # EMBER_SERVE_DIRECT=0: every request as an actor call (for tests of that path).
        self._direct = os.environ.get("EMBER_SERVE_DIRECT") != "0"

    async def start(self, host: str, port: int, options: dict[str, Any] | None = None) -> int:
        """Bind ``host:port`` (port 0: any free port) and serve; returns the bound port.
        ``options``: ``HTTPOptions.proxy_options()`` (the limits; defaults when ``None``).

        uvicorn runs on an event loop of its own, in a thread (uvloop when it is installed:
        it halves the proxy's cost per request), not on the actor's loop.
        """
        import uvicorn

        # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections whose socket
        # says it is TCP, and without it Nagle's algorithm meets the client's delayed ACK and
        # every response whose head and body are sent apart waits ~40 ms.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(f"the serve HTTP proxy cannot bind {host}:{port}: {exc}") from exc
        self._socket = sock
        self._options = {**self._options, **(options or {})}
        self._max_body = int(self._options["max_body_bytes"])

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            # A plain function: a backend may wrap actor methods (Ray does), which would make
            # uvicorn mistake a bound method for an app factory.
            await self._app(scope, receive, send)

        # h11, with its buffer bounded: a request head larger than max_request_head_bytes is
        # refused by the parser (431) before it is all in memory. httptools' parser has no
        # such bound, so it is not used even where it is installed.
        config = uvicorn.Config(app, log_level="warning", lifespan="off", interface="asgi3",
                                timeout_graceful_shutdown=2, access_log=False,
                                proxy_headers=False, server_header=False,
                                http=_h11_protocol(),
                                h11_max_incomplete_event_size=int(
                                    self._options["max_request_head_bytes"]),
                                timeout_keep_alive=math.ceil(
                                    self._options["keep_alive_timeout_s"]))
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, args=(sock,), daemon=True,
                                        name="ember-serve-proxy")
        self._thread.start()
        for _ in range(1000):
            if self._server.started or not self._thread.is_alive():
                break
            await asyncio.sleep(0.01)
        if self._failure is not None:
            raise self._failure
        return int(sock.getsockname()[1])

    def _serve(self, sock: socket.socket) -> None:
        loop: asyncio.AbstractEventLoop
        try:
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._server.serve(sockets=[sock]))
        except BaseException as exc:  # read back by start() and logged
            self._failure = exc
            logger.exception("serve proxy: the HTTP server failed")
        finally:
            for future in self._channels.values():
                if future.done() and not future.cancelled() and future.result() is not None:
                    future.result().close()  # type: ignore[union-attr]
            self._channels.clear()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.sleep(0))  # let the closes run
            loop.close()

    async def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            await asyncio.to_thread(self._thread.join, 10)
        if self._socket is not None:
            self._socket.close()

    def set_routes(self, routes: dict[str, tuple[str, str]]) -> None:
        self._routes = dict(routes)

    def _match(self, path: str) -> tuple[str, tuple[str, str]] | None:
        best: tuple[str, tuple[str, str]] | None = None
        for prefix, target in self._routes.items():
            trimmed = prefix.rstrip("/")
            if (trimmed == "" or path == trimmed or path.startswith(trimmed + "/")) and (
                best is None or len(prefix) > len(best[0])
            ):
                best = (prefix, target)
        return best

    def _check_head(self, raw_headers: list[tuple[bytes, bytes]]
                    ) -> tuple[str, tuple[int, str] | None]:
        """The request's id, and ``(status, why)`` when its head breaks a limit or rule."""
        options = self._options
        request_id = ""
        if len(raw_headers) > options["max_headers"]:
            return new_request_id(), (431, (
                f"the request has {len(raw_headers)} headers; this server takes at most "
                f"{options['max_headers']} (http_options max_headers)"))
        limit = options["max_header_bytes"]
        for key, value in raw_headers:
            if len(key) + len(value) > limit:
                return new_request_id(), (431, (
                    f"header {bytes(key[:64]).decode('latin-1')!r} is {len(key) + len(value)} "
                    f"bytes; this server takes at most {limit} per header (http_options "
                    "max_header_bytes)"))
            if key == REQUEST_ID_HEADER:
                request_id = _valid_request_id(value)
        request_id = request_id or new_request_id()
        for key, value in raw_headers:
            if key == MODEL_ID_HEADER:
                try:
                    model_id = bytes(value).decode("ascii")
                except UnicodeDecodeError:
                    return request_id, (400, (
                        "the serve_multiplexed_model_id header is not ASCII text; model ids "
                        "are made of A-Z a-z 0-9 - _ . : / @ + = ~"))
                problem = model_id_problem(model_id)
                if problem is not None:
                    return request_id, (400, problem)
        return request_id, None

    def _error_body(self, deployment_name: str, error: BaseException | str | None,
                    request_id: str) -> str:
        # A replica that died is the server's own news; a handler's exception text is not
        # for clients (it can hold paths, data or secrets) unless asked for.
        if self._options["show_error_details"] or isinstance(error, ActorDiedError):
            return f"{deployment_name} failed (request id {request_id}): {error}"
        return (f"Internal Server Error (request id {request_id}): the replica's log has the "
                "details")

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request_id, refused = self._check_head(scope["headers"])
        send = functools.partial(_with_request_id, send, request_id.encode("latin-1"))
        if refused is not None:
            await _plain(send, *refused)
            return
        matched = self._match(scope["path"])
        if matched is None:
            await _plain(send, 404, f"no application serves path {scope['path']!r}")
            return
        prefix, (app_name, deployment_name) = matched
        headers = dict(scope["headers"])
        too_large = (f"the request body is larger than the {self._max_body} bytes this server "
                     "takes (serve.start(http_options={'max_body_bytes': ...}) sets the limit)")
        declared = headers.get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self._max_body:
            await _plain(send, 413, too_large)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                await _plain(send, 413, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        model_id = headers.get(MODEL_ID_HEADER, b"").decode("ascii")  # checked above
        client = self._clients.get((app_name, deployment_name))
        if client is None or client.dead is not None:
            client = self._clients[(app_name, deployment_name)] = router_client(
                app_name, deployment_name)
        choice = client.try_assign(model_id)
        if choice is None and client.dead is None:
            if not client.has_routing_info:
                await asyncio.to_thread(client.wait_for_replicas, FIRST_ROUTING_WAIT_S)
                choice = client.try_assign(model_id)
            # Every replica full: queue only if the deployment allows a queue (bounded by
            # max_queued_requests); none running (scaled to zero, starting): queue for one.
            if choice is None and (not client.has_replicas or client.max_queued_requests > 0):
                choice = await _wait_for_a_replica(client, model_id)
        if choice is None:
            await _plain(send, 503, f"{deployment_name} is at capacity; retry later",
                         [(b"retry-after", RETRY_AFTER_S)])
            return
        replica_id, actor = choice
        inner: dict[str, Any] = {
            key: scope[key] for key in ("type", "http_version", "method", "scheme", "path",
                                        "raw_path", "query_string", "headers", "server",
                                        "client") if key in scope
        }
        inner["root_path"] = "" if prefix.rstrip("/") == "" else prefix.rstrip("/")
        inner["asgi"] = {"version": "3.0", "spec_version": "2.4"}
        # The replica reads the request's id from its header (the client's one replaced).
        inner["headers"] = [*(h for h in scope["headers"] if h[0] != REQUEST_ID_HEADER),
                            (REQUEST_ID_HEADER, request_id.encode("latin-1"))]
        # A body too large for one frame of the direct channel goes as an actor call.
        channel = (await self._channel(replica_id, actor)
                   if len(body) <= _direct.MAX_BODY_BYTES else None)
        if channel is not None:
            await self._serve_direct(channel, client, replica_id, deployment_name, inner, body,
                                     model_id, receive, send, request_id)
            return
        error: BaseException | None = None
        inner[INTERNAL_REQUEST_KEY] = request_key = os.urandom(8).hex()
        try:
            stream = actor.handle_http.remote(inner, body, model_id)
            relay = asyncio.create_task(self._relay(stream, send))
            watch = asyncio.create_task(_wait_disconnect(receive))
            await asyncio.wait({relay, watch}, return_when=asyncio.FIRST_COMPLETED)
            if not relay.done():  # the client left: stop the request, drop the stream
                actor.cancel_http.remote(request_key)
                relay.cancel()
                with contextlib.suppress(BaseException):
                    await relay
            watch.cancel()
            with contextlib.suppress(BaseException):
                await watch
            del stream
            if relay.done() and not relay.cancelled() and relay.exception() is not None:
                error = relay.exception()
                started = getattr(error, "ember_response_started", False)
                if not started:
                    await _plain(send, 500, self._error_body(deployment_name, error,
                                                             request_id))
        finally:
            client.done(replica_id, error)

    async def _channel(self, replica_id: str, actor: Any) -> DirectChannel | None:
        """The direct connection to a replica (made on first use), or ``None`` when the
        replica cannot be reached directly: then requests go to it as actor calls."""
        if not self._direct:
            return None
        future = self._channels.get(replica_id)
        if future is None:
            future = self._channels[replica_id] = asyncio.ensure_future(self._connect(actor))
        channel = future.result() if future.done() else await asyncio.shield(future)
        if channel is not None and channel.lost is not None:
            self._channels.pop(replica_id, None)
        return channel

    async def _connect(self, actor: Any) -> DirectChannel | None:
        for rid, known in list(self._channels.items()):  # forget replicas that went away
            if known.done() and getattr(known.result(), "lost", True) is not None:
                del self._channels[rid]
        try:
            address = await asyncio.wait_for(await_ref(actor.http_address.remote()),
                                             CONNECT_TIMEOUT_S)
            return await DirectChannel.connect(address)
        except NotAuthenticated as exc:  # not our replica at that address: never use it
            logger.warning("serve proxy: the replica's direct socket failed authentication "
                           "(%s); using actor calls", exc)
            return None
        except Exception as exc:  # an older or unreachable replica: actor calls still work
            logger.info("serve proxy: no direct connection to a replica (%r); using actor "
                        "calls", exc)
            return None

    async def _serve_direct(
        self, channel: DirectChannel, client: Any, replica_id: str, deployment_name: str,
        scope: dict[str, Any], body: bytes, model_id: str, receive: Any, send: Any,
        request_id: str = "",
    ) -> None:
        error: BaseException | None = None
        started = False
        try:
            rid, frames = channel.open(scope, body, model_id)
        except ReplicaLost as exc:
            error = ActorDiedError(f"replica {replica_id} of {deployment_name} died: {exc}")
            client.done(replica_id, error)
            await _plain(send, 500, self._error_body(deployment_name, error, request_id))
            return
        # Watch for the client leaving only once the answer takes a while: most come sooner,
        # and a task per request is a good part of the proxy's cost per request.
        watch: asyncio.Task[None] | None = None

        def start_watching() -> None:
            nonlocal watch
            watch = asyncio.ensure_future(_disconnect_into(receive, frames))

        timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)
        try:
            while True:
                item = await frames.get()
                if item is _DISCONNECTED:  # the client left: stop the work on the replica
                    channel.cancel(rid)
                    return
                if isinstance(item, ReplicaLost):
                    error = ActorDiedError(
                        f"replica {replica_id} of {deployment_name} died: {item}")
                    break
                messages, status = item
                for message in messages:
                    await send(message)
                started = started or bool(messages)
                if status is None:
                    channel.ack(rid)
                    continue
                if status != "ok":
                    error = RuntimeError(status)
                break
            if error is not None and not started:
                await _plain(send, 500, self._error_body(deployment_name, error, request_id))
            # Started and failed: returning without finishing makes uvicorn cut the connection.
        finally:
            timer.cancel()
            if watch is not None:
                watch.cancel()
            client.done(replica_id, error)

    async def _relay(self, stream: Any, send: Any) -> None:
        started = False
        try:
            async for ref in stream:
                message = await await_ref(ref)
                await send(message)
                started = started or message.get("type") == "http.response.start"
        except BaseException as exc:
            with contextlib.suppress(AttributeError):  # read back in _app to pick 500 or not
                exc.ember_response_started = started  # type: ignore[attr-defined]
            raise


async def _wait_for_a_replica(client: Any, model_id: str) -> tuple[str, Any] | None:
    """No replica runs (scaled to zero, or starting): queue for one, as handles do, for a
    while. Full replicas are another matter: those answer 503 at once."""
    loop = asyncio.get_running_loop()
    chosen: asyncio.Future[tuple[str, Any]] = loop.create_future()

    def assigned(replica_id: str, actor: Any) -> None:
        def settle() -> None:
            if chosen.done():  # gave up meanwhile: hand the slot back
                client.done(replica_id)
            else:
                chosen.set_result((replica_id, actor))

        loop.call_soon_threadsafe(settle)

    def failed(exc: BaseException) -> None:
        def settle() -> None:
            if not chosen.done():
                chosen.set_exception(exc)

        loop.call_soon_threadsafe(settle)

    client.submit(model_id, assigned, failed)
    try:
        return await asyncio.wait_for(asyncio.shield(chosen), NO_REPLICA_WAIT_S)
    except (asyncio.TimeoutError, Exception):
        chosen.cancel()
        return None


_DISCONNECTED = object()


async def _disconnect_into(receive: Any, frames: asyncio.Queue[Any]) -> None:
    await _wait_disconnect(receive)
    frames.put_nowait(_DISCONNECTED)


async def _wait_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _valid_request_id(value: bytes) -> str:
    """The client's request id when it is 1-256 visible ASCII characters (it goes into logs,
    so nothing that could forge a log line), else ""."""
    if 0 < len(value) <= MAX_REQUEST_ID_LENGTH and all(0x21 <= c <= 0x7E for c in value):
        return bytes(value).decode("ascii")
    return ""


async def _with_request_id(send: Any, request_id: bytes, message: dict[str, Any]) -> None:
    """``send``, with the request's id on the response head (unless the app set one)."""
    if message["type"] == "http.response.start":
        headers = message.get("headers") or []
        if not any(key.lower() == REQUEST_ID_HEADER for key, _ in headers):
            message = {**message, "headers": [*headers, (REQUEST_ID_HEADER, request_id)]}
    await send(message)


@functools.cache
def _h11_protocol() -> type:
    """uvicorn's h11 protocol, answering 431 (not 400) when a request head outgrows the
    parser's buffer: h11 says so (``error_status_hint``), uvicorn does not pass it on."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class BoundedH11Protocol(H11Protocol):
        def send_400_response(self, msg: str) -> None:
            failure = sys.exc_info()[1]  # called while uvicorn handles h11's error
            if not (isinstance(failure, h11.RemoteProtocolError)
                    and failure.error_status_hint == 431):
                super().send_400_response(msg)
                return
            text = (b"the request head is larger than this server takes (http_options "
                    b"max_request_head_bytes)")
            for event in (
                h11.Response(status_code=431, reason=b"Request Header Fields Too Large",
                             headers=[(b"content-type", b"text/plain; charset=utf-8"),
                                      (b"content-length", str(len(text)).encode()),
                                      (b"connection", b"close")]),
                h11.Data(data=text), h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event))
            self.transport.close()

    return BoundedH11Protocol


async def _plain(send: Any, status: int, text: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": text.encode()})
