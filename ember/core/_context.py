"""``ember.get_runtime_context()``: who and where the calling code is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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
    # Asks the backend whether the running task was cancelled (None in the driver).
    _is_canceled: Callable[[], bool] | None = field(default=None, repr=False, compare=False)

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

    def get_worker_id(self) -> str:
        """The id of the worker process (or the driver) running this code."""
        return self.worker_id

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        """``{"GPU": ["0", ...]}``: the accelerators assigned to this task or actor."""
        return {k: list(v) for k, v in self.accelerator_ids.items()} or {"GPU": []}

    def get_assigned_resources(self) -> dict[str, float]:
        """The resources held by the running task or actor, e.g. ``{"CPU": 1.0}``, as the
        backend reports them (the ray backend does; the local backend reports ``{}`` so far)."""
        return dict(self.assigned_resources)

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
        """The context as a dict: backend, job, node, namespace, task and actor ids."""
        return {
            "backend": self.backend, "job_id": self.job_id, "node_id": self.node_id,
            "namespace": self.namespace, "task_id": self.task_id, "actor_id": self.actor_id,
        }
