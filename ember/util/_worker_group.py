"""A gang of actors that run functions together, optionally joined by ``torch.distributed``.

It knows nothing of training sessions or checkpoints, so ``ember.train``'s workers and
``ember.rl``'s learner group both use it. The workers are one gang (``create_gang``): placed
together or not at all, never half-started on a busy cluster::

    with WorkerGroup(2) as group:
        group.setup_torch_distributed()
        print(group.execute(lambda: torch.distributed.get_rank()))  # [0, 1]
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ember
from ember.util._gang import Gang, create_gang

logger = logging.getLogger("ember.train")


@dataclass(frozen=True)
class WorkerInfo:
    """Where one worker of the group runs, and its place in the gang."""

    rank: int
    local_rank: int
    local_world_size: int
    node_rank: int
    node_id: str
    pid: int
    address: str
    gpu_ids: tuple[str, ...]


class _Worker:
    """The actor behind each worker: runs whatever function it is sent."""

    def __init__(self, env: dict[str, str]) -> None:
        os.environ.update(env)

    def metadata(self) -> dict[str, Any]:
        context = ember.get_runtime_context()
        return {"node_id": context.get_node_id(), "pid": os.getpid(),
                "address": _node_address(), "gpu_ids": context.get_accelerator_ids()["GPU"]}

    def execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


def _node_address() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


# The listening socket of torch's rendezvous store, made by rank 0 before the others know its
# port and handed to the store when rank 0 joins (see _listen_for_rendezvous).
_rendezvous_socket: socket.socket | None = None


def _listen_for_rendezvous(address: str) -> int:
    """Bind the rendezvous store's socket to ``address`` (loopback when the gang shares one
    machine), not to every interface as torch's store does by default; returns its port."""
    global _rendezvous_socket
    if _rendezvous_socket is not None:
        _rendezvous_socket.close()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((address, 0))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    _rendezvous_socket = sock
    port: int = sock.getsockname()[1]
    return port


def _loopback_interface() -> str | None:
    names = {name for _index, name in socket.if_nameindex()}
    return next((name for name in ("lo", "lo0") if name in names), None)


def _init_torch_process_group(rank: int, world_size: int, local_rank: int,
                              local_world_size: int, address: str, port: int, backend: str,
                              timeout_s: float, num_threads: int) -> None:
    global _rendezvous_socket
    os.environ.update({
        "RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(local_rank),
        "LOCAL_WORLD_SIZE": str(local_world_size), "MASTER_ADDR": address,
        "MASTER_PORT": str(port),
    })
    if address == "127.0.0.1":
        # One machine: gloo's and NCCL's own sockets listen on loopback too (by default they
        # take the address the host name resolves to), unless the user chose an interface.
        loopback = _loopback_interface()
        if loopback is not None:
            os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback)
            os.environ.setdefault("NCCL_SOCKET_IFNAME", loopback)
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    # One intra-op thread per CPU the worker holds: workers sharing a machine do not
    # oversubscribe its cores.
    torch.set_num_threads(max(1, num_threads))
    if backend == "nccl":
        torch.cuda.set_device(0)  # the worker sees only its own GPUs (CUDA_VISIBLE_DEVICES)
    timeout = timedelta(seconds=timeout_s)
    if rank == 0 and _rendezvous_socket is not None:
        # The store takes the socket over (and closes it when it goes).
        listen_fd, _rendezvous_socket = _rendezvous_socket.detach(), None
        store = dist.TCPStore(address, port, world_size, True, timeout,
                              master_listen_fd=listen_fd)
    else:
        store = dist.TCPStore(address, port, world_size, False, timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                            timeout=timeout)


