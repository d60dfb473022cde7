"""The proxy's second path: requests as actor calls through the runtime, for replicas it cannot
reach over a direct socket (``EMBER_SERVE_DIRECT=0`` forces it; other tests use the socket)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ember import serve


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
        assert "no such model" in failed.text
