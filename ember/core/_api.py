"""The core API: ``init``, ``get``, ``put``, ``wait`` and friends.

These functions validate what the user passed and hand the work to the current backend.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ember.core._refs import ObjectRef, ObjectRefGenerator
from ember.errors import RuntimeNotInitializedError

if TYPE_CHECKING:
    from ember.core._backend import Backend
    from ember.core._context import RuntimeContext
    from ember.core._remote import ActorHandle

logger = logging.getLogger("ember")

BACKENDS = ("local", "ray")

_lock = threading.RLock()
_backend: Backend | None = None
_atexit_registered = False


class InitInfo:
    """What ``ember.init`` returns; also a context manager that shuts the runtime down."""

    def __init__(self, backend: str, address: str | None) -> None:
        self.backend = backend
        self.address = address

    def __repr__(self) -> str:
        return f"InitInfo(backend={self.backend!r}, address={self.address!r})"

    def __enter__(self) -> InitInfo:
        return self

    def __exit__(self, *exc: object) -> None:
        shutdown()


def init(
    backend: str = "local",
    *,
    address: str | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    namespace: str | None = None,
    ignore_reinit_error: bool = False,
    **backend_options: Any,
) -> InitInfo:
    """Start (or connect to) a runtime. Called implicitly by the first API call that needs one.

    ``backend="local"`` runs everything on this machine in worker processes started from a fork
    server; ``backend="ray"`` runs the same program on a Ray cluster (``address="auto"`` or
    ``"ray://host:10001"``; extra keyword arguments go to ``ray.init``).
    """
    global _backend, _atexit_registered
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (known: {', '.join(map(repr, BACKENDS))})")
    with _lock:
        if _backend is not None:
            if ignore_reinit_error:
                logger.info("ember.init called again; keeping the running %s runtime",
                            _backend.name)
                return InitInfo(_backend.name, address)
            raise RuntimeError(
                f"ember is already initialized (backend {_backend.name!r}); call "
                "ember.shutdown() first or pass ignore_reinit_error=True"
            )
        if backend == "local":
            if address is not None:
                raise ValueError(
                    "address is only for backend='ray'; the local backend runs on this machine"
                )
            if backend_options:
                raise TypeError(
                    f"unexpected options for the local backend: {sorted(backend_options)}"
                )
            from ember.core._platform import check_local_backend_supported

            check_local_backend_supported()  # before any Linux-only plumbing is imported
            from ember.core.local import LocalBackend

            _backend = LocalBackend.start(
                num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                object_store_memory=object_store_memory, namespace=namespace,
            )
        else:
            from ember.core.ray_backend import RayBackend

            _backend = RayBackend.start(
                address=address, num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                object_store_memory=object_store_memory, namespace=namespace,
                **backend_options,
            )
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
        return InitInfo(backend, address)


def shutdown() -> None:
    """Stop the runtime: ends worker processes and frees every object. Safe to call twice."""
    global _backend
    with _lock:
        backend, _backend = _backend, None
    if backend is not None:
        backend.shutdown()


def is_initialized() -> bool:
    return _backend is not None


def current_backend() -> Backend:
    """The running backend, started with defaults (``ember.init()``) on first use."""
    backend = _backend
    if backend is not None:
        return backend
    with _lock:
        if _backend is None:
            from ember.core._config import default_backend

            name, address = default_backend()
            if name == "local":
                from ember.core.ray_backend import inside_ray_worker

                if inside_ray_worker():  # ember code in a Ray task/actor uses that Ray
                    name = "ray"
            init(name, address=address) if name == "ray" else init(name)
        assert _backend is not None
        return _backend


def _set_worker_backend(backend: Backend) -> None:
    """Inside a worker process: route API calls to the worker's client of the driver."""
    global _backend
    _backend = backend


def _check_refs(refs: Sequence[Any], what: str) -> None:
    for ref in refs:
        if not isinstance(ref, ObjectRef):
            hint = ""
            if isinstance(ref, ObjectRefGenerator):
                hint = " (iterate an ObjectRefGenerator to get its ObjectRefs)"
            raise TypeError(
                f"{what} takes ObjectRefs, got {type(ref).__name__}: {ref!r}{hint}"
            )


def get(refs: ObjectRef | Sequence[ObjectRef], *, timeout: float | None = None) -> Any:
    """The value of a reference, or the values of a list of references, in order.

    Raises the task's exception (an instance of its own type and of ``TaskError``) and
    ``GetTimeoutError`` when ``timeout`` seconds pass first.
    """
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout={timeout} must be >= 0 or None")
    if isinstance(refs, ObjectRef):
        return current_backend().get([refs], timeout)[0]
    if not isinstance(refs, (list, tuple)):
        _check_refs([refs], "ember.get()")
    _check_refs(refs, "ember.get()")
    if not refs:
        return []
    return current_backend().get(list(refs), timeout)


def put(value: Any) -> ObjectRef:
    """Store a value once and get a reference to pass to many tasks."""
    if isinstance(value, ObjectRef):
        raise TypeError("ember.put() of an ObjectRef is not allowed; pass the ObjectRef itself")
    return current_backend().put(value)


def wait(
    refs: Sequence[ObjectRef],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Split ``refs`` into (ready, not ready) once ``num_returns`` are ready or time runs out."""
    if isinstance(refs, ObjectRef) or not isinstance(refs, (list, tuple)):
        raise TypeError(f"ember.wait() takes a list of ObjectRefs, got {type(refs).__name__}")
    _check_refs(refs, "ember.wait()")
    if not refs:
        return [], []
    if len(set(refs)) != len(refs):
        raise ValueError("ember.wait() got the same ObjectRef more than once")
    if not 0 <= num_returns <= len(refs):
        raise ValueError(
            f"num_returns={num_returns} must be between 0 and the number of refs ({len(refs)})"
        )
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout={timeout} must be >= 0 or None")
    return current_backend().wait(list(refs), num_returns, timeout, fetch_local)


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Stop an actor now. Pending calls fail with ``ActorDiedError``; with
    ``no_restart=False`` the actor restarts if its ``max_restarts`` allows."""
    from ember.core._remote import ActorHandle

    if not isinstance(actor, ActorHandle):
        raise TypeError(f"ember.kill() takes an ActorHandle, got {type(actor).__name__}")
    current_backend().kill(actor, no_restart)


def cancel(ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel a task: a queued one never runs, a running one is interrupted (``force=True``
    kills its worker). ``get`` on it then raises ``TaskCancelledError``."""
    _check_refs([ref], "ember.cancel()")
    current_backend().cancel(ref, force, recursive)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the live actor created with ``name=`` (``ValueError`` if none)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"actor name must be a non-empty string, got {name!r}")
    return current_backend().get_actor(name, namespace)


def cluster_resources() -> dict[str, float]:
    return current_backend().cluster_resources()


def available_resources() -> dict[str, float]:
    return current_backend().available_resources()


def get_runtime_context() -> RuntimeContext:
    return current_backend().runtime_context()


def _require_backend() -> Backend:
    if _backend is None:
        raise RuntimeNotInitializedError("ember is not initialized; call ember.init() first")
    return _backend
