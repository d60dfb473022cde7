"""A replica: one instance of a deployment's class (or its function) inside an async actor.

Every call runs as its own asyncio task on the actor's event loop, so one replica serves many
requests at once; sync user code runs in a thread so it does not stall the others. HTTP requests
arrive as an ASGI scope and body and leave as a stream of ASGI messages (an actor generator), so a
``StreamingResponse`` reaches the client chunk by chunk. Closing that stream (the client went
away) cancels the response and closes the user's generator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ember.serve import _multiplex, _observe, _syncgen
from ember.serve._handle import fill_upstream
from ember.serve._logging import LoggingConfig, configure_replica_logging
from ember.serve.context import (
    ReplicaContext,
    _RequestContext,
    _serve_request_context,
    _set_internal_replica_context,
    new_request_id,
)

if TYPE_CHECKING:
    from ember.serve._direct import DirectServer

REQUEST_ID_HEADER = b"x-request-id"
INTERNAL_REQUEST_KEY = "ember_serve_request_key"  # scope key: the proxy's id of a request
_END = object()


class Replica:
    def __init__(
        self, replica_id: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
        user_config: Any, max_ongoing_requests: int | None = None, *, app_name: str = "",
        deployment_name: str = "", logging_config: LoggingConfig | None = None,
    ) -> None:
        self.replica_id = replica_id
        # Before the user's constructor: serve.get_replica_context() works inside it.
        context = ReplicaContext(replica_id, app_name, deployment_name)
        _set_internal_replica_context(context)
        self._logger = configure_replica_logging(logging_config, replica_id)
        self._access_log = logging_config is not None and logging_config.enable_access_log
        self._app_name = app_name
        _syncgen.install_starlette_hook()
        # The cap holds for the replica as a whole: each caller's router keeps its own share
        # under it, and calls from several callers past it wait here for a slot.
        self._slots = _Slots(max_ongoing_requests or 2**31)
        self._is_class = inspect.isclass(target)
        self._instance = target(*args, **kwargs) if self._is_class else None
        self._function: Callable[..., Any] | None = None if self._is_class else target
        context.servable_object = self._instance if self._is_class else target
        self._user_config = user_config
        self._asgi = getattr(target, "__ember_serve_asgi__", None) if self._is_class else None
        if self._asgi is not None:
            self._asgi = self._asgi.build()  # an app factory runs here, in the replica
        self._ongoing = 0
        self._direct: DirectServer | None = None
        self._http_tasks: dict[str, asyncio.Task[None]] = {}

    def _enter_request(self, request_id: str, model_id: str, route: str = "",
                       is_http: bool = False) -> tuple[Any, Any]:
        # positional: a third cheaper than keywords, on every request's path
        request = _RequestContext(route, request_id or new_request_id(), "", self._app_name,
                                  model_id, is_http)
        return (_serve_request_context.set(request),
                _multiplex.set_multiplexed_model_id(model_id))

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
        method: Callable[..., Any] | None = getattr(self._instance, name, None)
        if method is None or (name.startswith("_") and name != "__call__"):
            raise AttributeError(
                f"deployment class {type(self._instance).__name__} has no method {name!r}"
            )
        return method

    @_observe.tracked  # observe: requests, errors and latency on /metrics and the dashboard
    async def handle_request(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], model_id: str,
        request_id: str = "", *upstream: Any,
    ) -> tuple[Any, None]:
        """Run one handle call; ``upstream`` are the values of the responses passed to it as
        arguments (the core resolved them), put back in place of their placeholders.

        Called with ``num_returns=2``: the result, and ``None`` once it is done, which the
        caller's router watches, so that it never has to fetch the result itself."""
        args, kwargs = fill_upstream(args, kwargs, upstream)
        self._ongoing += 1
        tokens = self._enter_request(request_id, model_id)
        try:
            async with self._slots:
                return await _call(self._method(method), args, kwargs), None
        finally:
            _reset(tokens)
            self._ongoing -= 1

    @_observe.tracked_stream  # observe
    async def handle_request_streaming(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], model_id: str,
        request_id: str = "", *upstream: Any,
    ) -> AsyncIterator[Any]:
        args, kwargs = fill_upstream(args, kwargs, upstream)
        self._ongoing += 1
        tokens = self._enter_request(request_id, model_id)
        try:
            async with self._slots:
                fn = self._method(method)
                produced = fn(*args, **kwargs)
                if inspect.isawaitable(produced):
                    produced = await produced
                async for item in _aiter(produced):
                    yield item
        finally:
            _reset(tokens)
            self._ongoing -= 1

    async def http_address(self) -> tuple[str, str, bytes]:
        """Where the proxy reaches this replica directly, and the key it proves itself with
        (see ``_direct``; it travels only as this call's result); starts listening."""
        if self._direct is None:
            from ember.serve._direct import DirectServer

            self._direct = DirectServer(self.run_http)
        return await self._direct.start()

    async def run_http(self, scope: dict[str, Any], body: bytes, model_id: str,
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Run one HTTP request through the app, handing each ASGI message to ``send``.

        The request's id comes in the ``x-request-id`` header (the proxy puts it there) and
        leaves on the response. A failure is logged here with its traceback and the id, and
        raised to the proxy, which answers 500 without the details unless asked for them.
        Counted in the replica's metrics as ``_observe.tracked`` methods are (inline here: a
        coroutine less per request)."""
        stats = _observe._stats(self)
        stats.started()
        started = time.perf_counter()
        failed = False
        self._ongoing += 1
        request_id = _header(scope, REQUEST_ID_HEADER) or new_request_id()
        tokens = self._enter_request(request_id, model_id, scope.get("root_path", "") or "/",
                                     is_http=True)
        iterators = _syncgen.open_request_iterators()
        status = 500
        body_sent = False
        id_header = (REQUEST_ID_HEADER, request_id.encode("latin-1"))

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message.get("status", 200)
                headers = list(message.get("headers", ()))
                for key, _ in headers:
                    if key.lower() == REQUEST_ID_HEADER:
                        break
                else:
                    headers.append(id_header)
                    message = {**message, "headers": headers}
            await send(message)

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
                                     receive, send_with_id)
                else:
                    request = _starlette_request()(scope, receive)
                    result = await _call(self._method("__call__"), (request,), {})
                    plain = _plain_result(result)
                    if plain is None:  # a starlette Response: it sends itself
                        await result(scope, receive, send_with_id)
                    else:  # the usual case: the head made here, the id in it at once
                        await send({"type": "http.response.start", "status": 200,
                                    "headers": [(b"content-length", b"%d" % len(plain[0])),
                                                (b"content-type", plain[1]), id_header]})
                        status = 200
                        await send({"type": "http.response.body", "body": plain[0]})
        except asyncio.CancelledError:
            status = 499  # the client went away (nginx's code for it, in the access log)
            raise
        except Exception:
            failed = True
            self._logger.exception("request %s (%s %s) failed", request_id,
                                   scope.get("method"), scope.get("path"))
            raise
        finally:
            _syncgen.close_request_iterators(iterators)
            took = time.perf_counter() - started
            if self._access_log:
                self._logger.info("%s %s %s %.1fms", scope.get("method"), scope.get("path"),
                                  status, took * 1000)
            _reset(tokens)
            self._ongoing -= 1
            stats.finished(failed, took)

    async def handle_http(
        self, scope: dict[str, Any], body: bytes, model_id: str
    ) -> AsyncIterator[dict[str, Any]]:
        """Run the request; yield the ASGI messages of the response as they are sent (the path
        through the driver, for a proxy that cannot reach this replica directly)."""
        messages: asyncio.Queue[Any] = asyncio.Queue(maxsize=4)

        async def respond() -> None:
            try:
                await self.run_http(scope, body, model_id, messages.put)
            except asyncio.CancelledError:
                raise  # the caller went away: nobody reads an end marker (the queue may be full)
            except BaseException:
                await messages.put(_END)
                raise
            await messages.put(_END)

        task = asyncio.create_task(respond())
        # The core closes this generator only between two messages; the proxy cancels the
        # request at once instead (cancel_http) when its client goes away.
        request_key = str(scope.get(INTERNAL_REQUEST_KEY, ""))
        if request_key:
            self._http_tasks[request_key] = task
        try:
            while True:
                message = await messages.get()
                if message is _END:
                    break
                yield message
            await task  # the user's exception, if any, goes to the caller
        finally:
            self._http_tasks.pop(request_key, None)
            if not task.done():
                task.cancel()
                try:
                    await task
                except BaseException:
                    pass  # cancelled on purpose: the caller went away

    def cancel_http(self, request_key: str) -> None:
        """The client of an HTTP request sent through ``handle_http`` went away: stop it now
        (its sync generators are closed as the request ends)."""
        task = self._http_tasks.get(request_key)
        if task is not None:
            task.cancel()


class _Slots:
    """``asyncio.Semaphore`` for the replica's cap, with a fast path: 3.11's ``acquire`` scans
    its waiters on every call, a good part of a trivial request's cost. First come, first
    served: a freed slot goes to the longest waiter."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, count: int) -> None:
        self._free = count
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # a slot handed over by release()
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot just as it was cancelled: pass it on
            elif waiter in self._waiters:  # (release() drops cancelled waiters it meets)
                self._waiters.remove(waiter)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


