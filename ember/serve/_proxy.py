"""The HTTP proxy: uvicorn serving a small ASGI app inside an async actor.

It matches the longest route prefix, asks that application's router for a replica (503 at once
when every replica is full), and relays the replica's ASGI messages to the client as they come,
so streamed chunks are not held back. When the client goes away the stream to the replica is
dropped, which closes the generator producing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

from ember.serve._handle import await_ref, router_client

logger = logging.getLogger("ember.serve")

MODEL_ID_HEADER = b"serve_multiplexed_model_id"
FIRST_ROUTING_WAIT_S = 5.0
NO_REPLICA_WAIT_S = 30.0


class Proxy:
    def __init__(self) -> None:
        self._routes: dict[str, tuple[str, str]] = {}
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    async def start(self, host: str, port: int) -> int:
        """Bind ``host:port`` (port 0: any free port) and serve; returns the bound port."""
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(f"the serve HTTP proxy cannot bind {host}:{port}: {exc}") from exc
        self._socket = sock
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            # A plain function: a backend may wrap actor methods (Ray does), which would make
            # uvicorn mistake a bound method for an app factory.
            await self._app(scope, receive, send)

        config = uvicorn.Config(app, log_level="warning", lifespan="off", interface="asgi3",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        for _ in range(500):
            if self._server.started or self._task.done():
                break
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._task, 5)
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

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        matched = self._match(scope["path"])
        if matched is None:
            await _plain(send, 404, f"no application serves path {scope['path']!r}")
            return
        prefix, (app_name, deployment_name) = matched
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        model_id = headers.get(MODEL_ID_HEADER, b"").decode()
        client = router_client(app_name, deployment_name)
        choice = client.try_assign(model_id)
        if choice is None and client.dead is None:
            await asyncio.to_thread(client.wait_for_replicas, FIRST_ROUTING_WAIT_S)
            choice = client.try_assign(model_id)
            if choice is None and not client.has_replicas:
                choice = await _wait_for_a_replica(client, model_id)
        if choice is None:
            await _plain(send, 503, f"{deployment_name} is at capacity; retry later")
            return
        replica_id, actor = choice
        inner: dict[str, Any] = {
            key: scope[key] for key in ("type", "http_version", "method", "scheme", "path",
                                        "raw_path", "query_string", "headers", "server",
                                        "client") if key in scope
        }
        inner["root_path"] = "" if prefix.rstrip("/") == "" else prefix.rstrip("/")
        inner["asgi"] = {"version": "3.0", "spec_version": "2.4"}
        error: BaseException | None = None
        try:
            stream = actor.handle_http.remote(inner, body, model_id)
            relay = asyncio.create_task(self._relay(stream, send))
            watch = asyncio.create_task(_wait_disconnect(receive))
            await asyncio.wait({relay, watch}, return_when=asyncio.FIRST_COMPLETED)
            if not relay.done():  # the client left: drop the stream, which closes the generator
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
                    await _plain(send, 500, f"{deployment_name} failed: {error}")
        finally:
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


async def _wait_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _plain(send: Any, status: int, text: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": text.encode()})
