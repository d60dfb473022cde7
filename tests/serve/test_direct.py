"""The proxy-to-replica socket (``ember/serve/_direct.py``), both ends on one event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ember.serve import _direct
from ember.serve._direct import DirectChannel, DirectServer, ReplicaLost

Send = Callable[[dict[str, Any]], Awaitable[None]]


def start(status: int = 200) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": []}


def chunk(data: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def connected(handler: Any) -> tuple[DirectServer, DirectChannel]:
    server = DirectServer(handler)
    address = await server.start()
    channel = await DirectChannel.connect(address)
    assert channel is not None
    return server, channel


async def collect(channel: DirectChannel, rid: int, frames: asyncio.Queue[Any]
                  ) -> tuple[list[dict[str, Any]], str]:
    messages: list[dict[str, Any]] = []
    while True:
        item = await asyncio.wait_for(frames.get(), 5)
        if isinstance(item, BaseException):
            raise item
        batch, status = item
        messages += batch
        if status is not None:
            return messages, status
        channel.ack(rid)


def test_concurrent_requests_share_one_connection() -> None:
    async def handler(scope: dict[str, Any], body: bytes, model_id: str, send: Send) -> None:
        await asyncio.sleep(0.05 if scope["path"] == "/slow" else 0)
        await send(start())
        await send(chunk(scope["path"].encode() + body + model_id.encode(), more=False))

    async def main() -> None:
        server, channel = await connected(handler)
        slow = channel.open({"path": "/slow"}, b"-a", "m1")
        fast = channel.open({"path": "/fast"}, b"-b", "")
        fast_messages, fast_status = await collect(channel, *fast)
        assert not slow[1].qsize()  # the fast answer did not wait for the slow one
        slow_messages, slow_status = await collect(channel, *slow)
        assert (fast_status, slow_status) == ("ok", "ok")
        assert fast_messages[1]["body"] == b"/fast-b"
        assert slow_messages[1]["body"] == b"/slow-am1"
        channel.close()
        server.close()

    asyncio.run(main())


def test_a_failing_handler_reports_its_error() -> None:
    async def handler(scope: dict[str, Any], body: bytes, model_id: str, send: Send) -> None:
        raise ValueError("bad weights")

    async def main() -> None:
        server, channel = await connected(handler)
        messages, status = await collect(channel, *channel.open({}, b"", ""))
        assert messages == []
        assert status == "ValueError: bad weights"
        channel.close()
        server.close()

    asyncio.run(main())


def test_streaming_is_bounded_by_unacknowledged_frames() -> None:
    produced = 0

    async def handler(scope: dict[str, Any], body: bytes, model_id: str, send: Send) -> None:
        nonlocal produced
        await send(start())
        while True:
            produced += 1
            await send(chunk(b"x"))
            await asyncio.sleep(0)  # one chunk per loop turn: one frame per chunk

    async def main() -> None:
        server, channel = await connected(handler)
        rid, frames = channel.open({}, b"", "")
        await asyncio.sleep(0.3)  # never acknowledged: the producer must stop
        assert frames.qsize() == _direct.FRAMES_IN_FLIGHT
        stalled_at = produced
        assert stalled_at <= _direct.FRAMES_IN_FLIGHT + 1
        for _ in range(3):  # each acknowledgement lets exactly one more frame out
            frames.get_nowait()
            channel.ack(rid)
        await asyncio.sleep(0.2)
        assert produced == stalled_at + 3
        channel.close()
        server.close()

    asyncio.run(main())


def test_cancel_closes_the_handler() -> None:
    async def main() -> None:
        closed = asyncio.Event()

        async def handler(scope: dict[str, Any], body: bytes, model_id: str, send: Send) -> None:
            try:
                await send(start())
                await send(chunk(b"first"))
                await asyncio.sleep(60)
            finally:
                closed.set()

        server, channel = await connected(handler)
        rid, frames = channel.open({}, b"", "")
        batch, status = await asyncio.wait_for(frames.get(), 5)
        assert status is None and batch[-1]["body"] == b"first"
        channel.cancel(rid)
        await asyncio.wait_for(closed.wait(), 5)
        channel.close()
        server.close()

    asyncio.run(main())


def test_a_dropped_connection_fails_requests_in_flight() -> None:
    async def main() -> None:
        connections: list[asyncio.StreamWriter] = []

        async def handler(scope: dict[str, Any], body: bytes, model_id: str, send: Send) -> None:
            await asyncio.sleep(60)

        server = DirectServer(handler)
        original = server._connection

        async def remember(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(writer)
            await original(reader, writer)

        server._connection = remember  # type: ignore[method-assign]
        address = await server.start()
        channel = await DirectChannel.connect(address)
        assert channel is not None
        _rid, frames = channel.open({}, b"", "")
        await asyncio.sleep(0.05)
        connections[0].transport.abort()  # what the kernel does when the replica dies
        item = await asyncio.wait_for(frames.get(), 5)
        assert isinstance(item, ReplicaLost)
        assert "died" in str(item)
        with pytest.raises(ReplicaLost):
            channel.open({}, b"", "")
        server.close()

    asyncio.run(main())


def test_another_machine_is_not_reached_directly() -> None:
    async def main() -> None:
        assert await DirectChannel.connect(("some-other-host", ("tcp", ("127.0.0.1", 1)))) is None

    asyncio.run(main())
