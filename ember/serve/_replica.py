"""A replica: one instance of a deployment's class (or its function) inside an async actor.

Every call runs as its own asyncio task on the actor's event loop, so one replica serves many
requests at once; sync user code runs in a thread so it does not stall the others. HTTP requests
arrive as an ASGI scope and body and leave as a stream of ASGI messages (an actor generator), so a
``StreamingResponse`` reaches the client chunk by chunk. Closing that stream (the client went
away) cancels the response and closes the user's generator.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ember.serve import _multiplex, _observe

_END = object()


class Replica:
    def __init__(
        self, replica_id: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
        user_config: Any, max_ongoing_requests: int | None = None,
    ) -> None:
        self.replica_id = replica_id
        # The cap holds for the replica as a whole: each caller's router keeps its own share
        # under it, and calls from several callers past it wait here for a slot.
        self._slots = asyncio.Semaphore(max_ongoing_requests or 2**31)
        self._is_class = inspect.isclass(target)
        self._instance = target(*args, **kwargs) if self._is_class else None
        self._function = None if self._is_class else target
        self._user_config = user_config
        self._asgi = getattr(target, "__ember_serve_asgi__", None) if self._is_class else None
        self._ongoing = 0
        self._direct: Any = None

    async def ready(self) -> str:
        """Finishes construction (``reconfigure(user_config)``); returns the replica id."""
        if self._user_config is not None:
            await self.reconfigure(self._user_config)
        return self.replica_id

    async def reconfigure(self, user_config: Any) -> None:
        method = getattr(self._instance, "reconfigure", None)
        if method is None:
            if self._user_config is not None and self._is_class:
                raise TypeError(
                    "user_config was given but the deployment class has no "
                    "reconfigure(self, config) method to receive it"
                )
            return
        self._user_config = user_config
        await _call(method, (user_config,), {})

    async def check_health(self) -> None:
        method = getattr(self._instance, "check_health", None)
        if method is not None:
            await _call(method, (), {})

    def metrics(self) -> dict[str, Any]:
        return {"ongoing": self._ongoing, "models": _multiplex.loaded_models(),
                "model_slots": _multiplex.model_slots(), **_observe.identity()}

    def _method(self, name: str) -> Callable[..., Any]:
        if not self._is_class:
            if name != "__call__":
                raise AttributeError(f"a function deployment has no method {name!r}; call it")
            assert self._function is not None
            return self._function
        method = getattr(self._instance, name, None)
        if method is None or (name.startswith("_") and name != "__call__"):
            raise AttributeError(
                f"deployment class {type(self._instance).__name__} has no method {name!r}"
            )
        return method

    @_observe.tracked  # observe: requests, errors and latency on /metrics and the dashboard
    async def handle_request(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], model_id: str
    ) -> Any:
        self._ongoing += 1
        token = _multiplex.set_multiplexed_model_id(model_id)
        try:
            async with self._slots:
                return await _call(self._method(method), args, kwargs)
        finally:
            _reset(token)
            self._ongoing -= 1

    @_observe.tracked_stream  # observe
    async def handle_request_streaming(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], model_id: str
    ) -> AsyncIterator[Any]:
        self._ongoing += 1
        token = _multiplex.set_multiplexed_model_id(model_id)
        try:
            async with self._slots:
                fn = self._method(method)
                produced = fn(*args, **kwargs)
                if inspect.isawaitable(produced):
                    produced = await produced
                async for item in _aiter(produced):
                    yield item
        finally:
            _reset(token)
            self._ongoing -= 1

    async def http_address(self) -> tuple[str, Any]:
        """Where the proxy reaches this replica directly (see ``_direct``); starts listening."""
        if self._direct is None:
            from ember.serve._direct import DirectServer

            self._direct = DirectServer(self.run_http)
        return await self._direct.start()

    @_observe.tracked  # observe
    async def run_http(self, scope: dict[str, Any], body: bytes, model_id: str,
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Run one HTTP request through the app, handing each ASGI message to ``send``."""
        self._ongoing += 1
        token = _multiplex.set_multiplexed_model_id(model_id)
        body_sent = False

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client's going away is signalled by cancelling us
            raise AssertionError("unreachable")

        try:
            async with self._slots:
                if self._asgi is not None:
                    await self._asgi({**scope, "ember_serve_replica": self._instance},
                                     receive, send)
                else:
                    from starlette.requests import Request

                    result = await _call(self._method("__call__"),
                                         (Request(scope, receive),), {})
                    await _send_result(result, scope, receive, send)
        finally:
            _reset(token)
            self._ongoing -= 1

    async def handle_http(
        self, scope: dict[str, Any], body: bytes, model_id: str
    ) -> AsyncIterator[dict[str, Any]]:
        """Run the request; yield the ASGI messages of the response as they are sent (the path
        through the driver, for a proxy that cannot reach this replica directly)."""
        messages: asyncio.Queue[Any] = asyncio.Queue(maxsize=4)

        async def respond() -> None:
            try:
                await self.run_http(scope, body, model_id, messages.put)
            finally:
                await messages.put(_END)

        task = asyncio.create_task(respond())
        try:
            while True:
                message = await messages.get()
                if message is _END:
                    break
                yield message
            await task  # the user's exception, if any, goes to the caller
        finally:
            if not task.done():
                task.cancel()
                try:
                    await task
                except BaseException:
                    pass  # cancelled on purpose: the caller went away


