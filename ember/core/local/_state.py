"""The local driver's state API: what ``ember.util.state`` and the dashboard read.

Nearly all of it is computed when asked, from the records the scheduler keeps anyway (actors,
queued and running work, the object table, the resource pool). The only bookkeeping on the hot
path is ``on_finish``: a counter per function and a bounded ring of recent tasks, which is what
lets a finished or failed task be listed at all (``benchmarks/core.py`` measures its cost).

The driver calls the ``on_*`` hooks with its lock held; ``query`` runs with the lock held too.
"""

# mypy: disable-error-code="misc"

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ember.core import _observe
from ember.core import _serialization as ser
from ember.core.local._logs import OutputCapture

if TYPE_CHECKING:
    from ember.core.local._driver import LocalBackend
    from ember.core.local._io import Conn
    from ember.core.local._records import _Actor, _Work, _Worker

RECENT_TASKS = 1000
RECENT_FAILURES = 100
DEATH_LINES = 20
EXITED_KEPT = 64

_ACTOR_STATES = {"pending": "PENDING_CREATION", "starting": "PENDING_CREATION",
                 "alive": "ALIVE", "exiting": "ALIVE", "dead": "DEAD"}


def short(class_name: str) -> str:
    """A class's name as users wrote it: ``Printer``, not ``test.<locals>.Printer``."""
    return class_name.rsplit(".", 1)[-1]


def hex_id(value: int | None) -> str | None:
    return None if value is None else f"{value:016x}"


def _pid(worker: _Worker | None) -> int | None:
    conn = worker.conn if worker is not None else None
    return None if conn is None else conn.pid


def parse_id(text: str) -> int | None:
    try:
        return int(text, 16)
    except (TypeError, ValueError):
        return None


