"""The HTTP proxy: uvicorn serving a small ASGI app inside an async actor.

It checks the request head first (431 past the header limits of ``HTTPOptions``; 400 for a
``serve_multiplexed_model_id`` that is not a valid model id), gives the request its id (the
client's ``x-request-id``, or a new one; every response carries it back), matches the longest
route prefix (404 when none does), reads the body (413 past ``max_body_bytes``), asks that
application's router for a replica (503 with ``Retry-After`` when every replica is full and the
deployment allows no queue, or its queue is full), and relays the replica's ASGI messages to
the client as they come, so streamed chunks are not held back. Requests travel to replicas on
this machine over a direct socket (``_direct``; authenticated, see there), else as actor calls.
When the client goes away the request is cancelled on the replica, which closes its generator
(the HTTP protocol, ``_http_protocol``, tells the app at once: no task watches for it). A
handler's failure is answered 500 with a generic message naming the request id (the replica
logs the traceback under that id); ``show_error_details`` puts the error text in the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import socket
import threading
from typing import Any

import ember
from ember.core import serve_direct_enabled
from ember.errors import ActorDiedError
from ember.serve import _direct
from ember.serve._direct import DirectChannel, NotAuthenticated, ReplicaLost
from ember.serve._handle import await_ref, refresh_app, router_client
from ember.serve._http_protocol import CORK, DISCONNECTED, ON_DISCONNECT, http_protocol
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
        self._direct = serve_direct_enabled()

    async def start(self, host: str, port: int, options: dict[str, Any] | None = None, *,
                    parser: str = "auto") -> int:
        """Bind ``host:port`` (port 0: any free port) and serve; returns the bound port.
        ``options``: ``HTTPOptions.proxy_options()`` (the limits; defaults when ``None``);
        ``parser``: ``"httptools"``, ``"h11"`` or ``"auto"`` (httptools where installed).

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

        # httptools (h11 without it), with the request head bounded: past
        # max_request_head_bytes the parser refuses it (431) before it is all in memory.
        config = uvicorn.Config(app, log_level="warning", lifespan="off", interface="asgi3",
                                timeout_graceful_shutdown=2, access_log=False,
                                proxy_headers=False, server_header=False,
                                http=http_protocol(int(self._options["max_request_head_bytes"]),
                                                   parser=parser),
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

    async def refresh(self, app_name: str) -> None:
        """Routers of ``app_name`` in this process take the controller's routing now."""
        await asyncio.to_thread(refresh_app, app_name)

    def ping(self) -> str:
        """The controller's check: the node this proxy runs on, while its HTTP server runs;
        raises once the server has stopped (the controller then starts a new proxy)."""
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError(f"the HTTP server stopped: {self._failure!r}")
        return str(ember.get_runtime_context().get_node_id())

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
                    ) -> tuple[str, tuple[int, str] | None, str, bytes | None]:
        """The request's id, ``(status, why)`` when its head breaks a limit or rule, its model
        id and its declared content length (``b""``: none; ``None``: a chunked body), in one
        pass over the headers."""
        options = self._options
        if len(raw_headers) > options["max_headers"]:
            return new_request_id(), (431, (
                f"the request has {len(raw_headers)} headers; this server takes at most "
                f"{options['max_headers']} (http_options max_headers)")), "", b""
        limit = options["max_header_bytes"]
        request_id = ""
        model_ids: list[bytes] = []
        length: bytes | None = b""
        chunked = False
        for key, value in raw_headers:
            if len(key) + len(value) > limit:
                return new_request_id(), (431, (
                    f"header {bytes(key[:64]).decode('latin-1')!r} is {len(key) + len(value)} "
                    f"bytes; this server takes at most {limit} per header (http_options "
                    "max_header_bytes)")), "", b""
            if key == REQUEST_ID_HEADER:
                request_id = _valid_request_id(value)
            elif key == MODEL_ID_HEADER:
                model_ids.append(value)
            elif key == b"content-length":
                length = value
            elif key == b"transfer-encoding":
                chunked = True
        if chunked:
            length = None
        request_id = request_id or new_request_id()
        model_id = ""
        for value in model_ids:
            try:
                model_id = bytes(value).decode("ascii")
            except UnicodeDecodeError:
                return request_id, (400, (
                    "the serve_multiplexed_model_id header is not ASCII text; model ids "
                    "are made of A-Z a-z 0-9 - _ . : / @ + = ~")), "", b""
            problem = model_id_problem(model_id)
            if problem is not None:
                return request_id, (400, problem), "", b""
        return request_id, None, model_id, length

    def _too_large(self) -> str:
        return (f"the request body is larger than the {self._max_body} bytes this server takes "
                "(serve.start(http_options={'max_body_bytes': ...}) sets the limit)")

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
        request_id, refused, model_id, declared = self._check_head(scope["headers"])
        if refused is not None:
            await _plain(send, request_id, *refused)
            return
        matched = self._match(scope["path"])
        if matched is None:
            await _plain(send, request_id, 404,
                         f"no application serves path {scope['path']!r}")
            return
        prefix, (app_name, deployment_name) = matched
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            await _plain(send, request_id, 413, self._too_large())
            return
        body = b""
        chunks: list[bytes] = []
        size = 0
        # A request with neither a length nor a chunked body has none (RFC 9112 6.3): nothing
        # to receive (the client's going away is told through ON_DISCONNECT).
        while declared is None or (declared and declared != b"0"):
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                await _plain(send, request_id, 413, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                break
        else:
            if scope.get(DISCONNECTED):  # gone already: as receive() would have said
                return
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
            await _plain(send, request_id, 503,
                         f"{deployment_name} is at capacity; retry later",
                         [(b"retry-after", RETRY_AFTER_S)])
            return
        replica_id, actor = choice
        root_path = prefix.rstrip("/")
        # The replica reads the request's id from its header (the client's one replaced).
        headers = [h for h in scope["headers"] if h[0] != REQUEST_ID_HEADER]
        headers.append((REQUEST_ID_HEADER, request_id.encode("latin-1")))
        # The replica's scope: these values under _direct.SCOPE_KEYS (in that order).
        values = (scope["http_version"], scope["method"], scope["scheme"], scope["path"],
                  scope.get("raw_path"), scope["query_string"], root_path, headers,
                  scope.get("server"), scope.get("client"))
        # A body too large for one frame of the direct channel goes as an actor call.
        channel = None
        if self._direct and len(body) <= _direct.MAX_BODY_BYTES:
            known = self._channels.get(replica_id)
            made: Any = known.result() if known is not None and known.done() and (
                not known.cancelled()) else _UNMADE
            if made is not _UNMADE and (made is None or made.lost is None):
                channel = made  # the usual case: made before, and no await
            else:
                channel = await self._channel(replica_id, actor)
        if channel is not None:
            await self._serve_direct(channel, client, replica_id, deployment_name, values,
                                     body, model_id, scope, send, request_id)
            return
        inner = _direct.http_scope(values)
        error: BaseException | None = None
        inner[INTERNAL_REQUEST_KEY] = request_key = os.urandom(8).hex()
        try:
            stream = actor.handle_http.remote(inner, body, model_id)
            relay = asyncio.create_task(self._relay(stream, send))  # the replica adds the id
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
                    await _plain(send, request_id, 500,
                                 self._error_body(deployment_name, error, request_id))
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
        values: tuple[Any, ...], body: bytes, model_id: str, scope: dict[str, Any], send: Any,
        request_id: str,
    ) -> None:
        error: BaseException | None = None
        started = False
        try:
            rid, frames = channel.request(values, body, model_id)
        except ReplicaLost as exc:
            error = ActorDiedError(f"replica {replica_id} of {deployment_name} died: {exc}")
            client.done(replica_id, error)
            await _plain(send, request_id, 500,
                         self._error_body(deployment_name, error, request_id))
            return
        # The client going away ends the wait at once: the HTTP protocol calls this hook
        # (waiting for http.disconnect would take a task per request).
        scope[ON_DISCONNECT] = functools.partial(frames.put_nowait, _DISCONNECTED)
        if scope.get(DISCONNECTED):
            frames.put_nowait(_DISCONNECTED)
        cork = scope.get(CORK)  # a frame's messages (head and body) leave in one write
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
                if cork is None:
                    for message in messages:
                        await send(message)
                else:
                    cork.cork()
                    try:
                        for message in messages:
                            await send(message)
                    finally:
                        cork.uncork()
                started = started or bool(messages)
                if status is None:
                    channel.ack(rid)
                    continue
                if status != "ok":
                    error = RuntimeError(status)
                break
            if error is not None and not started:
                await _plain(send, request_id, 500,
                         self._error_body(deployment_name, error, request_id))
            # Started and failed: returning without finishing makes uvicorn cut the connection.
        finally:
            scope.pop(ON_DISCONNECT, None)
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
_UNMADE = object()


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


async def _plain(send: Any, request_id: str, status: int, text: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """An answer the proxy makes itself, carrying the request's id (the replica adds it to
    its own answers)."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (REQUEST_ID_HEADER, request_id.encode("latin-1")),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": text.encode()})
