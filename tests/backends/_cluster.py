"""A two-node Ray cluster started on this machine with the ``ray`` CLI, for test modules.

The head (1 CPU) and a second node (1 CPU and a custom ``node_b`` resource) run as their own
processes under a private temp dir (``RAY_TMPDIR``), so ``address="auto"`` finds this cluster and
no other. ``stop`` ends exactly the processes of this cluster, found by that temp dir and the
cluster's port: ``ray stop --force`` would end every Ray process of the user on the machine,
including clusters that other test runs or people are using.

The nodes start from this process's environment without its ``AWS_*`` variables, as machines of
a real cluster would: what a driver sets reaches workers only through ember.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

RAY = str(Path(sys.executable).with_name("ray"))


@dataclass(frozen=True)
class Cluster:
    port: int
    client_port: int
    temp_dir: str
    env: dict[str, str]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def processes(self) -> list[psutil.Process]:
        return cluster_processes(self.temp_dir, self.port)

    def raylets(self) -> list[psutil.Process]:
        """The raylet of each node (a worker process of a node is a child of its raylet)."""
        return [p for p in self.processes() if _name(p) == "raylet"]


def _name(proc: psutil.Process) -> str:
    try:
        return str(proc.name())
    except psutil.Error:
        return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_cli(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"`ray {' '.join(args)}` failed:\n{done.stdout}\n{done.stderr}")


def cluster_processes(temp_dir: str, port: int) -> list[psutil.Process]:
    """The processes of the cluster: those naming its temp dir or port, and their children."""
    me = os.getpid()
    roots = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if proc.pid != me and (temp_dir in cmdline or ("ray" in cmdline
                                                       and f":{port}" in cmdline)):
            roots.append(proc)
    found = {proc.pid: proc for proc in roots}
    for proc in roots:
        try:
            found.update({child.pid: child for child in proc.children(recursive=True)})
        except psutil.Error:
            pass
    found.pop(me, None)
    return list(found.values())


def stop_cluster(temp_dir: str, port: int) -> None:
    procs = cluster_processes(temp_dir, port)
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=30)
    assert not alive, f"cluster processes still running: {[p.pid for p in alive]}"


@contextmanager
def extra_node(cluster: Cluster, name: str) -> Iterator[Callable[[], None]]:
    """A node joining ``cluster`` now (no CPU, a custom resource ``name``); yields a function
    that takes it out as a crash would (its processes killed). Gone again on the way out."""
    _ray_cli(["start", f"--address={cluster.address}", "--num-cpus=0",
              f"--resources={json.dumps({name: 1})}",
              f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"],
             cluster.env)

    def leave() -> None:
        raylets = [p for p in cluster.raylets() if f"{name}," in " ".join(p.cmdline())]
        procs = [child for raylet in raylets for child in raylet.children(recursive=True)]
        for proc in [*raylets, *procs]:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs([*raylets, *procs], timeout=30)

    try:
        yield leave
    finally:
        leave()


@contextmanager
def two_node_cluster() -> Iterator[Cluster]:
    """Start the cluster; on the way out, shut ember down and end every process of it."""
    import ember

    # A short path: Ray's unix sockets live under it and their names have a length limit.
    temp_dir = tempfile.mkdtemp(prefix="ember-ray-", dir="/tmp")
    # Ray keeps token authentication on for the rest of a process once a local ray.init()
    # turned it on (it sets RAY_AUTH_MODE=token in the process). A cluster in the other mode
    # then half works (tasks run, actors die at once), so the cluster follows this process.
    auth = "token" if os.environ.get("RAY_AUTH_MODE") == "token" else "disabled"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"RAY_TMPDIR": temp_dir, "RAY_AUTH_MODE": auth, "RAY_USAGE_STATS_ENABLED": "0"})
    env.pop("RAY_ADDRESS", None)
    port, client_port = free_port(), free_port()
    try:
        _ray_cli(["start", "--head", f"--port={port}", "--num-cpus=1",
                  "--include-dashboard=false", f"--dashboard-port={free_port()}",
                  f"--dashboard-agent-listen-port={free_port()}",
                  f"--ray-client-server-port={client_port}", "--disable-usage-stats"], env)
        _ray_cli(["start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
                  f"--resources={json.dumps({'node_b': 1})}",
                  f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"],
                 env)
        with pytest.MonkeyPatch.context() as patch:
            # This process's `ray.init(address="auto")` must find this cluster, with its auth.
            patch.setenv("RAY_TMPDIR", temp_dir)
            patch.setenv("RAY_AUTH_MODE", auth)
            patch.delenv("RAY_ADDRESS", raising=False)
            yield Cluster(port, client_port, temp_dir, env)
    finally:
        try:
            ember.shutdown()
        finally:
            stop_cluster(temp_dir, port)
            shutil.rmtree(temp_dir, ignore_errors=True)
