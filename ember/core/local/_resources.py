"""Resource accounting for the local scheduler: pure bookkeeping, no processes or threads.

CPUs and custom resources are plain amounts. GPUs are individual devices with ids: a request of
one or more whole GPUs takes that many free devices; a fraction (``num_gpus=0.5``) shares one
device with other fractional requests.
"""

from __future__ import annotations

import math
import socket
from typing import Any

_EPS = 1e-9

# The id of the local backend's one node (``ember.nodes()[0]["NodeID"]``).
LOCAL_NODE_ID = "local"
# A request's key for "must run on node X" (a NodeAffinitySchedulingStrategy with soft=False)
# where X is not this runtime's node: no node holds it, so the work fails at once, as Ray fails
# it with TaskUnschedulableError.
_ON_NODE = "node_id:"


def local_request(options: Any) -> dict[str, float]:
    """The resources an invocation asks for on the local backend: ``resource_request`` plus
    a key no node has when a hard node affinity names another node."""
    from ember.core._options import resource_request
    from ember.core._placement import NodeAffinitySchedulingStrategy

    request = resource_request(options)
    strategy = options.get("scheduling_strategy")
    if (isinstance(strategy, NodeAffinitySchedulingStrategy) and not strategy.soft
            and strategy.node_id != LOCAL_NODE_ID):
        request[_ON_NODE + str(strategy.node_id)] = 1.0
    return request


class ResourcePool:
    def __init__(self, totals: dict[str, float], gpu_ids: tuple[str, ...] = ()) -> None:
        self.totals = {k: float(v) for k, v in totals.items()}
        if gpu_ids:
            self.totals["GPU"] = float(len(gpu_ids))
        self.available = dict(self.totals)
        self._gpu_free = {gpu: 1.0 for gpu in gpu_ids}

    def infeasible_reason(self, request: dict[str, float]) -> str | None:
        """Why ``request`` can never be satisfied here, or None when it can."""
        for key in request:
            if key.startswith(_ON_NODE):
                return (f"its NodeAffinitySchedulingStrategy(soft=False) names node "
                        f"{key[len(_ON_NODE):]!r}, and this runtime's only node is "
                        f"{LOCAL_NODE_ID!r} (ember.nodes() lists it). Pass soft=True to run "
                        "it where it fits")
        for key, amount in request.items():
            total = self.totals.get(key, 0.0)
            if amount > total + _EPS:
                return (
                    f"it asks for {key}={_amount(key, amount)} but the cluster has "
                    f"{_amount(key, total)} in total (cluster: {_fmt(self.totals)}). Ask "
                    "for less, or start ember with more (ember.init(num_cpus=..., "
                    "num_gpus=..., resources={...}, _memory=...))"
                )
        gpus = request.get("GPU", 0.0)
        if gpus > 1 and not float(gpus).is_integer():
            return f"num_gpus={gpus:g}: more than one GPU must be a whole number"
        return None

    def fits(self, request: dict[str, float]) -> bool:
        available = self.available
        for key, amount in request.items():
            if available.get(key, 0.0) + _EPS < amount:
                return False
        gpus = request.get("GPU", 0.0)
        return not gpus or self._pick_gpus(gpus) is not None

    def _pick_gpus(self, amount: float) -> list[str] | None:
        if amount >= 1:
            free = [g for g, f in self._gpu_free.items() if f >= 1.0 - _EPS]
            need = math.ceil(amount - _EPS)
            return free[:need] if len(free) >= need else None
        candidates = [(f, g) for g, f in self._gpu_free.items() if f + _EPS >= amount]
        if not candidates:
            return None
        return [min(candidates)[1]]  # best fit: the fullest device that still has room

    def acquire(self, request: dict[str, float]) -> tuple[str, ...]:
        """Take ``request`` (which must fit); returns the GPU ids assigned."""
        gpu_ids: tuple[str, ...] = ()
        gpus = request.get("GPU", 0.0)
        if gpus:
            picked = self._pick_gpus(gpus)
            if picked is None:
                raise RuntimeError("acquire() called for a request that does not fit")
            share = 1.0 if gpus >= 1 else gpus
            for gpu in picked:
                self._gpu_free[gpu] -= share
            gpu_ids = tuple(picked)
        for key, amount in request.items():
            self.available[key] = self.available.get(key, 0.0) - amount
        return gpu_ids

    def release(self, request: dict[str, float], gpu_ids: tuple[str, ...] = ()) -> None:
        gpus = request.get("GPU", 0.0)
        share = 1.0 if gpus >= 1 else gpus
        for gpu in gpu_ids:
            self._gpu_free[gpu] = min(1.0, self._gpu_free[gpu] + share)
        for key, amount in request.items():
            self.available[key] = min(self.totals.get(key, 0.0),
                                      self.available.get(key, 0.0) + amount)

    def lend_cpus(self, request: dict[str, float]) -> None:
        """A running task blocked in ``get``: its CPUs may run other work meanwhile."""
        cpus = request.get("CPU", 0.0)
        if cpus:
            self.available["CPU"] = self.available.get("CPU", 0.0) + cpus

    def reclaim_cpus(self, request: dict[str, float]) -> None:
        """The blocked task resumes: it takes its CPUs back, even if that overcommits."""
        cpus = request.get("CPU", 0.0)
        if cpus:
            self.available["CPU"] = self.available.get("CPU", 0.0) - cpus

    def snapshot(self) -> dict[str, float]:
        return {k: max(0.0, round(v, 9)) for k, v in self.available.items()}


def node_record(node_id: str, total: dict[str, float],
                available: dict[str, float]) -> dict[str, Any]:
    """The local backend's one node in the shape of Ray's ``ray.nodes()`` entries, with what it
    has free now (``AvailableResources``, as ``ember.nodes`` gives on every backend)."""
    from ember.core._settings import LOCAL_NODE_IP

    return {
        "NodeID": node_id, "Alive": True, "alive": True, "IsHead": True,
        "NodeManagerAddress": LOCAL_NODE_IP, "NodeManagerHostname": socket.gethostname(),
        "NodeName": LOCAL_NODE_IP, "Resources": dict(total),
        "AvailableResources": {k: float(available.get(k, 0.0)) for k in total}, "Labels": {},
    }


def _fmt(resources: dict[str, float]) -> str:
    shown = {k: v for k, v in resources.items() if not k.startswith("node:")}
    return ", ".join(f"{k}={_amount(k, v)}" for k, v in sorted(shown.items())) or "nothing"


def _amount(key: str, value: float) -> str:
    """``value`` of resource ``key`` as a person reads it (bytes of memory in GiB)."""
    if key.endswith("memory"):
        return f"{value / 2**30:.3g} GiB"
    return f"{value:g}"
