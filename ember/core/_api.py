"""The core API: ``init``, ``get``, ``put``, ``wait`` and friends.

These functions validate what the user passed and hand the work to the current backend.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from ember.core import _runtime_env
from ember.core._refs import ObjectRef, ObjectRefGenerator
from ember.errors import GetTimeoutError, RuntimeNotInitializedError

if TYPE_CHECKING:
    from ember.core._backend import Backend
    from ember.core._context import RuntimeContext
    from ember.core._remote import ActorHandle
    from ember.job_config import JobConfig

logger = logging.getLogger("ember")

BACKENDS = ("local", "ray")

_lock = threading.RLock()
_backend: Backend | None = None
_atexit_registered = False
_DEFAULT_DASHBOARD_HOST = "127.0.0.1"


class InitInfo:
    """What ``ember.init`` returns; also a context manager that shuts the runtime down."""

    def __init__(self, backend: str, address: str | None, dashboard_url: str | None = None
                 ) -> None:
        self.backend = backend
        self.address = address
        self.dashboard_url = dashboard_url  # with its token; None when no dashboard runs

    def __repr__(self) -> str:
        return (f"InitInfo(backend={self.backend!r}, address={self.address!r}, "
                f"dashboard_url={self.dashboard_url!r})")

    def __enter__(self) -> InitInfo:
        return self

    def __exit__(self, *exc: object) -> None:
        shutdown()


def init(
    backend: str | None = None,
    *,
    address: str | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    namespace: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    ignore_reinit_error: bool = False,
    include_dashboard: bool | None = None,
    dashboard: bool | None = None,
    dashboard_host: str = _DEFAULT_DASHBOARD_HOST,
    dashboard_port: int | None = None,
    log_to_driver: bool = True,
    job_config: JobConfig | None = None,
    **backend_options: Any,
) -> InitInfo:
    """Start (or connect to) a runtime. Called implicitly by the first API call that needs one.

    ``backend="local"`` runs everything on this machine in worker processes started from a fork
    server; ``backend="ray"`` runs the same program on a Ray cluster (``address="auto"`` or
    ``"ray://host:10001"``; extra keyword arguments go to ``ray.init``).

    ``runtime_env`` (Ray's shape: ``env_vars``, ``working_dir``, ``py_modules``, ...) applies
    to every task and actor of the job; a task's or actor's own ``runtime_env`` option is
    merged over it (its fields win; ``env_vars`` are merged). The local backend sets up
    ``env_vars``, ``working_dir`` and ``py_modules`` itself and refuses the keys that install
    software (``pip``, ``conda``, ...); unknown keys are an error.

    ``include_dashboard=True`` (or ``dashboard=True``) serves the dashboard and ``/metrics`` on
    ``dashboard_host:dashboard_port`` (default 127.0.0.1, port 8265 or a free one) and prints
    its URL, which carries the token every request needs. ``log_to_driver`` prints every
    worker's output here prefixed ``(Name pid=N)``; it is kept for ``ember logs`` either way.

    Arguments given here win; ``EMBER_BACKEND`` and ``EMBER_ADDRESS`` fill in what is not
    given, so that ``EMBER_BACKEND=ray EMBER_ADDRESS=auto python main.py`` moves a program that
    calls ``ember.init(num_cpus=2)`` onto a cluster unchanged (sizing arguments are then ignored
    with a note: the cluster's nodes are sized by ``ray start``). ``EMBER_LOG_LEVEL`` sets the
    level of the ``ember`` logger; the README lists every ``EMBER_*`` variable.

    ``job_config`` (an ``ember.job_config.JobConfig``, Ray's ``JobConfig``) gives the job's
    ``runtime_env`` and namespace (``ray_namespace``); ``runtime_env=`` and ``namespace=``
    given here replace them, as in Ray.
    """
    if job_config is not None:
        from ember.job_config import JobConfig

        if not isinstance(job_config, JobConfig):
            raise TypeError(f"job_config must be an ember.job_config.JobConfig, got "
                            f"{type(job_config).__name__}")
        if not runtime_env:
            runtime_env = job_config.runtime_env or None
        if namespace is None:
            namespace = job_config.ray_namespace
    runtime_env = _runtime_env.validate(runtime_env)
    global _backend, _atexit_registered
    from ember.core._settings import log_level, resolve_backend

    backend, address = resolve_backend(backend, address)
    level = log_level()
    if level is not None:
        logging.getLogger("ember").setLevel(level)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (known: {', '.join(map(repr, BACKENDS))})")
    if include_dashboard is not None and dashboard is not None and include_dashboard != dashboard:
        raise ValueError(f"include_dashboard={include_dashboard} and dashboard={dashboard} "
                         "disagree; pass only one of them")
    want_dashboard = bool(include_dashboard if include_dashboard is not None else dashboard)
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
            memory = backend_options.pop("_memory", None)  # Ray's ray.init(_memory=...)
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
                runtime_env=runtime_env,
                log_to_driver=log_to_driver, _memory=memory,
            )
        else:
            from ember.core.ray_backend import RayBackend

            if include_dashboard is not None:  # Ray's own dashboard follows the same switch
                backend_options.setdefault("include_dashboard", include_dashboard)
            if not log_to_driver:
                backend_options.setdefault("log_to_driver", False)
            _backend = RayBackend.start(
                address=address, num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                object_store_memory=object_store_memory, namespace=namespace,
                runtime_env=runtime_env, **backend_options,
            )
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
        try:
            url = _start_observing(_backend, want_dashboard, dashboard_host, dashboard_port)
        except BaseException:
            started, _backend = _backend, None
            started.shutdown()
            raise
        return InitInfo(backend, address, url)


def _start_observing(backend: Backend, dashboard: bool, host: str, port: int | None
                     ) -> str | None:
    """observe: the session socket for the ember CLI and, when asked, the dashboard."""
    if backend.name == "ray":
        from ember.core.ray_backend import inside_ray_worker

        if inside_ray_worker():  # ember attached to the Ray worker it runs in: not a driver
            return None
    from ember.core._settings import session_server_enabled
    from ember.dashboard import _server

    service = _server.start(backend, dashboard=dashboard, host=host, port=port,
                            session=session_server_enabled())
    return None if service is None else service.url


def shutdown() -> None:
    """Stop the runtime: ends worker processes and frees every object. Safe to call twice."""
    global _backend
    with _lock:
        backend, _backend = _backend, None
    if backend is not None:
        from ember.dashboard import _server

        _server.stop()  # observe
        backend.shutdown()
        from ember.core import _observe

        _observe.leave_driver()


def is_initialized() -> bool:
    """Whether a runtime is running in this process (started by ``ember.init`` or by the first
    call that needed one).
    """
    return _backend is not None


def current_backend() -> Backend:
    """The running backend, started with defaults (``ember.init()``) on first use."""
    backend = _backend
    if backend is not None:
        return backend
    with _lock:
        if _backend is None:
            from ember.core._settings import default_backend

            name, address = default_backend()
            if name == "local":
                from ember.core.ray_backend import inside_ray_worker

                if inside_ray_worker():  # ember code in a Ray task/actor uses that Ray
                    name = "ray"
            init(name, address=address)
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


# The protocol by which a library's pending result is accepted where an ObjectRef is (serve's
# DeploymentResponse in ``ember.get(handle.remote(x))``, as Ray 2.5 programs write it): the
# object's class defines ``__ember_object_ref__(timeout)``, which returns the ObjectRef of the
# result once there is one, raising ``TimeoutError`` if ``timeout`` seconds (None: no bound)
# pass first. The core calls it and knows nothing else of the library.
REF_HOOK = "__ember_object_ref__"


def _has_ref_hook(value: Any) -> bool:
    return not isinstance(value, ObjectRef) and hasattr(type(value), REF_HOOK)


def _hooked_ref(value: Any, deadline: float | None, what: str) -> ObjectRef:
    """The ObjectRef a ``REF_HOOK`` object stands for, waiting until ``deadline`` at most."""
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        ref = getattr(value, REF_HOOK)(left)
    except GetTimeoutError:
        raise
    except TimeoutError as exc:
        raise GetTimeoutError(f"{what} timed out after {left} s: {exc}") from None
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"{type(value).__name__}.{REF_HOOK}() returned "
                        f"{type(ref).__name__}, not an ObjectRef")
    return ref


def get(refs: ObjectRef | Sequence[ObjectRef], *, timeout: float | None = None) -> Any:
    """The value of a reference, or the values of a list of references, in order.

    Raises the task's exception (an instance of its own type and of ``TaskError``) and
    ``GetTimeoutError`` when ``timeout`` seconds pass first. A serve ``DeploymentResponse``
    is accepted where an ``ObjectRef`` is (``ember.get(handle.remote(x))``, as in Ray 2.5).
    """
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout={timeout} must be >= 0 or None")
    if isinstance(refs, ObjectRef):
        return current_backend().get([refs], timeout)[0]
    if _has_ref_hook(refs):
        deadline = None if timeout is None else time.monotonic() + timeout
        ref = _hooked_ref(refs, deadline, "ember.get()")
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return current_backend().get([ref], left)[0]
    if not isinstance(refs, (list, tuple)):
        _check_refs([refs], "ember.get()")
    if any(_has_ref_hook(r) for r in refs):
        deadline = None if timeout is None else time.monotonic() + timeout
        refs = [_hooked_ref(r, deadline, "ember.get()") if _has_ref_hook(r) else r
                for r in refs]
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
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
    refs: Sequence[ObjectRef | ObjectRefGenerator],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[Any], list[Any]]:
    """Split ``refs`` into (ready, not ready) once ``num_returns`` are ready or time runs out.

    ``refs`` may hold ``ObjectRefGenerator``s too: one is ready when its next item is (or when
    it has ended), as in Ray; and serve ``DeploymentResponse``s, each ready when its result is.
    """
    if isinstance(refs, ObjectRef) or not isinstance(refs, (list, tuple)):
        raise TypeError(f"ember.wait() takes a list of ObjectRefs, got {type(refs).__name__}")
    hooked = any(_has_ref_hook(r) for r in refs)
    _check_refs([r for r in refs if not isinstance(r, ObjectRefGenerator)
                 and not _has_ref_hook(r)], "ember.wait()")
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
    if not hooked:
        return current_backend().wait(list(refs), num_returns, timeout, fetch_local)
    # Pending library results (serve's DeploymentResponse): each stands for the ObjectRef it
    # gets; one that gets none before the timeout is not ready.
    deadline = None if timeout is None else time.monotonic() + timeout
    original: dict[Any, Any] = {}
    pending: list[Any] = []
    for value in refs:
        if not _has_ref_hook(value):
            original[value] = value
            continue
        try:
            original[_hooked_ref(value, deadline, "ember.wait()")] = value
        except GetTimeoutError:
            pending.append(value)
    wanted = min(num_returns, len(original))
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    ready: list[Any] = []
    if original:
        ready, _ = current_backend().wait(list(original), wanted, left, fetch_local)
    ready_values = [original[r] for r in ready]
    ready_ids = {id(v) for v in ready_values}
    return ready_values, [v for v in refs if id(v) not in ready_ids]


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Stop an actor now. Pending calls fail with ``ActorDiedError``; with
    ``no_restart=False`` the actor restarts if its ``max_restarts`` allows."""
    from ember.core._remote import ActorHandle

    if not isinstance(actor, ActorHandle):
        raise TypeError(f"ember.kill() takes an ActorHandle, got {type(actor).__name__}")
    current_backend().kill(actor, no_restart)


def cancel(
    ref: ObjectRef | ObjectRefGenerator, *, force: bool = False, recursive: bool = True
) -> None:
    """Cancel a task or an actor call (by its ``ObjectRef`` or ``ObjectRefGenerator``).

    A queued one never runs. A running task is interrupted (``TaskCancelledError`` is raised in
    it; ``force=True`` kills its worker). A running actor call is not interrupted, as in Ray:
    an ``async`` actor's call gets ``asyncio.CancelledError``, the others can look at
    ``get_runtime_context().is_canceled()``. ``get`` raises ``TaskCancelledError`` at once.
    """
    if not isinstance(ref, ObjectRefGenerator):
        _check_refs([ref], "ember.cancel()")
    current_backend().cancel(ref, force, recursive)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the live actor created with ``name=`` (``ValueError`` if none)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"actor name must be a non-empty string, got {name!r}")
    return current_backend().get_actor(name, namespace)


def cluster_resources() -> dict[str, float]:
    """The total resources of the cluster, e.g. ``{"CPU": 8.0, "GPU": 1.0, ...}``, with the
    object store's capacity in bytes as ``object_store_memory``.

    >>> ember.cluster_resources()["CPU"] >= 1
    True
    """
    return current_backend().cluster_resources()


def available_resources() -> dict[str, float]:
    """The resources not held by running tasks and actors right now, and the object store's
    free bytes (``object_store_memory``).
    """
    return current_backend().available_resources()


def nodes() -> list[dict[str, Any]]:
    """The alive nodes of the cluster, one dict each (the local backend is one node)::

        {"NodeID": "1a2b...", "Alive": True, "NodeManagerAddress": "10.0.0.1", "IsHead": True,
         "Resources": {"CPU": 8.0, ...}, "AvailableResources": {"CPU": 6.0, ...}}

    (Ray's ``ray.nodes()`` shape, alive nodes only; the local backend is one node, at
    ``127.0.0.1``.)

    ``Resources`` is what the node has in all, ``AvailableResources`` what is free now (a
    snapshot: it changes as work starts and ends). A request is placed on one node, so a task
    asking for ``num_cpus=2`` needs a node with 2 CPUs free, whatever the cluster's total.
    """
    return list(current_backend().nodes())


def get_runtime_context() -> RuntimeContext:
    """Who and where the calling code is: job, node, worker, task and actor ids, assigned
    resources and accelerators (a ``RuntimeContext``).

    >>> @ember.remote
    ... def where():
    ...     context = ember.get_runtime_context()
    ...     return context.get_task_id() is not None, context.get_actor_id()
    >>> ember.get(where.remote())
    (True, None)
    """
    return current_backend().runtime_context()


def get_gpu_ids() -> list[int] | list[str]:
    """The GPUs assigned to the calling task or actor (``[]`` in the driver), as integers
    when they are numbers, as Ray returns them."""
    ids = get_runtime_context().get_accelerator_ids().get("GPU", [])
    if all(str(i).isdigit() for i in ids):
        return [int(i) for i in ids]
    return [str(i) for i in ids]


def timeline(filename: str | None = None) -> list[dict[str, Any]] | None:
    """Task events as a Chrome trace (``chrome://tracing``): the list, or written to
    ``filename`` as JSON. The local backend records no events yet, so its trace is empty; the
    ray backend gives Ray's."""
    events = current_backend().timeline_events()
    if filename is None:
        return events
    with open(filename, "w") as f:
        json.dump(events, f)
    return None


class ActorExit(SystemExit):
    """What ``exit_actor()`` raises: the actor ends once its method lets it through."""


def exit_actor() -> NoReturn:
    """End the actor this is called in, from one of its methods, as Ray's
    ``ray.actor.exit_actor()``: the call fails with ``ActorDiedError``, so do the calls queued
    behind it, and the actor is not restarted. ``sys.exit()`` in a method does the same.

    >>> @ember.remote
    ... class Job:
    ...     def stop(self):
    ...         ember.actor.exit_actor()
    """
    from ember.core.ray_backend import inside_ray_worker

    in_runtime = is_initialized() or inside_ray_worker()
    if not in_runtime or get_runtime_context().get_actor_id() is None:
        raise TypeError("exit_actor() ends the actor it is called in: call it from a method "
                        "of an actor (ember.kill(handle) ends an actor from outside)")
    raise ActorExit(0)


def _require_backend() -> Backend:
    if _backend is None:
        raise RuntimeNotInitializedError("ember is not initialized; call ember.init() first")
    return _backend