def _reset(tokens: tuple[Any, Any]) -> None:
    request, model = tokens
    try:
        _multiplex._model_id.reset(model)
        _serve_request_context.reset(request)
    except ValueError:  # finished from another context (a generator closed elsewhere)
        pass


def _header(scope: dict[str, Any], name: bytes) -> str:
    headers = scope.get("headers", ())
    if headers and headers[-1][0] == name:  # where the proxy puts the request id
        return bytes(headers[-1][1]).decode("latin-1")
    for key, value in headers:
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


_TEXT = b"text/plain; charset=utf-8"
_JSON = b"application/json"
_BYTES = b"application/octet-stream"


def _plain_result(result: Any) -> tuple[bytes, bytes] | None:
    """The body and content type of what the callable returned, or ``None`` for a starlette
    Response (it sends itself): a str as text, bytes as they are; anything else as JSON, as
    Ray does (dicts, lists, numbers, any ``Mapping`` such as ``request.query_params``,
    dataclasses, pydantic models, numpy values)."""
    if isinstance(result, str):
        return result.encode(), _TEXT
    if isinstance(result, (bytes, bytearray)):
        return bytes(result), _BYTES
    if _is_response(result):
        return None
    # What starlette's JSONResponse renders for JSON values, byte for byte.
    return json.dumps(result, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":"), default=_to_json).encode(), _JSON


