"""What is running, in Ray's shape (``ray.util.state``): actors, tasks, objects, nodes, logs.

::

    from ember.util.state import list_actors, summarize_tasks

    dead = list_actors(filters=[("state", "=", "DEAD")])
    print(dead[0].class_name, dead[0].death_cause)     # why it died, with the traceback
    print(summarize_tasks()["summary"])                # per function: counts by state

Filters are ``(column, "=" | "!=", value)`` tuples; values compare as text, ignoring case.
On the local backend the answers come from the driver's own records (nothing is polled);
inside a task or an actor the call asks the driver. On the ray backend they come from
``ray.util.state``. The same data backs the dashboard and ``ember list``.

States are Ray's: actors ``DEPENDENCIES_UNREADY``, ``PENDING_CREATION``, ``ALIVE``,
``RESTARTING``, ``DEAD``; tasks ``PENDING_ARGS_AVAIL``, ``PENDING_NODE_ASSIGNMENT``,
``SUBMITTED_TO_WORKER``, ``PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY``, ``RUNNING``,
``FINISHED``, ``FAILED``. Finished and failed tasks are the most recent 1000 (every task is
counted in ``summarize_tasks``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "ActorState",
    "NodeState",
    "ObjectState",
    "TaskState",
    "get_actor",
    "get_log",
    "get_task",
    "list_actors",
    "list_nodes",
    "list_objects",
    "list_tasks",
    "summarize_tasks",
]

DEFAULT_LIMIT = 100
Filters = list[tuple[str, str, Any]]


@dataclass(frozen=True)
class ActorState:
    """One actor. ``death_cause`` says why a ``DEAD`` actor died (with the traceback when its
    constructor raised); ``pid`` is its process (its last one, once dead)."""

    actor_id: str
    class_name: str
    state: str
    name: str = ""
    namespace: str | None = None
    pid: int | None = None
    node_id: str | None = None
    required_resources: dict[str, float] = field(default_factory=dict)
    num_restarts: int = 0
    death_cause: str | None = None
    pending_calls: int | None = None
    running_calls: int | None = None
    is_detached: bool | None = None


@dataclass(frozen=True)
class TaskState:
    """One task or actor call (``type`` ``NORMAL_TASK`` or ``ACTOR_TASK``); a ``FAILED`` one
    has ``error_type`` and ``error_message`` (the remote traceback)."""

    task_id: str
    name: str
    state: str
    func_or_class_name: str = ""
    type: str = "NORMAL_TASK"
    actor_id: str | None = None
    worker_pid: int | None = None
    node_id: str | None = None
    required_resources: dict[str, float] = field(default_factory=dict)
    parent_task_id: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    end_time_ms: int | None = None


@dataclass(frozen=True)
class ObjectState:
    """One object: ``state`` is ``PENDING`` (not computed yet), ``IN_MEMORY``, ``SPILLED``
    (some of its bytes are on disk) or ``ERROR`` (it holds a task's error)."""

    object_id: str
    state: str
    object_size: int | None = None
    reference_count: int | None = None
    spilled_bytes: int = 0
    shared_memory_bytes: int = 0
    task_name: str | None = None


@dataclass(frozen=True)
class NodeState:
    """One node with its resources (total, available, in use) and its object store."""

    node_id: str
    state: str
    node_ip: str | None = None
    is_head_node: bool = False
    resources_total: dict[str, float] = field(default_factory=dict)
    resources_available: dict[str, float] = field(default_factory=dict)
    resources_used: dict[str, float] = field(default_factory=dict)
    object_store_used_bytes: int | None = None
    object_store_spilled_bytes: int | None = None
    object_store_capacity_bytes: int | None = None
    num_objects: int | None = None
    num_workers: int | None = None


T = TypeVar("T")


def _make(cls: type[T], row: dict[str, Any]) -> T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in row.items() if k in names})


