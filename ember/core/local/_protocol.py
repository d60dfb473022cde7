"""Shared vocabulary of the driver and its workers.

Messages are tuples whose first item names them. Driver to worker::

    ("task", task_id, fn_id, fn_code|None, args, deps, return_ids, generator_id|None, gpu_ids,
     name, backpressure)
    ("actor", actor_id, class_id, class_code, args, deps, max_concurrency, gpu_ids, name,
     namespace, restarted)
    ("call", call_id, method, args, deps, return_ids, generator_id|None, backpressure)
    ("reply", request_id, payload)        ("ack", generator_id, consumed)
    ("close_generator", generator_id)     ("cancel", task_id)        ("exit",)

Worker to driver::

    ("ready", pid)                        ("refs", [(object_id, +1|-1), ...])
    ("done", task_id, results|None, error|None, seconds)
    ("item", generator_id, index, stored, is_error)
    ("actor_ready", actor_id)             ("actor_failed", actor_id, error)
    ("requeue", [task_id, ...])           ("put", object_id, stored)
    ("submit", spec)                      ("request", request_id, kind, payload)

``args`` is a serialized ``(args, kwargs)`` pair in which each top-level ``ObjectRef`` became a
``Dep(i)``; ``deps`` carries the i-th dependency's serialized value and whether it is an error.
"""

from __future__ import annotations

from typing import Any


class Dep:
    """Placeholder for the i-th top-level ``ObjectRef`` argument of a task."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (Dep, (self.index,))


# Worker ids occupy the high bits of object ids that a worker allocates itself.
ID_SHIFT = 40

DEFAULT_BACKPRESSURE = 16
