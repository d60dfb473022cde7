"""The proxy-to-replica socket (``ember/serve/_direct.py``), both ends on one event loop."""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import struct
import sys
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ember.serve import _direct
from ember.serve._direct import DirectChannel, DirectServer, NotAuthenticated, ReplicaLost

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


async def collect(channel: DirectChannel, rid: int, frames: _direct.Frames
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


def test_many_requests_sent_in_one_turn_each_get_their_own_answer() -> None:
    # 60 requests leave in one write and their answers come back coalesced: each gets exactly
    # the messages its handler sent, whatever their shape (a whole response, which travels in
    # the short "done" frame; messages with more keys; a stream; a failure before or after
    # the head), and the same set of messages in the same order.
    async def handler(scope: dict[str, Any], body: bytes, model_id: str, send: Send) -> None:
        n = int(scope["path"][1:])
        await asyncio.sleep(0 if n % 2 else 0.001)
        kind = n % 5
        if kind == 4:
            raise ValueError(f"bad request {n}")
        await send({"type": "http.response.start", "status": 200 + n,
                    "headers": [(b"x-n", b"%d" % n)]})
        if kind == 0:
            await send({"type": "http.response.body", "body": b"whole %d" % n})
        elif kind == 1:
            await send(chunk(b"ended %d" % n, more=False))
        elif kind == 2:
            await send(chunk(b"part %d, " % n))
            await send(chunk(b"end %d" % n, more=False))
        else:
            raise ValueError(f"failed after the head {n}")

    async def main() -> None:
        server, channel = await connected(handler)
        opened = {n: channel.open({"path": f"/{n}"}, b"", "") for n in range(60)}
        answers = await asyncio.gather(*(collect(channel, *opened[n]) for n in range(60)))
        for n, (messages, status) in enumerate(answers):
            head = {"type": "http.response.start", "status": 200 + n,
                    "headers": [(b"x-n", b"%d" % n)]}
            kind = n % 5
            if kind == 0:
                assert (messages, status) == (
                    [head, {"type": "http.response.body", "body": b"whole %d" % n}], "ok")
            elif kind == 1:
                assert (messages, status) == ([head, chunk(b"ended %d" % n, more=False)], "ok")
            elif kind == 2:
                assert (messages, status) == (
                    [head, chunk(b"part %d, " % n), chunk(b"end %d" % n, more=False)], "ok")
            elif kind == 3:
                assert (messages, status) == ([head], f"ValueError: failed after the head {n}")
            else:
                assert (messages, status) == ([], f"ValueError: bad request {n}")
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
        async def handler(scope: dict[str, Any], body: bytes, model_id: str, send: Send) -> None:
            await asyncio.sleep(60)

        server = DirectServer(handler)
        address = await server.start()
        channel = await DirectChannel.connect(address)
        assert channel is not None
        _rid, frames = channel.open({}, b"", "")
        await asyncio.sleep(0.05)
        (connection,) = server.connections
        connection._transport.abort()  # what the kernel does when the replica dies
        item = await asyncio.wait_for(frames.get(), 5)
        assert isinstance(item, ReplicaLost)
        assert "died" in str(item)
        with pytest.raises(ReplicaLost):
            channel.open({}, b"", "")
        server.close()

    asyncio.run(main())


def test_another_machine_is_not_reached_directly() -> None:
    async def main() -> None:
        address = ("some-other-host", "\0ember-serve-elsewhere", b"k" * 32)
        assert await DirectChannel.connect(address) is None

    asyncio.run(main())


class _CreatesFile:
    """Unpickling this creates ``path``: what an attacker's payload would run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_a_peer_without_the_key_gets_nothing_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_CreatesFile(str(marker)))
    frame = struct.pack("!I", len(payload)) + payload
    called = []

    async def handler(scope: dict[str, Any], body: bytes, model_id: str, send: Send) -> None:
        called.append(scope)

    async def main() -> None:
        server = DirectServer(handler)
        host, path, key = await server.start()
        # A peer that sends a frame at once, and one that answers the challenge with a guess.
        for guess in (b"", os.urandom(64)):
            reader, writer = await asyncio.open_unix_connection(sock=_connected(path))
            writer.write(guess + frame)
            # The replica's challenge, then the end of the connection: nothing else.
            assert len(await asyncio.wait_for(reader.read(), 5)) == 8 + 32
            writer.close()
        # A proxy holding another key fails its handshake and opens no channel.
        with pytest.raises(NotAuthenticated):
            await DirectChannel.connect((host, path, os.urandom(32)))
        # The real key still works.
        channel = await DirectChannel.connect((host, path, key))
        assert channel is not None
        channel.close()
        server.close()

    asyncio.run(main())
    assert not marker.exists()
    assert called == []


def _as_another_user(path: str, data: bytes) -> int:
    """In a child process of uid 65534 (nobody): connect to ``path``, send ``data``, and
    return how many bytes came back before the connection closed (-1: could not connect)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: socket calls only, then out
        got = -1
        try:
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(path)
                got = 0
                sock.sendall(data)
                while chunk := sock.recv(4096):
                    got += len(chunk)
        except OSError:
            pass
        finally:
            os.write(write_end, str(got).encode())
            os._exit(0)
    os.close(write_end)
    try:
        return int(os.read(read_end, 64))
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0
                    or not sys.platform.startswith("linux"),
                    reason="needs root (to connect as another user) and SO_PEERCRED")
