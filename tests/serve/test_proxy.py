"""The HTTP proxy: its second path (requests as actor calls through the runtime, for replicas
it cannot reach over a direct socket; ``EMBER_SERVE_DIRECT=0`` forces it), the limits it puts on
request heads, model ids and error bodies, and the request id every response carries."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ember import serve
from ember.testing import eventually
from tests.serve.test_syncgen import (
    assert_closed_soon_after,
    read_first_line_then_leave,
    slow_tokens,
)


@pytest.fixture
def actor_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("EMBER_SERVE_DIRECT", "0")  # before the runtime starts its workers
    yield


def test_actor_call_path_answers_and_streams(actor_path: None, serve_instance: None) -> None:
    @serve.deployment
    class Mixed:
        async def __call__(self, request: Any) -> Any:
            from starlette.responses import StreamingResponse

            if request.query_params.get("fail"):
                raise ValueError("no such model")
            if request.query_params.get("stream"):
                async def tokens() -> Any:
                    for i in range(3):
                        yield f"t{i}\n"
                        await asyncio.sleep(0.01)

                return StreamingResponse(tokens(), media_type="text/plain")
            return {"body": (await request.body()).decode()}

    serve.run(Mixed.bind(), port=0)
    base = f"http://127.0.0.1:{serve.status().http_port}"
    with httpx.Client(timeout=20) as client:
        assert client.post(f"{base}/", content=b"hi").json() == {"body": "hi"}
        assert client.get(f"{base}/?stream=1").text == "t0\nt1\nt2\n"
        failed = client.get(f"{base}/?fail=1")
        assert failed.status_code == 500
        # The handler's exception text stays in the replica's log: the body names the id.
        assert "no such model" not in failed.text
        assert failed.headers["x-request-id"] in failed.text


def test_actor_call_path_closes_an_abandoned_sync_generator(
    actor_path: None, serve_instance: None, tmp_path: Path
) -> None:
    closed = tmp_path / "closed"
    tokens = slow_tokens(closed)

    @serve.deployment
    def stream(request: Any) -> Any:
        from starlette.responses import StreamingResponse

        return StreamingResponse(tokens(), media_type="text/plain")

    serve.run(stream.bind(), port=0)
    left_at = read_first_line_then_leave(f"http://127.0.0.1:{serve.status().http_port}/")
    assert_closed_soon_after(closed, left_at)


def _raw_request(port: int, head: bytes, *, pieces: int = 1) -> bytes:
    """Send a request head (in ``pieces`` writes, apart in time) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        size = -(-len(head) // pieces)
        for start in range(0, len(head), size):
            sock.sendall(head[start:start + size])
            time.sleep(0.05)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer:
                break
        return answer


@pytest.mark.usefixtures("serve_instance")
def test_oversized_request_heads_get_431() -> None:
    @serve.deployment
    def hello(request: Any) -> str:
        return "hello"

    serve.run(hello.bind(), port=0)
    port = serve.status().http_port
    assert port
    base = f"http://127.0.0.1:{port}/"
    with httpx.Client(timeout=20) as client:
        assert client.get(base, headers={"x-fine": "a" * 4000}).text == "hello"
        one_big = client.get(base, headers={"x-big": "a" * 100_000})
        assert one_big.status_code == 431
        too_many = client.get(base, headers=[(f"x-h{i}", "v") for i in range(101)])
        assert too_many.status_code == 431 and "max_headers" in too_many.text
    # 10,000 headers (sent raw: httpx takes seconds to build such a request).
    many = b"GET / HTTP/1.1\r\nhost: x\r\n" + b"".join(
        b"x-h%d: v\r\n" % i for i in range(10_000)) + b"\r\n"
    assert _raw_request(port, many).startswith(b"HTTP/1.1 431 ")
    # A head larger than the parser's buffer, arriving in pieces: the parser refuses it, 431.
    head = b"GET / HTTP/1.1\r\nhost: x\r\n" + b"".join(
        b"x-h%d: %s\r\n" % (i, b"v" * 1000) for i in range(80)) + b"\r\n"
    assert _raw_request(port, head, pieces=8).startswith(b"HTTP/1.1 431 ")


@pytest.fixture(params=["httptools", "h11"])
def bare_proxy(request: pytest.FixtureRequest) -> Iterator[tuple[int, Any]]:
    """A proxy with no routes (every request it accepts gets 404), on its own: its HTTP parser
    and head limits need no runtime. Yields (port, the uvicorn protocol class in use)."""
    from ember.serve._proxy import Proxy

    proxy = Proxy()
    runner = asyncio.new_event_loop()
    try:
        port = runner.run_until_complete(proxy.start(
            "127.0.0.1", 0, {"max_request_head_bytes": 64 << 10}, parser=request.param))
        yield port, proxy._server.config.http_protocol_class
    finally:
        runner.run_until_complete(proxy.stop())
        runner.close()


def test_the_proxy_parses_with_httptools_where_installed() -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from ember.serve._http_protocol import http_protocol

    assert issubclass(http_protocol(64 << 10), HttpToolsProtocol)


def test_a_head_past_the_limit_is_refused_before_it_all_arrives(
        bare_proxy: tuple[int, Any]) -> None:
    port, protocol = bare_proxy
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert issubclass(protocol, (HttpToolsProtocol, H11Protocol))
    # One header of 16 MiB, sent in 64 KiB pieces: 431 comes back after about 64 KiB, and the
    # connection closes, long before the rest is sent (a parser that buffered the whole head
    # would answer only at its end, or never).
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nx-big: ")
        sent = 0
        piece = b"v" * (64 << 10)
        answer = b""
        while sent < 16 << 20:
            try:
                sock.sendall(piece)
            except OSError:  # closed by the server: its answer is waiting to be read
                break
            sent += len(piece)
            if select.select([sock], [], [], 0.01)[0]:
                break
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"max_request_head_bytes" in answer
    assert sent < 4 << 20, f"{sent} bytes of the head were taken before the answer"


def test_pipelined_heads_are_each_held_to_the_limit(bare_proxy: tuple[int, Any]) -> None:
    # Two requests in one write, twice: heads of 7 KB, then of 40 KB (each under the 64 KiB
    # limit, together over it): all are answered. A head of 80 KiB is refused.
    def head(size: int) -> bytes:
        return b"GET /x HTTP/1.1\r\nhost: x\r\nx-pad: " + b"p" * size + b"\r\n\r\n"

    port, _protocol = bare_proxy
    big = b"GET /x HTTP/1.1\r\nhost: x\r\n" + b"".join(
        b"x-h%d: %s\r\n" % (i, b"v" * 1000) for i in range(40)) + b"\r\n"
    for pair in (head(7000) + head(7000), big + big):  # one header under 8 KiB; 40 of 1 KB
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(pair)
            answer = b""
            while answer.count(b"\r\n0\r\n\r\n") < 2:  # two chunked 404 answers
                chunk = sock.recv(65536)
                assert chunk, answer
                answer += chunk
            assert answer.count(b"HTTP/1.1 404 ") == 2, answer
    assert _raw_request(port, head(80_000)).startswith(b"HTTP/1.1 431 ")


@pytest.mark.usefixtures("serve_instance")
def test_header_limits_are_configurable() -> None:
    @serve.deployment
    def hello(request: Any) -> str:
        return "hello"

    serve.start(http_options={"port": 0, "max_headers": 8, "max_header_bytes": 64})
    serve.run(hello.bind(), port=0)
    base = f"http://127.0.0.1:{serve.status().http_port}/"
    with httpx.Client(timeout=20) as client:
        assert client.get(base).text == "hello"  # httpx sends 4 headers of its own
        assert client.get(base, headers={"x-a": "b" * 80}).status_code == 431
        assert client.get(base, headers=[(f"x-{i}", "v") for i in range(6)]).status_code == 431


@pytest.mark.usefixtures("serve_instance")
def test_bad_model_ids_get_400_before_any_loader_runs(tmp_path: Path) -> None:
    loads = tmp_path / "loads"
    loads.mkdir()

    @serve.deployment
    class Models:
        @serve.multiplexed(max_num_models_per_replica=2)
        async def get_model(self, model_id: str) -> str:
            (loads / f"{len(list(loads.iterdir()))}").write_text(model_id)
            return model_id

        async def __call__(self, request: Any) -> str:
            return await self.get_model(serve.get_multiplexed_model_id())

    serve.run(Models.bind(), port=0)
    base = f"http://127.0.0.1:{serve.status().http_port}/"
    with httpx.Client(timeout=20) as client:
        for bad in (b"\xff\xfe", b"caf\xc3\xa9", b"a" * 257, b"two words", b"a;b", b"x\"y"):
            answer = client.get(base, headers={"serve_multiplexed_model_id": bad})
            assert answer.status_code == 400, bad
        assert list(loads.iterdir()) == []  # no loader ran for any of them
        good = "org/model-v1.2:main@sha+x=y~z"
        assert client.get(base, headers={"serve_multiplexed_model_id": good}).text == good
        assert [p.read_text() for p in loads.iterdir()] == [good]
    with pytest.raises(ValueError, match="multiplexed model id"):
        serve.get_app_handle().options(multiplexed_model_id="has space")


@pytest.mark.usefixtures("serve_instance")
def test_500_bodies_name_the_request_id_and_the_replica_logs_the_traceback(
    tmp_path: Path,
) -> None:
    @serve.deployment(logging_config={"logs_dir": str(tmp_path), "enable_access_log": False})
    def leaky(request: Any) -> str:
        raise RuntimeError("db password is hunter2")

    serve.run(leaky.bind(), port=0)
    base = f"http://127.0.0.1:{serve.status().http_port}/"
    with httpx.Client(timeout=20) as client:
        failed = client.get(base, headers={"x-request-id": "req-42"})
    assert failed.status_code == 500
    assert "hunter2" not in failed.text
    assert failed.headers["x-request-id"] == "req-42"
    assert "req-42" in failed.text
    eventually(lambda: any("hunter2" in p.read_text() for p in tmp_path.glob("*.log")),
               timeout=20, what="the replica to log the failure")
    log = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert "req-42" in log and "Traceback" in log and "RuntimeError" in log

    serve.shutdown()  # a new proxy, told to show the details (development)
    serve.start(http_options={"port": 0, "show_error_details": True})
    serve.run(leaky.bind(), port=0)
    with httpx.Client(timeout=20) as client:
        shown = client.get(f"http://127.0.0.1:{serve.status().http_port}/")
    assert shown.status_code == 500
    assert "db password is hunter2" in shown.text


@pytest.mark.usefixtures("serve_instance")
def test_every_response_carries_a_request_id_that_the_replica_sees() -> None:
    @serve.deployment
    class Inner:
        def __call__(self) -> str:
            return serve.context._get_serve_request_context().request_id

    @serve.deployment
    class Outer:
        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.deployment = serve.get_replica_context().deployment  # works in __init__

        async def __call__(self, request: Any) -> dict[str, str]:
            context = serve.get_replica_context()
            return {"here": serve.context._get_serve_request_context().request_id,
                    "downstream": await self.inner.remote(),
                    "replica": context.replica_id, "app": context.app_name,
                    "deployment": self.deployment,
                    "servable": type(context.servable_object).__name__}

    serve.run(Outer.bind(Inner.bind()), name="ids", port=0)
    base = f"http://127.0.0.1:{serve.status().http_port}"
    with httpx.Client(timeout=20) as client:
        mine = client.get(f"{base}/", headers={"x-request-id": "abc-123"})
        assert mine.headers["x-request-id"] == "abc-123"
        assert mine.json()["here"] == mine.json()["downstream"] == "abc-123"
        assert mine.json()["app"] == "ids" and mine.json()["deployment"] == "Outer"
        assert mine.json()["servable"] == "Outer" and "Outer" in mine.json()["replica"]
        made = client.get(f"{base}/")
        assert made.headers["x-request-id"] == made.json()["here"] != "abc-123"
        assert len(made.headers["x-request-id"]) >= 16
        forged = client.get(f"{base}/", headers={"x-request-id": "a b\tc"})  # not log-safe
        assert forged.headers["x-request-id"] not in ("a b\tc", "")
        assert client.get(f"{base}/", headers={"x-request-id": "x" * 300}
                          ).headers["x-request-id"] != "x" * 300
    with httpx.Client(timeout=20) as client:  # answers made by the proxy itself carry one too
        serve.delete("ids")
        missing = client.get(f"{base}/nowhere", headers={"x-request-id": "lost-1"})
        assert missing.status_code == 404 and missing.headers["x-request-id"] == "lost-1"
    with pytest.raises(RuntimeError, match="outside a serve replica"):
        serve.get_replica_context()


@pytest.mark.usefixtures("serve_instance")
def test_request_bodies_reach_the_handler_however_they_are_framed() -> None:
    # The proxy reads no body for a request that declares none (neither a length nor a
    # chunked body); a chunked one, a sized one and an empty one arrive whole.
    @serve.deployment
    class Echo:
        async def __call__(self, request: Any) -> dict[str, str]:
            return {"method": request.method, "body": (await request.body()).decode()}

    def pieces() -> Iterator[bytes]:
        yield b"chun"
        yield b"ked"

    serve.run(Echo.bind(), port=0)
    base = f"http://127.0.0.1:{serve.status().http_port}/"
    with httpx.Client(timeout=20) as client:
        assert client.get(base).json() == {"method": "GET", "body": ""}
        assert client.post(base, content=b"sized").json() == {"method": "POST", "body": "sized"}
        assert client.post(base, content=pieces()).json() == {"method": "POST",
                                                              "body": "chunked"}
        assert client.post(base, content=b"").json() == {"method": "POST", "body": ""}