def _reset(token: Any) -> None:
    try:
        _multiplex._model_id.reset(token)
    except ValueError:  # finished from another context (a generator closed elsewhere)
        pass


_TEXT = b"text/plain; charset=utf-8"
_JSON = b"application/json"
_BYTES = b"application/octet-stream"


async def _send_result(result: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Send what the callable returned: a Starlette response as it is; a body (str, bytes, or
    anything JSON) as the response ``to_response`` would make, without building one."""
    if isinstance(result, str):
        body, kind = result.encode(), _TEXT
    elif isinstance(result, (bytes, bytearray)):
        body, kind = bytes(result), _BYTES
    elif isinstance(result, (dict, list, int, float, bool)) or result is None:
        # What starlette's JSONResponse renders, byte for byte.
        body = json.dumps(result, ensure_ascii=False, allow_nan=False, indent=None,
                          separators=(",", ":")).encode()
        kind = _JSON
    else:
        await to_response(result)(scope, receive, send)
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode()),
                            (b"content-type", kind)]})
    await send({"type": "http.response.body", "body": body})


def to_response(result: Any) -> Any:
    """A Starlette response for what a callable returned (a response passes through)."""
    from starlette.responses import JSONResponse, PlainTextResponse, Response

    if isinstance(result, Response):
        return result
    if isinstance(result, (bytes, bytearray)):
        return Response(bytes(result), media_type="application/octet-stream")
    if isinstance(result, str):
        return PlainTextResponse(result)
    return JSONResponse(result)


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        return await fn(*args, **kwargs) if inspect.iscoroutinefunction(fn) else fn(*args, **kwargs)
    if inspect.isgeneratorfunction(fn):
        return fn(*args, **kwargs)
    result = await asyncio.to_thread(fn, *args, **kwargs)  # keeps the request's context
    if inspect.isawaitable(result):
        result = await result
    return result


async def _aiter(produced: Any) -> AsyncIterator[Any]:
    if hasattr(produced, "__anext__"):
        try:
            async for item in produced:
                yield item
        finally:
            await produced.aclose()
        return
    if not hasattr(produced, "__next__"):
        raise TypeError(
            f"a streaming call needs a generator, got {type(produced).__name__}; "
            "make the method a generator (use yield) or call it without stream=True"
        )
    try:
        while True:
            item = await asyncio.to_thread(next, produced, _END)
            if item is _END:
                break
            yield item
    finally:
        produced.close()
