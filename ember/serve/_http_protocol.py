"""The proxy's HTTP/1.1 parser: uvicorn's, with the request head bounded.

httptools (llhttp, in C) where it is installed: it costs a third of h11's CPU per request. llhttp
keeps no buffer of its own and has no size limit, so ``BoundedHttpToolsProtocol`` counts the bytes
it feeds the parser from the end of one request to the end of the next request's headers, and
answers 431 and closes the connection once a head passes ``max_request_head_bytes``, before it
is all in memory. Without httptools, h11 with its buffer bounded to the same size does the same
(``BoundedH11Protocol``).

The per-header rules (``max_header_bytes``, ``max_headers``) are the proxy's own checks of the
parsed head (``Proxy._check_head``): the bound here only keeps memory small.

Two hooks for the proxy's app, through the request's scope, so that relaying a response costs
no task, timer or extra system call:

- ``ON_DISCONNECT``: a callable the app puts in the scope; the protocol calls it when the client
  goes away before the response is complete (and marks the scope ``DISCONNECTED``, for an app
  that looks after the fact). Waiting for that through ASGI would take a task per request.
- ``CORK`` (httptools): what the app writes between ``cork()`` and ``uncork()`` leaves in one
  system call: a response's head and body, which uvicorn writes apart.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from typing import Any

HEAD_TOO_LARGE = (b"the request head is larger than this server takes (http_options "
                  b"max_request_head_bytes)")
_431 = b"".join([
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
    b"content-type: text/plain; charset=utf-8\r\n",
    b"content-length: %d\r\n" % len(HEAD_TOO_LARGE),
    b"connection: close\r\n\r\n",
    HEAD_TOO_LARGE,
])


ON_DISCONNECT = "ember.on_disconnect"
DISCONNECTED = "ember.disconnected"
CORK = "ember.cork"


class CorkedTransport:
    """The transport as uvicorn's response cycle sees it: writes made while corked are held and
    leave together when uncorked."""

    __slots__ = ("_pending", "_transport", "corked")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._pending: list[bytes] = []
        self.corked = False

    def cork(self) -> None:
        self.corked = True

    def uncork(self) -> None:
        self.corked = False
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._transport.write(data)

    def write(self, data: bytes) -> None:
        if self.corked:
            self._pending.append(data)
        else:
            self._transport.write(data)

    def close(self) -> None:
        self.uncork()
        self._transport.close()

    def is_closing(self) -> bool:
        return bool(self._transport.is_closing())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _tell_disconnect(cycle: Any) -> None:
    """The connection closed: tell the app serving ``cycle`` (if its response is unfinished)."""
    if cycle is None or cycle.response_complete:
        return
    scope = cycle.scope
    scope[DISCONNECTED] = True
    hook = scope.get(ON_DISCONNECT)
    if hook is not None:
        hook()


def http_protocol(max_request_head_bytes: int, *, parser: str = "auto") -> type:
    """The uvicorn protocol class for the proxy: ``parser`` ``"httptools"``, ``"h11"`` or
    ``"auto"`` (httptools where installed), each refusing heads past the limit with 431."""
    if parser == "auto":
        parser = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    if parser == "httptools":
        base = _bounded_httptools()
    elif parser == "h11":
        base = _bounded_h11()
    else:
        raise ValueError(f"unknown HTTP parser {parser!r} (known: 'auto', 'httptools', 'h11')")
    return type(base.__name__, (base,), {"max_request_head_bytes": max_request_head_bytes})


@functools.cache
def _bounded_httptools() -> type:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        max_request_head_bytes = 64 * 2**10

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Bytes the head being read may still take; None while a body is read.
            self._head_left: int | None = self.max_request_head_bytes

        def data_received(self, data: bytes) -> None:
            # Parse no more than the head may take; if it has not ended there, refuse it.
            # Requests pipelined in one read start their count a little late: a head holds at
            # most twice the limit in memory.
            while self._head_left is not None and len(data) > self._head_left:
                allowed, self._head_left = self._head_left, 0
                super().data_received(data[:allowed])
                if self.transport.is_closing():  # the parser refused the request (400)
                    return
                if self._head_left == 0:  # the head went on past the limit
                    self.transport.write(_431)
                    self.transport.close()
                    return
                data = data[allowed:]
            if self._head_left is not None:
                self._head_left -= len(data)
            super().data_received(data)

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._corked = CorkedTransport(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            cycle = self.cycle
            super().connection_lost(exc)
            _tell_disconnect(cycle)

        def on_headers_complete(self) -> None:
            self._head_left = None
            self.scope[CORK] = self._corked  # type: ignore[literal-required]
            super().on_headers_complete()
            if self.cycle is not None and self.cycle.scope is self.scope:
                self.cycle.transport = self._corked  # type: ignore[assignment]

        def on_message_complete(self) -> None:
            self._head_left = self.max_request_head_bytes
            super().on_message_complete()

    return BoundedHttpToolsProtocol


@functools.cache
def _bounded_h11() -> type:
    """uvicorn's h11 protocol with its buffer bounded to the head limit, answering 431 (not
    400) past it: h11 says so (``error_status_hint``), uvicorn does not pass it on."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class BoundedH11Protocol(H11Protocol):
        max_request_head_bytes = 64 * 2**10

        def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(config, *args, **kwargs)
            self.conn = h11.Connection(
                h11.SERVER, max_incomplete_event_size=self.max_request_head_bytes)

        def connection_lost(self, exc: Exception | None) -> None:
            cycle = self.cycle
            super().connection_lost(exc)
            _tell_disconnect(cycle)

        def send_400_response(self, msg: str) -> None:
            failure = sys.exc_info()[1]  # called while uvicorn handles h11's error
            if not (isinstance(failure, h11.RemoteProtocolError)
                    and failure.error_status_hint == 431):
                super().send_400_response(msg)
                return
            self.transport.write(_431)
            self.transport.close()

    return BoundedH11Protocol
