"""Sync generators are closed (their ``finally`` runs, in a thread) within a second of their
consumer going away, on every path that drives one: a ``StreamingResponse`` over HTTP (plain
handler and FastAPI route), the same over the actor-call path (``tests/serve/test_proxy.py``),
and handle streaming. The generators sleep between items, so a ``next`` is usually running
in its thread when the client leaves: then ``close()`` from the loop would fail."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ember import serve
from ember.serve._syncgen import SyncIterator
from ember.testing import eventually

CLOSE_WITHIN_S = 1.0


def slow_tokens(closed: Path) -> Callable[[], Iterator[str]]:
    """A sync generator function that yields a token every 0.2 s and, in its ``finally``,
    writes the time it was closed to ``closed``. Made here, so it ships by value."""

    def tokens() -> Iterator[str]:
        import time

        try:
            for i in range(10_000):
                yield f"t{i}\n"
                time.sleep(0.2)
        finally:
            closed.write_text(repr(time.time()))

    return tokens


def assert_closed_soon_after(closed: Path, left_at: float) -> None:
    eventually(closed.exists, timeout=20, what="the abandoned sync generator to be closed")
    took = float(closed.read_text()) - left_at
    assert took < CLOSE_WITHIN_S, f"the generator was closed {took:.2f} s after the client left"


def read_first_line_then_leave(url: str) -> float:
    """GET ``url`` as a stream, read one line, hang up; returns when it hung up."""
    with httpx.Client(timeout=20) as client, client.stream("GET", url) as response:
        assert response.status_code == 200
        assert next(response.iter_lines()) == "t0"
    return time.time()


def test_sync_iterator_closes_after_the_next_in_flight_returns_in_a_thread() -> None:
    closed_by: list[str] = []

    def numbers() -> Iterator[int]:
        try:
            yield 1
            time.sleep(0.3)  # the second next() is under way when the consumer leaves
            yield 2
        finally:
            closed_by.append(threading.current_thread().name)

    async def consume_one_then_leave() -> None:
        iterator = SyncIterator(numbers())
        assert await anext(iterator) == 1
        second = asyncio.ensure_future(anext(iterator))
        await asyncio.sleep(0.05)
        second.cancel()
        iterator.close_soon()
        iterator.close_soon()  # twice is harmless
        with pytest.raises(StopAsyncIteration):
            await anext(iterator)  # closed: no more items

    asyncio.run(consume_one_then_leave())
    eventually(lambda: bool(closed_by), timeout=5, what="the generator to be closed")
    assert closed_by != [threading.main_thread().name]  # not on the event loop's thread


def test_sync_iterator_that_finished_is_not_closed_again() -> None:
    async def consume_all() -> list[int]:
        return [x async for x in SyncIterator(iter([1, 2, 3]))]

    assert asyncio.run(consume_all()) == [1, 2, 3]


@pytest.mark.usefixtures("serve_instance")
def test_streaming_response_over_a_sync_generator_is_closed_when_the_client_leaves(
    tmp_path: Path,
) -> None:
    plain_closed, fastapi_closed = tmp_path / "plain", tmp_path / "fastapi"
    plain_tokens, fastapi_tokens = slow_tokens(plain_closed), slow_tokens(fastapi_closed)

    @serve.deployment
    class Plain:
        def __call__(self, request: Any) -> Any:
            from starlette.responses import StreamingResponse

            return StreamingResponse(plain_tokens(), media_type="text/plain")

    def build_app() -> Any:
        from fastapi import FastAPI
        from fastapi.responses import StreamingResponse

        app = FastAPI()

        @app.get("/tokens")
        def stream() -> Any:
            return StreamingResponse(fastapi_tokens(), media_type="text/plain")

        return app

    serve.run(Plain.bind(), name="plain", route_prefix="/plain", port=0)
    serve.run(serve.deployment(serve.ingress(build_app)()).bind(), name="api",
              route_prefix="/api", port=0)
    base = f"http://127.0.0.1:{serve.status().http_port}"
    assert_closed_soon_after(plain_closed, read_first_line_then_leave(f"{base}/plain/"))
    assert_closed_soon_after(fastapi_closed, read_first_line_then_leave(f"{base}/api/tokens"))


@pytest.mark.usefixtures("serve_instance")
def test_handle_stream_over_a_sync_generator_is_closed_when_dropped(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    tokens = slow_tokens(closed)

    @serve.deployment
    class Tokens:
        def stream(self) -> Iterator[str]:
            yield from tokens()

    handle = serve.run(Tokens.bind(), http=False)
    stream = handle.options(stream=True).stream.remote()
    assert next(stream) == "t0\n"
    del stream
    gc.collect()
    assert_closed_soon_after(closed, time.time())