def _is_response(result: Any) -> bool:
    import sys

    responses = sys.modules.get("starlette.responses")  # loaded if a response was made
    return responses is not None and isinstance(result, responses.Response)


def _to_json(value: Any) -> Any:
    """``json.dumps``'s fallback: what FastAPI's encoder (which Ray uses) makes of a value."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    dump = getattr(value, "model_dump", None)  # pydantic 2
    if callable(dump):
        return dump(mode="json")
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return tolist()
    raise TypeError(
        f"the handler returned a {type(value).__name__}, which has no JSON form; return a "
        "str, bytes, a JSON value (dict, list, number), or a starlette Response"
    )


# What kind of callable a method or function is (inspect's checks cost a request's worth of
# time on their own): the underlying function -> its kind.
_COROUTINE, _ASYNC_GENERATOR, _GENERATOR, _PLAIN = range(4)
_kinds: dict[Any, int] = {}


def _kind(fn: Callable[..., Any]) -> int:
    key = getattr(fn, "__func__", fn)
    try:
        return _kinds[key]
    except (KeyError, TypeError):  # not seen yet, or unhashable
        pass
    if inspect.iscoroutinefunction(fn):
        kind = _COROUTINE
    elif inspect.isasyncgenfunction(fn):
        kind = _ASYNC_GENERATOR
    elif inspect.isgeneratorfunction(fn):
        kind = _GENERATOR
    else:
        kind = _PLAIN
    try:
        _kinds[key] = kind
    except TypeError:
        pass
    return kind


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    kind = _kind(fn)
    if kind == _COROUTINE:
        return await fn(*args, **kwargs)
    if kind != _PLAIN:  # a generator (sync or async): its items are the response
        return fn(*args, **kwargs)
    result = await asyncio.to_thread(fn, *args, **kwargs)  # keeps the request's context
    if inspect.isawaitable(result):
        result = await result
    return result


def _starlette_request() -> Any:
    global _Request
    if _Request is None:
        from starlette.requests import Request

        _Request = Request
    return _Request


_Request: Any = None


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
    iterator = _syncgen.SyncIterator(produced)
    try:
        async for item in iterator:
            yield item
    finally:
        iterator.close_soon()  # in a thread, once the next() in flight (if any) returns