class WorkerGroup:
    """``num_workers`` actors, each holding the given resources, ranked 0..n-1.

    Ranks are ordered by node, so the workers of one node have consecutive ranks; ``local_rank``
    counts within a node and ``node_rank`` counts nodes. ``placement_strategy`` places the gang
    (``PACK``, ``SPREAD``, ``STRICT_PACK``, ``STRICT_SPREAD``); a request that no node can hold
    raises ``ResourceError`` at once, and while the cluster is too busy ``start()`` says after
    ``grace_s`` seconds which resource is missing on which node (and raises
    ``GetTimeoutError`` after ``placement_timeout_s``, when set).
    """

    def __init__(
        self,
        num_workers: int,
        *,
        num_cpus_per_worker: float = 1,
        num_gpus_per_worker: float = 0,
        resources_per_worker: dict[str, float] | None = None,
        env: dict[str, str] | None = None,
        placement_strategy: str = "PACK",
        placement_timeout_s: float | None = None,
        grace_s: float = 10.0,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers={num_workers} must be >= 1")
        self.num_workers = num_workers
        self.num_cpus_per_worker = num_cpus_per_worker
        self.num_gpus_per_worker = num_gpus_per_worker
        self.resources_per_worker = dict(resources_per_worker or {})
        self.env = dict(env or {})
        self.placement_strategy = placement_strategy
        self.placement_timeout_s = placement_timeout_s
        self.grace_s = grace_s
        self._gang: Gang | None = None
        self.workers: list[Any] = []
        self.infos: list[WorkerInfo] = []

    def __enter__(self) -> WorkerGroup:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __len__(self) -> int:
        return len(self.workers)

    def start(self) -> None:
        """Create the actors and rank them; any failure stops those already created."""
        if self.workers:
            raise RuntimeError("this WorkerGroup has already started")
        bundle = {"CPU": self.num_cpus_per_worker, "GPU": self.num_gpus_per_worker,
                  **self.resources_per_worker}
        self._gang = gang = create_gang(
            ember.remote(_Worker).options(max_concurrency=1), self.num_workers,
            args=(self.env,), resources_per_member=bundle, strategy=self.placement_strategy,
            timeout=self.placement_timeout_s, grace_s=self.grace_s)
        handles = list(gang.actors)
        try:
            metas = self.get_all([h.metadata.remote() for h in handles])
        except BaseException:
            self.shutdown()
            raise
        node_order: list[str] = []
        for meta in metas:
            if meta["node_id"] not in node_order:
                node_order.append(meta["node_id"])
        order = sorted(range(len(handles)),
                       key=lambda i: (node_order.index(metas[i]["node_id"]), i))
        per_node = {node: sum(1 for m in metas if m["node_id"] == node) for node in node_order}
        seen: dict[str, int] = {}
        for rank, i in enumerate(order):
            meta = metas[i]
            local_rank = seen.get(meta["node_id"], 0)
            seen[meta["node_id"]] = local_rank + 1
            self.workers.append(handles[i])
            self.infos.append(WorkerInfo(
                rank=rank, local_rank=local_rank, local_world_size=per_node[meta["node_id"]],
                node_rank=node_order.index(meta["node_id"]), node_id=meta["node_id"],
                pid=meta["pid"], address=meta["address"], gpu_ids=tuple(meta["gpu_ids"]),
            ))

    def execute_async(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
        """Run ``fn(*args, **kwargs)`` on every worker; one ``ObjectRef`` per rank."""
        self._check_started()
        return [w.execute.remote(fn, *args, **kwargs) for w in self.workers]

    def execute_single_async(self, rank: int, fn: Callable[..., Any], *args: Any,
                             **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the worker of rank ``rank``; returns its ``ObjectRef``."""
        self._check_started()
        return self.workers[rank].execute.remote(fn, *args, **kwargs)

    def execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
        """Run ``fn`` on every worker and return the results by rank; the first error raises."""
        return self.get_all(self.execute_async(fn, *args, **kwargs))

    @staticmethod
    def get_all(refs: list[Any]) -> list[Any]:
        """The results of ``refs`` (from ``execute_async`` or ``execute_single_async``), in
        order. The first failure raises as soon as it happens, not after the calls listed
        before it finish (as ``ember.get(refs)`` would wait): a worker that died is noticed
        while the others still run."""
        pending = list(refs)
        while pending:
            ready, pending = ember.wait(pending, num_returns=1)
            for ref in ready:
                ember.get(ref)  # raises at once when this one failed
        return list(ember.get(refs))

    def setup_torch_distributed(self, backend: str | None = None, *,
                                timeout_s: float = 1800) -> None:
        """Set RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT on every worker and join them
        in one ``torch.distributed`` process group (gloo on CPU, nccl when workers hold GPUs)."""
        self._check_started()
        if backend is None:
            backend = "nccl" if self.num_gpus_per_worker > 0 else "gloo"
        # The rendezvous store listens on rank 0's node: on loopback when the whole gang is
        # on one machine, else on that node's address only (never on every interface).
        same_node = len({info.node_id for info in self.infos}) == 1
        address = "127.0.0.1" if same_node else self.infos[0].address
        port = self.get_all([self.execute_single_async(0, _listen_for_rendezvous, address)])[0]
        threads = max(1, int(self.num_cpus_per_worker))
        self.get_all([
            w.execute.remote(_init_torch_process_group, info.rank, self.num_workers,
                             info.local_rank, info.local_world_size, address, port, backend,
                             timeout_s, threads)
            for w, info in zip(self.workers, self.infos, strict=True)
        ])

    def shutdown(self, *, timeout_s: float = 30) -> bool:
        """Stop every worker now (calls in flight fail with ``ActorDiedError``), and wait up to
        ``timeout_s`` until each one is confirmed gone, so that none of them writes anything
        after this returns. Returns whether all were confirmed (a warning is logged if not)."""
        workers, self.workers, self.infos = self.workers, [], []
        for handle in workers:
            _kill_quietly(handle)
        gang, self._gang = self._gang, None
        if gang is not None:
            gang.shutdown()
        return _wait_until_dead(workers, timeout_s)

    def _check_started(self) -> None:
        if not self.workers:
            raise RuntimeError("the WorkerGroup is not running; call start() first")


def _kill_quietly(handle: Any) -> None:
    try:
        ember.kill(handle)
    except Exception:  # already dead or the runtime is gone: nothing left to stop
        pass


def _wait_until_dead(handles: list[Any], timeout_s: float) -> bool:
    """Whether every killed actor is confirmed dead within ``timeout_s``: a call made after the
    kill fails only once the runtime has seen the actor's process end."""
    probes = []
    for handle in handles:
        try:
            probes.append(handle.metadata.remote())
        except Exception:  # the runtime already knows it is dead
            continue
    if not probes:
        return True
    try:
        _, alive = ember.wait(probes, num_returns=len(probes), timeout=timeout_s)
    except Exception:  # the runtime itself is gone: so are its workers
        return True
    if alive:
        logger.warning("%d worker(s) of the group were killed but not confirmed stopped after "
                       "%g s", len(alive), timeout_s)
    return not alive
