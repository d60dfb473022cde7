"""``ember.get_runtime_context()``: who and where the calling code is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class ContextID(str):
    """An id in ``RuntimeContext.get()``: a ``str`` that also answers ``.hex()``, as Ray's
    ``JobID``/``NodeID``/``TaskID``/``ActorID`` objects there do."""

    __slots__ = ()

    def hex(self) -> str:
        return str(self)


@dataclass(frozen=True)
class RuntimeContext:
    """Facts about the process calling ``get_runtime_context()``.

    In the driver, ``task_id`` and ``actor_id`` are ``None``; inside a task or actor they name it.
    """

    backend: str
    job_id: str
    node_id: str
    namespace: str
    worker_id: str
    task_id: str | None = None
    actor_id: str | None = None
    accelerator_ids: dict[str, list[str]] = field(default_factory=dict)
    assigned_resources: dict[str, float] = field(default_factory=dict)
    was_current_actor_reconstructed: bool = False
    task_name: str | None = None
    actor_name: str | None = None
    # Asks the backend whether the running task was cancelled (None in the driver).
    _is_canceled: Callable[[], bool] | None = field(default=None, repr=False, compare=False)
    # Asks the backend for the resources of the running task or actor (when not given above).
    _assigned: Callable[[], dict[str, float]] | None = field(
        default=None, repr=False, compare=False)
    # Makes a handle to the running actor (None outside an actor).
    _current_actor: Callable[[], Any] | None = field(default=None, repr=False, compare=False)

    def get_job_id(self) -> str:
        """The id of the running job (runtime session): the same in the driver and workers."""
        return self.job_id

    def get_node_id(self) -> str:
        """The id of the node (machine) this code runs on."""
        return self.node_id

    def get_task_id(self) -> str | None:
        """The id of the running task or actor call; ``None`` in the driver."""
        return self.task_id

    def get_actor_id(self) -> str | None:
        """The id of the actor whose method is running; ``None`` outside an actor."""
        return self.actor_id

    def get_actor_name(self) -> str | None:
        """The name the running actor was created with (``""`` for an unnamed actor);
        ``None`` outside an actor, as in Ray."""
        return self.actor_name

    def get_worker_id(self) -> str:
        """The id of the worker process (or the driver) running this code."""
        return self.worker_id

    def get_task_name(self) -> str | None:
        """The running task's name: its ``name=`` option, else its function's name, or
        ``Class.method`` for an actor call, as Ray names them (``None`` in the driver)."""
        return self.task_name

    def get_placement_group_id(self) -> str | None:
        """The id of the placement group the running task or actor is in (``None`` in the
        driver and outside any group): ``get_current_placement_group().id``."""
        from ember.core._placement import get_current_placement_group

        group = get_current_placement_group()
        return None if group is None else group.id

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        """``{"GPU": ["0", ...]}``: the accelerators assigned to this task or actor."""
        return {k: list(v) for k, v in self.accelerator_ids.items()} or {"GPU": []}

    def get_assigned_resources(self) -> dict[str, float]:
        """What the running task (or actor) asked for and holds, e.g. ``{"CPU": 1.0}``; an
        actor without ``num_cpus`` holds no CPU while it runs, as in Ray."""
        if self._assigned is not None:
            return dict(self._assigned())
        return dict(self.assigned_resources)

    @property
    def current_actor(self) -> Any:
        """A handle to the actor this is called in (Ray's ``current_actor``)."""
        if self._current_actor is None:
            raise RuntimeError("current_actor is only available inside an actor's methods")
        return self._current_actor()

    def is_canceled(self) -> bool:
        """True once ``ember.cancel`` was called on the running task or actor call.

        A running actor call is not interrupted (an actor has state): its method can look at
        this and stop early. Raises ``RuntimeError`` in the driver and in an ``async`` actor
        (where a cancelled call gets ``asyncio.CancelledError``).
        """
        if self._is_canceled is None:
            raise RuntimeError("is_canceled() is only available inside a task or an actor "
                               "method, not in the driver")
        return self._is_canceled()

    def get(self) -> dict[str, Any]:
        """A summary in the shape of Ray's: ``job_id``, ``node_id``, ``namespace``, and
        ``task_id``/``actor_id`` where there is one; the ids answer ``.hex()``."""
        summary: dict[str, Any] = {
            "backend": self.backend, "job_id": ContextID(self.job_id),
            "node_id": ContextID(self.node_id), "namespace": self.namespace,
        }
        if self.task_id is not None:
            summary["task_id"] = ContextID(self.task_id)
        if self.actor_id is not None:
            summary["actor_id"] = ContextID(self.actor_id)
        return summary