def _query(kind: str, address: str | None, filters: Filters | None, limit: int | None,
           detail: bool) -> Any:
    if address is not None:
        raise ValueError(f"address={address!r}: ember.util.state reads the runtime this process "
                         "runs; to look at another running program use the ember CLI "
                         "(ember list actors, ember status)")
    from ember.core._api import current_backend

    backend = current_backend()
    query = getattr(backend, "state", None)
    if query is None:  # pragma: no cover - every backend has it
        raise NotImplementedError(f"the {backend.name} backend has no state API")
    return query(kind, [tuple(f) for f in filters] if filters else None, limit, detail)


def list_actors(address: str | None = None, filters: Filters | None = None,
                limit: int = DEFAULT_LIMIT, timeout: int = 30, detail: bool = False,
                raise_on_missing_output: bool = True) -> list[ActorState]:
    """Actors of this program, dead ones included (up to ``limit``)."""
    return [_make(ActorState, row) for row in _query("actors", address, filters, limit, detail)]


def list_tasks(address: str | None = None, filters: Filters | None = None,
               limit: int = DEFAULT_LIMIT, timeout: int = 30, detail: bool = False,
               raise_on_missing_output: bool = True) -> list[TaskState]:
    """Tasks and actor calls: queued and running ones first, then the most recent finished."""
    return [_make(TaskState, row) for row in _query("tasks", address, filters, limit, detail)]


def list_objects(address: str | None = None, filters: Filters | None = None,
                 limit: int = DEFAULT_LIMIT, timeout: int = 30, detail: bool = False,
                 raise_on_missing_output: bool = True) -> list[ObjectState]:
    """Objects still referenced, with their size and whether they are in memory or spilled."""
    return [_make(ObjectState, row)
            for row in _query("objects", address, filters, limit, detail)]


def list_nodes(address: str | None = None, filters: Filters | None = None,
               limit: int = DEFAULT_LIMIT, timeout: int = 30, detail: bool = False,
               raise_on_missing_output: bool = True) -> list[NodeState]:
    """Nodes with their resources in use (the local backend has one, ``"local"``)."""
    return [_make(NodeState, row) for row in _query("nodes", address, filters, limit, detail)]


def summarize_tasks(address: str | None = None, timeout: int = 30,
                    raise_on_missing_output: bool = True) -> dict[str, Any]:
    """Tasks per function or method: ``{"summary": {name: {"func_or_class_name", "type",
    "state_counts"}}, "total_tasks": n, "recent_failures": [...]}``; each recent failure has
    the task's id, name, ``error_type`` and ``error_message`` (with the remote traceback)."""
    summary: dict[str, Any] = _query("task_summary", address, None, None, False)
    return summary


def get_actor(id: str, address: str | None = None, timeout: int = 30) -> ActorState | None:
    """The actor with this id (``ActorHandle``'s hex id), or None."""
    found = list_actors(address, filters=[("actor_id", "=", id)], limit=1, detail=True)
    return found[0] if found else None


def get_task(id: str, address: str | None = None, timeout: int = 30) -> TaskState | None:
    """The task with this id, or None (finished tasks are kept while among the recent ones)."""
    found = list_tasks(address, filters=[("task_id", "=", id)], limit=1)
    return found[0] if found else None


def get_log(actor_id: str | None = None, task_id: str | None = None, pid: int | None = None,
            tail: int = 1000) -> Iterator[str]:
    """Lines a worker process printed (stdout and stderr), by actor id, task id or pid: the
    last ``tail`` of them. Only in the driver of a local-backend program (elsewhere, use
    ``ember logs``)."""
    from ember.core import _observe

    store = _observe.store()
    if not store.is_driver:
        raise RuntimeError("get_log() reads the driver's records: call it in the driver (or "
                           "use `ember logs ID` from a shell)")
    given = [x for x in (actor_id, task_id, pid) if x is not None]
    if len(given) != 1:
        raise ValueError("get_log() needs exactly one of actor_id=, task_id= or pid=")
    if task_id is not None:
        lines = store.log_lines(lambda log: True, task_id=int(task_id, 16))
    elif actor_id is not None:
        wanted = int(actor_id, 16)
        lines = store.log_lines(lambda log: log.actor_id == wanted)
    else:
        lines = store.log_lines(lambda log: log.pid == pid)
    for line in lines[-tail:] if tail > 0 else lines:
        yield line["text"]