class LocalObserver:
    """The local driver's observability: task history, worker output, worker metrics."""

    def __init__(self, backend: LocalBackend, log_to_driver: bool | None) -> None:
        self._backend = backend
        self.store = _observe.become_driver()
        # (function or method name, actor class name or None) -> [finished, failed]
        self._counts: dict[tuple[str, Any], list[int]] = {}
        # (task id, name, actor, error (Stored, or text once decoded), end time)
        self._recent: deque[list[Any]] = deque(maxlen=RECENT_TASKS)
        self._failures: deque[list[Any]] = deque(maxlen=RECENT_FAILURES)
        # worker uid -> the work it finished last: output read after a task ended (the pipe is
        # read by another thread than the replies) is still that task's
        self.last_work: dict[int, _Work] = {}
        self._exited: deque[int] = deque()
        self._capture: OutputCapture | None = None
        if log_to_driver is not None:  # None: workers write straight to the driver's streams
            self._capture = OutputCapture(self.store, log_to_driver, self._task_of)

    # -- hooks (driver lock held) -----------------------------------------------------------
    def on_finish(self, work: _Work, error: Any) -> None:
        actor = work.actor
        key = (work.name, None if actor is None else short(actor.meta.class_name))
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [0, 0]
        if error is None:
            counts[0] += 1
            self._recent.append([work.id, work.name, actor, None, time.time()])
            return
        counts[1] += 1
        if error[1]:  # it lies in shared memory that goes with its object: read it now
            error = _describe(error, self._backend._names)
        record = [work.id, work.name, actor, error, time.time()]
        self._recent.append(record)
        self._failures.append(record)

    def on_spawn(self, uid: int, actor: _Actor | None) -> tuple[int, ...]:
        """Output pipes for a new worker (their write ends; the caller closes them)."""
        if self._capture is None:
            return ()
        name = short(actor.meta.class_name) if actor is not None else "worker"
        return self._capture.open(uid, name, None if actor is None else actor.id)

    def on_pid(self, worker: Conn) -> None:
        log = self.store.logs.get(worker.uid)
        if log is not None:
            log.pid = worker.pid

    def on_exit(self, worker: Conn) -> None:
        log = self.store.logs.get(worker.uid)
        # kept a little longer: its last output may still be in the pipe
        self._exited.append(worker.uid)
        if len(self._exited) > EXITED_KEPT:
            self.last_work.pop(self._exited.popleft(), None)
        if log is not None:
            log.alive = False
        self.store.forget_source(worker.uid)

    def on_observe(self, worker: Conn, batch: Any) -> None:
        self.store.ingest(worker.uid, batch)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.close()
        _observe.leave_driver()

    def _task_of(self, uid: int) -> tuple[str | None, int | None]:
        """What worker ``uid`` runs now, else what it ran last (read without the lock: see
        _logs)."""
        worker = self._backend._sched.workers.get(uid)
        work = None
        if worker is not None:
            try:
                if worker.actor is not None:
                    calls = list(worker.actor.inflight.values())
                    work = calls[0] if calls else None
                else:
                    work = worker.inflight[0]
            except (IndexError, RuntimeError):  # it changed while we looked
                work = None
        if work is None:
            work = self.last_work.get(uid)
        if work is None:
            return None, None
        return (short(work.name) if work.actor is None else None), work.id

    # -- queries (driver lock held) -------------------------------------------------------------
    def query(self, kind: str, filters: list[tuple[str, str, Any]] | None = None,
              limit: int | None = None, detail: bool = False) -> Any:
        if kind == "actors":
            return _observe.filter_rows(self._actors(detail), filters, limit)
        if kind == "tasks":
            return _observe.filter_rows(self._tasks(detail), filters, limit)
        if kind == "objects":
            return _observe.filter_rows(self._objects(), filters, limit)
        if kind == "nodes":
            return _observe.filter_rows(iter([self._node()]), filters, limit)
        if kind == "task_summary":
            return self._task_summary()
        if kind == "status":
            return self._status()
        raise ValueError(f"unknown state query {kind!r} (known: actors, tasks, objects, nodes, "
                         "task_summary, status)")

    def _pid_of_actor(self, actor: _Actor) -> int | None:
        pid = _pid(actor.worker)
        if pid is not None:
            return pid
        pid = None
        for log in self.store.logs.values():  # its last process, if it is gone
            if log.actor_id == actor.id:
                pid = log.pid
        return pid

    def _death_cause(self, actor: _Actor) -> str:
        """Why it died; for a process that ended on its own, also the last lines it wrote to
        stderr (a crash's traceback lands there)."""
        cause = actor.death
        if "Traceback" in cause or "out of scope" in cause:
            return cause
        last: list[str] = []
        for log in self.store.processes():
            if log.actor_id == actor.id:
                last = [line.text for line in log.lines if line.stream == "stderr"][-DEATH_LINES:]
        if last:
            cause += "\n\nthe last lines of its stderr:\n" + "\n".join(last)
        return cause

    def _actors(self, detail: bool) -> Iterator[dict[str, Any]]:
        sched = self._backend._sched
        for actor in list(sched.actors.values()):
            state = _ACTOR_STATES.get(actor.state, actor.state.upper())
            if actor.state == "pending" and actor.deps and any(
                    not sched.store.is_ready(d) for d in actor.deps):
                state = "DEPENDENCIES_UNREADY"
            elif actor.state == "starting" and actor.restarts:
                state = "RESTARTING"
            row = {
                "actor_id": hex_id(actor.id), "class_name": short(actor.meta.class_name),
                "state": state, "name": actor.name or "", "namespace": actor.namespace,
                "pid": self._pid_of_actor(actor), "node_id": "local",
                "required_resources": dict(actor.request), "num_restarts": actor.restarts,
                "death_cause": self._death_cause(actor) if actor.death else None,
                "pending_calls": len(actor.queue), "running_calls": len(actor.inflight),
                "is_detached": actor.pinned,
            }
            yield row

    def _work_row(self, work: _Work, state: str, pid: int | None) -> dict[str, Any]:
        actor = work.actor
        return {
            "task_id": hex_id(work.id), "name": short(work.name),
            "func_or_class_name": short(work.name) if actor is None
            else f"{short(actor.meta.class_name)}.{work.name}",
            "type": "NORMAL_TASK" if actor is None else "ACTOR_TASK", "state": state,
            "actor_id": hex_id(actor.id) if actor is not None else None,
            "worker_pid": pid, "node_id": "local",
            "required_resources": dict(work.request),
            "parent_task_id": hex_id(work.parent),
            "error_type": None, "error_message": None, "end_time_ms": None,
        }

    def _tasks(self, detail: bool) -> Iterator[dict[str, Any]]:
        sched = self._backend._sched
        placed: dict[int, tuple[int | None, bool]] = {}
        for worker in list(sched.workers.values()):
            for position, work in enumerate(worker.inflight):
                placed[id(work)] = (_pid(worker), position == 0)
        for work in list(sched.tasks.values()):
            where = placed.get(id(work))
            if where is not None:
                yield self._work_row(work, "RUNNING" if where[1] else "SUBMITTED_TO_WORKER",
                                     where[0])
            elif work.waiting:
                yield self._work_row(work, "PENDING_ARGS_AVAIL", None)
            else:
                yield self._work_row(work, "PENDING_NODE_ASSIGNMENT", None)
        for actor in list(sched.actors.values()):
            pid = _pid(actor.worker)
            # calls beyond the actor's concurrency wait in its process, in order
            slots = actor.max_concurrency or (1000 if actor.meta.is_async else 1)
            for position, work in enumerate(list(actor.inflight.values())):
                yield self._work_row(work, "RUNNING" if position < slots
                                     else "SUBMITTED_TO_WORKER", pid)
            for work in list(actor.queue):
                if work.id != -1:
                    yield self._work_row(work, "PENDING_ARGS_AVAIL" if work.waiting
                                         else "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY", None)
        # then what ended: the recent failures first (so a flood of finished calls never
        # hides one), then the recent successes, newest first
        for record in reversed(self._failures):
            yield self._ended_row(record)
        for record in reversed(self._recent):
            if record[3] is None:
                yield self._ended_row(record)

    def _ended_row(self, record: list[Any]) -> dict[str, Any]:
        task_id, name, actor, error, ended = record
        name = short(name)
        row: dict[str, Any] = {
            "task_id": hex_id(task_id), "name": name,
            "func_or_class_name": name if actor is None
            else f"{short(actor.meta.class_name)}.{name}",
            "type": "NORMAL_TASK" if actor is None else "ACTOR_TASK",
            "state": "FINISHED" if error is None else "FAILED",
            "actor_id": hex_id(actor.id) if actor is not None else None,
            "worker_pid": None, "node_id": "local", "required_resources": {},
            "parent_task_id": None, "error_type": None, "error_message": None,
            "end_time_ms": int(ended * 1000),
        }
        if error is not None:
            if len(error) == 3:  # still the stored error: read it once
                record[3] = error = _describe(error, self._backend._names)
            row["error_type"], row["error_message"] = error
        return row

    def _task_summary(self) -> dict[str, Any]:
        summary: dict[str, dict[str, Any]] = {}

        def entry(name: str, kind: str) -> dict[str, int]:
            found = summary.get(name)
            if found is None:
                found = summary[name] = {"func_or_class_name": name, "type": kind,
                                         "state_counts": {}}
            counts: dict[str, int] = found["state_counts"]
            return counts

        for (name, class_name), (finished, failed) in list(self._counts.items()):
            full = short(name) if class_name is None else f"{class_name}.{name}"
            counts = entry(full, "NORMAL_TASK" if class_name is None else "ACTOR_TASK")
            if finished:
                counts["FINISHED"] = counts.get("FINISHED", 0) + finished
            if failed:
                counts["FAILED"] = counts.get("FAILED", 0) + failed
        for row in self._tasks(False):
            if row["state"] in ("FINISHED", "FAILED"):
                continue  # counted above, for every task and not only the recent ones
            counts = entry(row["func_or_class_name"], row["type"])
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        failures = []
        names = self._backend._names
        for record in reversed(self._failures):
            if len(record[3]) == 3:
                record[3] = _describe(record[3], names)
            actor = record[2]
            failures.append({
                "task_id": hex_id(record[0]),
                "func_or_class_name": short(record[1]) if actor is None
                else f"{short(actor.meta.class_name)}.{record[1]}",
                "error_type": record[3][0], "error_message": record[3][1],
                "end_time_ms": int(record[4] * 1000),
            })
        total = sum(sum(s["state_counts"].values()) for s in summary.values())
        return {"summary": summary, "total_tasks": total, "recent_failures": failures}

    def _objects(self) -> Iterator[dict[str, Any]]:
        sched = self._backend._sched
        store = sched.store
        for oid, obj in list(store.objects.items()):
            stored = obj.stored
            if stored is None:
                producer = sched.producer.get(oid)
                yield {"object_id": hex_id(oid), "object_size": None, "state": "PENDING",
                       "reference_count": obj.refs, "spilled_bytes": 0,
                       "task_name": producer.name if producer is not None else None}
                continue
            size = len(stored[0])
            spilled = 0
            shared = 0
            for name, _offset, nbytes, _new in stored[1]:
                size += nbytes
                segment = store.segments.get(name)
                if segment is not None and segment.spilled:
                    spilled += nbytes
                else:
                    shared += nbytes
            state = "ERROR" if obj.error else ("SPILLED" if spilled else "IN_MEMORY")
            yield {"object_id": hex_id(oid), "object_size": size, "state": state,
                   "reference_count": obj.refs, "spilled_bytes": spilled,
                   "shared_memory_bytes": shared, "task_name": None}

    def _node(self) -> dict[str, Any]:
        backend = self._backend
        sched = backend._sched
        totals = sched.resources("total")
        available = sched.resources("available")
        store = sched.store
        used = {k: round(v - available.get(k, 0.0), 9) for k, v in totals.items()
                if k != "object_store_memory"}
        return {
            "node_id": "local", "node_ip": "127.0.0.1", "state": "ALIVE", "is_head_node": True,
            "resources_total": totals, "resources_available": available,
            "resources_used": used,
            "object_store_used_bytes": store.used,
            "object_store_spilled_bytes": store.spilled_bytes,
            "object_store_capacity_bytes": store.capacity,
            "num_objects": len(store.objects),
            "num_workers": len(sched.workers),
            "worker_pids": sorted(pid for w in sched.workers.values() if (pid := _pid(w))),
        }

    def _status(self) -> dict[str, Any]:
        actors: dict[str, int] = {}
        for row in self._actors(False):
            actors[row["state"]] = actors.get(row["state"], 0) + 1
        summary = self._task_summary()
        tasks: dict[str, int] = {}
        for entry in summary["summary"].values():
            for state, n in entry["state_counts"].items():
                tasks[state] = tasks.get(state, 0) + n
        backend = self._backend
        return {"backend": "local", "job_id": backend._job_id, "nodes": [self._node()],
                "actors": actors, "tasks": tasks,
                "recent_failures": summary["recent_failures"][:10]}


def _describe(error: Any, names: Any) -> tuple[str, str]:
    """(type name, message with the remote traceback) of a stored error."""
    try:
        exc = ser.loads(error, names)
    except Exception as decode_error:  # best effort: a listing must not fail on one error
        return "Unknown", f"(the error could not be read: {decode_error})"
    cause = getattr(exc, "cause", None)
    return type(cause if cause is not None else exc).__name__, str(exc)
