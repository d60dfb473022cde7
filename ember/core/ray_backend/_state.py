"""``ember.util.state`` and the driver's views on the ray backend.

State comes from ``ray.util.state`` (Ray's own state API, which Ray's dashboard process serves:
start Ray with its dashboard for it), turned into the rows the local backend gives, so the CLI
and ember's dashboard read both alike. Nodes fall back to ``ray.nodes()`` without it.

Metrics and library views made inside Ray workers (serve's replicas and controller, say) reach
the driver through a small actor of the job (``Sink``, started with ember's dashboard): each
worker's flusher pushes its batches there and a thread of the driver drains it into the
driver's store. Without a dashboard there is no sink and workers drop their batches.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from ember.core import _observe

logger = logging.getLogger("ember")

LIST_LIMIT = 10_000
DRAIN_S = 1.0
SINK_PREFIX = "ember_observe_sink_"
SINK_RETRY_S = 30.0  # a worker looks for the sink again this long after it found none
_SINK_BACKLOG = 1000  # batches kept while the driver does not drain (it went away)


def _ray_state() -> Any:
    from ray.util import state

    return state


def _address(ray: Any) -> str | None:
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:  # a Ray client connection has none: let Ray resolve it
        return None


def _unavailable(exc: Exception) -> RuntimeError:
    return RuntimeError(
        f"Ray's state API did not answer ({type(exc).__name__}: {exc}); it is served by Ray's "
        "dashboard: start Ray with it (ember.init(backend='ray', include_dashboard=True), or "
        "`ray start --head --include-dashboard=true`)")


def _death_cause(cause: Any) -> str | None:
    if not cause:
        return None
    if isinstance(cause, dict):
        for context in cause.values():
            if isinstance(context, dict):
                text = context.get("formatted_exception_string") or context.get("error_message")
                if text:
                    return str(text)
    return str(cause)


def _actor_row(actor: Any) -> dict[str, Any]:
    return {
        "actor_id": actor.actor_id, "class_name": actor.class_name, "state": actor.state,
        "name": actor.name or "", "namespace": actor.ray_namespace, "pid": actor.pid,
        "node_id": actor.node_id, "required_resources": dict(actor.required_resources or {}),
        "num_restarts": int(actor.num_restarts or 0),
        "death_cause": _death_cause(actor.death_cause), "is_detached": actor.is_detached,
        "pending_calls": None, "running_calls": None,
    }


def _task_row(task: Any) -> dict[str, Any]:
    return {
        "task_id": task.task_id, "name": task.name,
        "func_or_class_name": task.func_or_class_name, "type": task.type, "state": task.state,
        "actor_id": task.actor_id, "worker_pid": task.worker_pid, "node_id": task.node_id,
        "required_resources": dict(task.required_resources or {}),
        "parent_task_id": task.parent_task_id, "error_type": task.error_type,
        "error_message": task.error_message, "end_time_ms": task.end_time_ms,
    }


def _object_row(obj: Any) -> dict[str, Any]:
    status = obj.task_status
    if status == "FAILED":
        state = "ERROR"
    elif status in ("FINISHED", "NIL"):
        state = "IN_MEMORY"
    else:
        state = "PENDING"
    size = obj.object_size if obj.object_size is not None and obj.object_size >= 0 else None
    return {"object_id": obj.object_id, "object_size": size, "state": state,
            "reference_count": None, "spilled_bytes": 0, "shared_memory_bytes": size or 0,
            "task_name": None, "reference_type": obj.reference_type, "pid": obj.pid}


def _nodes(ray: Any) -> list[dict[str, Any]]:
    available = ray.available_resources()
    alive = [n for n in ray.nodes() if n.get("Alive")]
    rows = []
    for node in ray.nodes():
        total = {k: float(v) for k, v in node.get("Resources", {}).items()
                 if not k.startswith("node:")}
        # Ray reports what is free cluster-wide; per node only when there is one node
        free = available if len(alive) == 1 and node.get("Alive") else {}
        rows.append({
            "node_id": node.get("NodeID"), "node_ip": node.get("NodeManagerAddress"),
            "state": "ALIVE" if node.get("Alive") else "DEAD",
            "is_head_node": "node:__internal_head__" in node.get("Resources", {}),
            "resources_total": total,
            "resources_available": {k: float(free.get(k, 0.0)) for k in total} if free else {},
            "resources_used": {k: round(v - float(free.get(k, 0.0)), 9) for k, v in total.items()
                               if k not in ("memory", "object_store_memory")} if free else {},
            "object_store_used_bytes": None, "object_store_spilled_bytes": None,
            "object_store_capacity_bytes": total.get("object_store_memory"),
            "num_objects": None, "num_workers": None,
        })
    return rows


def query(ray: Any, kind: str, filters: list[tuple[str, str, Any]] | None,
          limit: int | None, detail: bool) -> Any:
    """The rows of one ``ember.util.state`` query, from Ray."""
    if kind == "nodes":
        return _observe.filter_rows(_nodes(ray), filters, limit)
    if kind == "status":
        return _status(ray)
    state = _ray_state()
    address = _address(ray)
    try:
        if kind == "actors":
            rows = [_actor_row(a) for a in state.list_actors(
                address=address, limit=LIST_LIMIT, detail=True, raise_on_missing_output=False)]
        elif kind == "tasks":
            rows = [_task_row(t) for t in state.list_tasks(
                address=address, limit=LIST_LIMIT, detail=True, raise_on_missing_output=False)]
        elif kind == "objects":
            rows = [_object_row(o) for o in state.list_objects(
                address=address, limit=LIST_LIMIT, raise_on_missing_output=False)]
        elif kind == "task_summary":
            return _task_summary(state, address)
        else:
            raise ValueError(f"unknown state query {kind!r} (known: actors, tasks, objects, "
                             "nodes, task_summary, status)")
    except (ConnectionError, OSError, TimeoutError) as exc:
        raise _unavailable(exc) from exc
    except Exception as exc:
        if type(exc).__name__ in ("RayStateApiException", "ServerUnavailable"):
            raise _unavailable(exc) from exc
        raise
    return _observe.filter_rows(rows, filters, limit)


def _task_summary(state: Any, address: str | None) -> dict[str, Any]:
    raw = state.summarize_tasks(address=address, raise_on_missing_output=False)
    cluster = raw.get("cluster", {}) if isinstance(raw, dict) else {}
    summary = {name: {"func_or_class_name": entry.get("func_or_class_name", name),
                      "type": entry.get("type"),
                      "state_counts": dict(entry.get("state_counts", {}))}
               for name, entry in cluster.get("summary", {}).items()}
    failures = [{"task_id": t.task_id, "func_or_class_name": t.func_or_class_name,
                 "error_type": t.error_type, "error_message": t.error_message,
                 "end_time_ms": t.end_time_ms}
                for t in state.list_tasks(address=address, filters=[("state", "=", "FAILED")],
                                          limit=100, detail=True,
                                          raise_on_missing_output=False)]
    failures.sort(key=lambda f: f["end_time_ms"] or 0, reverse=True)
    total = sum(sum(e["state_counts"].values()) for e in summary.values())
    return {"summary": summary, "total_tasks": total, "recent_failures": failures}


def _status(ray: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": "ray", "job_id": ray.get_runtime_context().get_job_id(),
                           "nodes": _nodes(ray), "actors": {}, "tasks": {},
                           "recent_failures": []}
    try:
        for row in query(ray, "actors", None, None, False):
            out["actors"][row["state"]] = out["actors"].get(row["state"], 0) + 1
        summary = query(ray, "task_summary", None, None, False)
        for entry in summary["summary"].values():
            for state, n in entry["state_counts"].items():
                out["tasks"][state] = out["tasks"].get(state, 0) + n
        out["recent_failures"] = summary["recent_failures"][:10]
    except RuntimeError as exc:  # no state API: nodes only, and why
        out["note"] = str(exc)
    return out


# -- worker -> driver ------------------------------------------------------------------------------
class Sink:
    """The job's mailbox for workers' metric and view batches (a Ray actor, 0 CPUs)."""

    def __init__(self) -> None:
        self.batches: list[tuple[Any, Any]] = []

    def push(self, source: Any, batch: Any) -> None:
        self.batches.append((source, batch))
        if len(self.batches) > _SINK_BACKLOG:  # best-effort telemetry: drop the oldest
            del self.batches[: len(self.batches) - _SINK_BACKLOG]

    def drain(self) -> list[tuple[Any, Any]]:
        batches, self.batches = self.batches, []
        return batches


def _sink_name(ray: Any) -> str:
    return SINK_PREFIX + str(ray.get_runtime_context().get_job_id())


class DriverDrain:
    """In the driver: starts the job's sink and moves its batches into the driver's store."""

    def __init__(self, ray: Any) -> None:
        self._ray = ray
        self._stop = threading.Event()
        self._sink: Any = None
        self._thread = threading.Thread(target=self._loop, name="ember-ray-observe",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        ray = self._ray
        try:
            self._sink = ray.remote(num_cpus=0)(Sink).options(
                name=_sink_name(ray), namespace="_ember_observe", get_if_exists=True).remote()
        except Exception:  # best-effort telemetry: without it, workers' views stay in workers
            logger.debug("ember: no observe sink on Ray", exc_info=True)
            return
        store = _observe.store()
        while not self._stop.wait(DRAIN_S):
            try:
                for source, batch in ray.get(self._sink.drain.remote(), timeout=10):
                    store.ingest(source, batch)
            except Exception:  # best-effort telemetry: Ray is going away, say
                if self._stop.is_set():
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def worker_sender(ray: Any) -> Any:
    """In a Ray worker: a sender that pushes batches to the job's sink (found on first use)."""
    found: list[Any] = []
    missed = [float("-inf")]
    source = f"{os.uname().nodename}:{os.getpid()}"

    def send(batch: Any) -> None:
        if not found:
            if time.monotonic() - missed[0] < SINK_RETRY_S:
                return  # no dashboard drains this job: the batch is dropped
            try:
                found.append(ray.get_actor(_sink_name(ray), namespace="_ember_observe"))
            except ValueError:
                missed[0] = time.monotonic()
                return
        found[0].push.remote(source, batch)

    return send
