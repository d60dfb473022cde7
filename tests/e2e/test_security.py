"""Another local user cannot reach into a running runtime.

A process that drops to uid/gid ``nobody`` connects to every Unix socket that a process of the
runtime listens on (abstract names and files, from /proc/net/unix) and to every TCP port they
listen on, and sends each a pickle whose ``__reduce__`` would create a file. The file must never
appear, and the runtime (a serve app with a replica reached over its direct channel) must still
answer afterwards. Needs root (to change uid) and Linux (/proc); skipped otherwise.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

import ember
from ember import serve
from ember.testing import LeakCheck

NOBODY = 65534

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0,
    reason="needs root (to drop to another uid) and Linux (/proc/net/unix)",
)


class _CreatesFile:
    """Unpickling this opens (creates) ``path``: what an attacker's shell command would do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def _runtime_pids() -> list[int]:
    me = psutil.Process()
    return [me.pid, *(child.pid for child in me.children(recursive=True))]


def _socket_inodes(pids: list[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[len("socket:["):-1]))
    return inodes


def _listening_unix_sockets(inodes: set[int]) -> list[str]:
    """Addresses (abstract ones starting with NUL) of listening Unix sockets with these inodes."""
    found = []
    with open("/proc/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            # Num RefCount Protocol Flags Type St Inode [Path]; flag 0x10000 = listening
            if len(fields) < 8 or not int(fields[3], 16) & 0x10000:
                continue
            if int(fields[6]) in inodes:
                path = fields[7]
                found.append("\0" + path[1:] if path.startswith("@") else path)
    return found


def _listening_tcp_ports(pids: list[int]) -> list[tuple[str, int]]:
    found = set()
    for pid in pids:
        try:
            connections = psutil.Process(pid).net_connections("inet")
        except psutil.Error:
            continue
        for conn in connections:
            if conn.status == psutil.CONN_LISTEN:
                ip = conn.laddr.ip
                if ip in ("0.0.0.0", "::"):
                    ip = "127.0.0.1"
                found.add((ip, conn.laddr.port))
    return sorted(found)


def _attack_as_nobody(unix: list[str], tcp: list[tuple[str, int]], payload: bytes) -> int:
    """Fork; the child drops to ``nobody`` and sends ``payload`` (bare and behind the length
    prefixes a framed channel might expect) to every address. Returns how many connections
    the child managed to open."""
    messages = [payload, struct.pack("!I", len(payload)) + payload,
                struct.pack("<Q", len(payload)) + payload]
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns about fork in a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: only system calls from here on, then _exit
        opened = 0
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            targets: list[tuple[int, Any]] = [(socket.AF_UNIX, a) for a in unix]
            targets += [(socket.AF_INET6 if ":" in ip else socket.AF_INET, (ip, port))
                        for ip, port in tcp]
            for family, address in targets:
                for message in messages:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                    sock.settimeout(0.5)
                    try:
                        sock.connect(address)
                        opened += 1
                        sock.sendall(message)
                        sock.recv(1 << 16)  # whatever it answers, or its closing
                    except OSError:
                        pass
                    finally:
                        sock.close()
        finally:
            os.write(write_end, str(opened).encode())
            os._exit(0)
    os.close(write_end)
    try:
        os.waitpid(pid, 0)
        return int(os.read(read_end, 64) or b"0")
    finally:
        os.close(read_end)


def test_another_user_cannot_run_code_through_any_socket_of_the_runtime(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_CreatesFile(str(marker)))

    @serve.deployment
    class Echo:
        async def __call__(self, request: Any) -> Any:
            return {"body": (await request.body()).decode()}

    ember.init(num_cpus=2)
    try:
        serve.run(Echo.bind(), port=0)
        base = f"http://127.0.0.1:{serve.status().http_port}"
        with httpx.Client(timeout=20) as client:
            # The first request makes the proxy open its direct channel to the replica.
            assert client.post(f"{base}/", content=b"before").json() == {"body": "before"}

            pids = _runtime_pids()
            unix = _listening_unix_sockets(_socket_inodes(pids))
            tcp = _listening_tcp_ports(pids)
            assert unix or tcp, "found nothing listening: the search itself is broken"
            _attack_as_nobody(unix, tcp, payload)

            time.sleep(1.0)  # a frame that got through is decoded within milliseconds
            assert not marker.exists(), (
                "a process running as nobody made the runtime unpickle its data "
                f"(unix sockets {unix!r}, tcp {tcp!r})")
            # The runtime still works: the proxy, the replica's channel and plain tasks.
            assert client.post(f"{base}/", content=b"after").json() == {"body": "after"}

            @ember.remote
            def plus_one(x: int) -> int:
                return x + 1

            assert ember.get(plus_one.remote(1), timeout=30) == 2
    finally:
        serve.shutdown()
        LeakCheck().check()