def test_another_local_user_is_refused_before_the_challenge(tmp_path: Path) -> None:
    """The replica's socket is an abstract one: any local user can connect to it. A peer of
    another uid gets the connection closed before a byte is sent to it or read from it."""
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_CreatesFile(str(marker)))
    frame = struct.pack("!I", len(payload)) + payload
    called = []

    async def handler(scope: dict[str, Any], body: bytes, model_id: str, send: Send) -> None:
        called.append(scope)

    async def main() -> int:
        server = DirectServer(handler)
        _, path, _ = await server.start()
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(_as_another_user, path, os.urandom(64) + frame), 20)
        finally:
            server.close()

    assert asyncio.run(main()) == 0  # it connected, and got not even the challenge
    assert not marker.exists()
    assert called == []


def _connected(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.setblocking(False)
    return sock


def test_an_oversized_length_prefix_ends_the_connection_unread() -> None:
    async def handler(scope: dict[str, Any], body: bytes, model_id: str, send: Send) -> None:
        await send(start())
        await send(chunk(b"fine", more=False))

    async def main() -> None:
        tracemalloc.start()
        server, channel = await connected(handler)
        rid, frames = channel.open({}, b"", "")
        _messages, status = await collect(channel, rid, frames)
        assert status == "ok"
        # An authenticated peer announces a 4 GiB frame and sends a first megabyte of it.
        channel._transport.write(struct.pack("!I", 2**32 - 1) + b"\0" * (1 << 20))
        _rid, frames = channel.open({}, b"", "")  # queued behind it: never read
        item = await asyncio.wait_for(frames.get(), 5)
        assert isinstance(item, ReplicaLost)  # the replica closed the connection
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 64 << 20, f"{peak} bytes allocated for a frame that was refused"
        server.close()

    asyncio.run(main())


def test_a_response_past_the_frame_limit_fails_with_a_clear_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_direct, "MAX_FRAME_BYTES", 4096)

    async def handler(scope: dict[str, Any], body: bytes, model_id: str, send: Send) -> None:
        await send(start())
        await send(chunk(b"x" * (10_000 if scope["path"] == "/big" else 10), more=False))

    async def main() -> None:
        server, channel = await connected(handler)
        messages, status = await collect(channel, *channel.open({"path": "/big"}, b"", ""))
        assert messages == []
        assert status.startswith("FrameTooLarge") and "4096" in status
        # The connection itself is fine: a small response still comes back.
        messages, status = await collect(channel, *channel.open({"path": "/"}, b"", ""))
        assert status == "ok" and messages[-1]["body"] == b"x" * 10
        channel.close()
        server.close()

    asyncio.run(main())
