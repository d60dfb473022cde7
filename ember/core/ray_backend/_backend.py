"""``RayBackend``: the core API on Ray Core.

Identities are Ray's own objects: an ember ``ObjectRef`` holds a ``ray.ObjectRef`` as its id, an
``ObjectRefGenerator`` a Ray ``ObjectRefGenerator``, an ``ActorHandle`` a Ray actor handle. Ray
therefore does the reference counting (the ``add_*_ref``/``remove_*_ref`` hooks are no-ops), and
when an ember reference or handle is pickled into a task argument or a return value, Ray's
serializer sees the Ray object inside and tracks it as it would its own. Unpickled in a Ray
worker, it binds to that worker's ``RayBackend``, which attaches to the Ray it runs in.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from ember.core._context import RuntimeContext
from ember.core._options import resource_request
from ember.core._refs import DynamicObjectRefGenerator, ObjectRef, ObjectRefGenerator
from ember.core._remote import ActorClass, ActorHandle, ActorMeta, RemoteFunction
from ember.core.ray_backend._callables import (
    actor_runnable,
    collecting,
    raise_error,
    raise_error_streaming,
    runnable,
)
from ember.core.ray_backend._groups import PlacementGroupsMixin
from ember.core.ray_backend._mapping import (
    GENERATOR_BACKPRESSURE,
    Unplaceable,
    client_limit,
    infeasible_reason,
    is_streaming,
    meta_from_ray_handle,
    ray_actor_options,
    ray_task_options,
    translate_error,
    uses_placement,
)
from ember.core.ray_backend._recancel import Recanceller
from ember.errors import (
    BackendError,
    GetTimeoutError,
    ResourceError,
    RuntimeNotInitializedError,
    SerializationError,
    TaskError,
)

logger = logging.getLogger("ember")

_KV_NAMESPACE = "ember"


def inside_ray_worker() -> bool:
    """True in a Ray worker process (a task or an actor), without importing ray."""
    import sys

    worker_module = sys.modules.get("ray._private.worker")
    if worker_module is None:
        return False
    try:
        worker = worker_module.global_worker
        return bool(worker.connected) and worker.mode == worker_module.WORKER_MODE
    except AttributeError:
        return False


class RayBackend(PlacementGroupsMixin):
    """The ``ray`` backend: every core API call maps onto the matching Ray Core call."""

    name = "ray"

    def __init__(self, ray: Any, *, owned: bool, reject_infeasible: bool = True) -> None:
        from ray import exceptions

        self._ray = ray
        self._rx = exceptions
        self._ray_ref_type = ray.ObjectRef
        self._owned = owned  # ember started this Ray instance, so ember.shutdown() stops it
        self._reject_infeasible = reject_infeasible
        self._in_worker = inside_ray_worker()
        self._closed = False
        self._lock = threading.Lock()
        self._functions: dict[str, Any] = {}  # function id -> Ray remote function
        # RemoteFunction (one per .options() variant) -> Ray remote function with its options
        self._variants: weakref.WeakKeyDictionary[RemoteFunction, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._classes: dict[str, Any] = {}  # class id -> Ray actor class
        self._named: dict[str, Any] = {}  # actor id -> Ray handle, keeps named actors alive
        self._metas: dict[str, ActorMeta] = {}  # actor id -> ember metadata of named actors
        self._nodes: list[dict[str, float]] | None = None
        self._warned_infeasible: set[tuple[Any, ...]] = set()
        self._raise: Any = None  # Ray tasks that raise a given error (see _failed)
        self._raise_streaming: Any = None
        self._drain: Any = None  # observe: see _state.DriverDrain
        self._recancel = Recanceller(ray)
        if self._in_worker:  # observe: this worker's metrics and views go to the driver
            from ember.core import _observe
            from ember.core.ray_backend._state import worker_sender

            _observe.set_sender(worker_sender(ray))

    # -- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        *,
        address: str | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        resources: dict[str, float] | None = None,
        object_store_memory: int | None = None,
        namespace: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        reject_infeasible: bool = True,
        **ray_init_kwargs: Any,
    ) -> RayBackend:
        """Connect to Ray, or attach to the Ray this process already runs in.

        ``address=None`` starts a Ray instance on this machine (sized by ``num_cpus``, ...);
        ``"auto"`` joins the cluster that ``ray start`` runs here; ``"ray://host:10001"`` goes
        through the Ray client. Other keyword arguments go to ``ray.init``. In a Ray worker,
        or when this process already called ``ray.init``, ember uses that connection and leaves
        it running at ``ember.shutdown()``. ``reject_infeasible=False`` lets requests that no
        node can hold wait (for clusters whose autoscaler adds nodes) instead of raising
        ``ResourceError``.

        Sizing arguments only size a new Ray instance: when connecting to a cluster they are
        ignored, with a note in the log. ``runtime_env`` (Ray's shape: ``env_vars``,
        ``working_dir``, ``py_modules``...) applies to every worker of the job, and the storage
        settings of the driver's environment are added to its ``env_vars`` (see ``_env``).
        """
        try:
            import ray
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                "backend='ray' needs Ray, which is not installed: pip install "
                "'ember-scale[ray]' (the same Ray version on every node of the cluster)",
                name="ray") from exc

        from ember.core.ray_backend._env import (
            driver_fsspec_conf,
            forwarded_env,
            with_forwarded_env,
        )

        sizes: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus,
                                 "resources": resources,
                                 "object_store_memory": object_store_memory}
        local: dict[str, Any] = {k: v for k, v in sizes.items() if v is not None}
        if ray.is_initialized():
            if runtime_env:
                raise ValueError(
                    "runtime_env cannot be applied to the Ray instance this process already "
                    "joined; pass it to ray.init, or call ember.init(backend='ray', "
                    "runtime_env=...) before Ray is initialized"
                )
            if not inside_ray_worker():
                logger.info("ray is already initialized in this process; ember uses it as is")
                _note_ignored(local, "Ray is already initialized in this process")
            return cls(ray, owned=False, reject_infeasible=reject_infeasible)
        if address not in (None, "local") and local:
            _note_ignored(local, f"ember connects to the Ray cluster at address={address!r}")
            local = {}
        forwarded = forwarded_env(os.environ, driver_fsspec_conf())
        job_env = with_forwarded_env(runtime_env, forwarded)
        if job_env is not None:
            ray_init_kwargs["runtime_env"] = job_env
        if forwarded:
            logger.debug("forwarding %s to the Ray workers of this job",
                         ", ".join(sorted(forwarded)))  # names only, never the values
        try:
            ray.init(address=address, namespace=namespace, **local, **ray_init_kwargs)
        except ConnectionError as exc:
            reason = str(exc).rstrip(".")
            raise BackendError(
                f"could not connect to a Ray cluster at address={address!r}: {reason}. Start "
                "one with `ray start --head` (then address='auto' on that machine, or "
                "'ray://<head>:10001' from elsewhere), or pass address=None to start Ray here"
            ) from exc
        return cls(ray, owned=True, reject_infeasible=reject_infeasible)

    # -- observe ------------------------------------------------------------------------------
    def state(self, kind: str, filters: list[tuple[str, str, Any]] | None = None,
              limit: int | None = None, detail: bool = False) -> Any:
        """Rows of ``ember.util.state``, from ``ray.util.state`` (see _state.py)."""
        self._check_open()
        from ember.core.ray_backend._state import query

        return query(self._ray, kind, filters, limit, detail)

    def start_observe_drain(self) -> None:
        """With ember's dashboard: let workers' metrics and views reach this driver."""
        if self._drain is None and not self._in_worker:
            from ember.core.ray_backend._state import DriverDrain

            self._drain = DriverDrain(self._ray)

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._recancel.close()
        if self._drain is not None:
            self._drain.close()
        self._named.clear()
        self._variants = weakref.WeakKeyDictionary()
        self._functions.clear()
        self._classes.clear()
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()

    def _check_open(self) -> None:
        # Also keeps Ray from starting a new instance on its own: its API auto-initializes.
        if self._closed:
            raise RuntimeNotInitializedError(
                "this ember runtime was shut down; call ember.init() again and make new "
                "references"
            )

    # -- references ------------------------------------------------------------------------------
    # Ray counts references itself: the Ray object inside each ember object is what it counts.
    def make_ref(self, object_id: Any) -> ObjectRef:
        return ObjectRef(object_id, self, add_ref=False)

    def add_local_ref(self, object_id: Any) -> None:
        pass

    def remove_local_ref(self, object_id: Any) -> None:
        pass

    add_generator_ref = add_local_ref
    remove_generator_ref = remove_local_ref
    add_actor_ref = add_local_ref
    remove_actor_ref = remove_local_ref
    on_actor_handle_pickled = add_local_ref

    def on_ready(self, ref: ObjectRef, callback: Callable[[Any], None]) -> None:
        self._check_open()
        # The callback runs on Ray's thread once the value is local; it reads it from there.
        ref._id.future().add_done_callback(lambda _future: callback(ref))

    def generator_next(self, generator_id: Any, index: int, timeout: float | None
                       ) -> ObjectRef | None:
        self._check_open()
        try:
            if timeout is None:
                item = next(generator_id)
            else:
                item = generator_id._next_sync(timeout_s=timeout)
                if item.is_nil():
                    raise GetTimeoutError(f"no item from the generator within {timeout} s")
        except StopIteration:
            return None
        except self._rx.RayError as exc:
            raise translate_error(exc) from exc
        return ObjectRef(item, self, add_ref=False)

    def generator_next_async(
        self, generator_id: Any, index: int,
        deliver: Callable[[ObjectRef | None, BaseException | None], None],
    ) -> None:
        self._check_open()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:  # not called from a coroutine: wait on a helper thread
            def wait() -> None:
                try:
                    deliver(self.generator_next(generator_id, index, None), None)
                except BaseException as exc:
                    deliver(None, exc)

            threading.Thread(target=wait, name="ember-ray-generator", daemon=True).start()
            return

        def done(task: asyncio.Task[Any]) -> None:
            if task.cancelled():
                deliver(None, asyncio.CancelledError())
                return
            exc = task.exception()
            if exc is None:
                deliver(ObjectRef(task.result(), self, add_ref=False), None)
            elif isinstance(exc, StopAsyncIteration):
                deliver(None, None)
            else:
                deliver(None, translate_error(exc))

        loop.create_task(generator_id.__anext__()).add_done_callback(done)

    def _wrap(self, result: Any) -> Any:
        """Ember objects around what a Ray ``.remote()`` returned."""
        if isinstance(result, self._ray_ref_type):
            return ObjectRef(result, self, add_ref=False)
        if isinstance(result, list):
            return [ObjectRef(r, self, add_ref=False) for r in result]
        if result is None:
            return None
        return ObjectRefGenerator(result, self)

    def _unwrap_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]
                     ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        # Top-level refs go to Ray as Ray refs, so Ray resolves them to values before the call;
        # nested ones are pickled as ember refs and stay references.
        if args and any(isinstance(a, ObjectRef) for a in args):
            args = tuple(a._id if isinstance(a, ObjectRef) else a for a in args)
        if kwargs and any(isinstance(v, ObjectRef) for v in kwargs.values()):
            kwargs = {k: v._id if isinstance(v, ObjectRef) else v for k, v in kwargs.items()}
        return args, kwargs

    # -- tasks -----------------------------------------------------------------------------------
    def submit_task(
        self, fn: RemoteFunction, args: tuple[Any, ...], kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> Any:
        self._check_open()
        remote = self._variants.get(fn)
        if remote is None:
            explicit = getattr(fn, "_explicit", options)
            if not uses_placement(explicit):
                error = self._infeasible(resource_request(options), f"task {fn._name}")
                if error is not None:
                    return self._failed(error, options["num_returns"])
            remote = self._task_variant(fn, options)
        args, kwargs = self._unwrap_args(args, kwargs)
        try:
            result = remote.remote(*args, **kwargs)
        except TypeError as exc:
            raise self._argument_error(fn._name, args, kwargs, exc) from exc
        except RuntimeError as exc:
            raise client_limit(exc) from exc
        return self._wrap(result)

    def _task_variant(self, fn: RemoteFunction, options: dict[str, Any]) -> Any:
        explicit = getattr(fn, "_explicit", options)
        num_returns = options["num_returns"]
        if num_returns == "dynamic":  # one result, collected in the worker (see collecting)
            key = f"{fn.function_id}:dynamic"
            base = self._functions.get(key)
            if base is None:
                base = self._functions[key] = self._ray.remote(collecting(fn._function))
            num_returns = 1
        else:
            base = self._functions.get(fn.function_id)
            if base is None:
                base = self._functions[fn.function_id] = self._ray.remote(
                    runnable(fn._function))
        ray_options = ray_task_options(explicit, num_returns)
        remote = base.options(**ray_options) if ray_options else base
        self._variants[fn] = remote
        return remote

    def _argument_error(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                        exc: TypeError) -> Exception:
        """A ``SerializationError`` naming the argument Ray could not pickle, else ``exc``."""
        if "serializ" not in str(exc):
            return exc
        from ray import cloudpickle

        labelled = [(f"argument {i}", v) for i, v in enumerate(args)]
        labelled += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
        for label, value in labelled:
            if isinstance(value, self._ray_ref_type):
                continue
            try:
                cloudpickle.dumps(value)
            except Exception as inner:
                return SerializationError(
                    f"{label} of {name}() could not be pickled: {inner}. Pass picklable "
                    "values, or create the object inside the task/actor."
                )
        return SerializationError(f"the arguments of {name}() could not be pickled: {exc}")

    def _infeasible(self, request: dict[str, float], what: str) -> ResourceError | None:
        """The error of a request that no node can ever hold (None when one can), logged as
        a warning the first time (as Ray logs its own); the caller returns references that
        raise it. With ``reject_infeasible=False`` such requests wait for nodes instead."""
        if not self._reject_infeasible or not request:
            return None
        nodes = self._nodes
        if nodes is not None and infeasible_reason(request, nodes) is None:
            return None
        nodes = self._nodes = self._alive_nodes()  # new nodes may have joined: look again
        reason = infeasible_reason(request, nodes)
        if reason is None:
            return None
        error = ResourceError(
            f"{what} can never run: {reason}. Ask for less, or add a node that has it "
            "(`ray start --address=<head> --num-cpus/--num-gpus/--resources=...`)"
        )
        key = (what, tuple(sorted(request.items())))
        if key not in self._warned_infeasible:
            self._warned_infeasible.add(key)
            logger.warning("ember: %s; ember.get of its result raises ResourceError", error)
        return error

    def _failed(self, error: BaseException, num_returns: Any) -> Any:
        """References, shaped as ``num_returns`` asks, that raise ``error`` at once: they come
        from a task that needs no resources and raises it."""
        if self._raise is None:
            self._raise = self._ray.remote(num_cpus=0, max_retries=0)(raise_error)
            self._raise_streaming = self._ray.remote(
                num_cpus=0, max_retries=0, num_returns="streaming")(raise_error_streaming)
        if is_streaming(num_returns):
            return self._wrap(self._raise_streaming.remote(error))
        if num_returns in (1, "dynamic"):
            return self._wrap(self._raise.remote(error))
        return self._wrap(self._raise.options(num_returns=num_returns).remote(error))

    def _alive_nodes(self) -> list[dict[str, float]]:
        return [dict(node.get("Resources", {})) for node in self._ray.nodes()
                if node.get("Alive", node.get("alive", False))]

    # -- actors ------------------------------------------------------------------------------------
    def create_actor(
        self, cls: ActorClass, args: tuple[Any, ...], kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> ActorHandle:
        self._check_open()
        meta = cls.meta
        explicit = getattr(cls, "_explicit", options)
        if not uses_placement(explicit):
            error = self._infeasible(resource_request(options), f"actor {meta.class_name}")
            if error is not None:  # its calls raise the error at once
                return ActorHandle(Unplaceable(error), meta, self)
        ray_class = self._classes.get(cls.class_id)
        if ray_class is None:
            ray_class = self._classes[cls.class_id] = self._ray.remote(
                actor_runnable(cls._cls))
        ray_options = ray_actor_options(explicit)
        if ray_options:
            ray_class = ray_class.options(**ray_options)
        args, kwargs = self._unwrap_args(args, kwargs)
        try:
            ray_handle = ray_class.remote(*args, **kwargs)
        except self._rx.RayError as exc:  # ActorAlreadyExistsError (also a ValueError)
            raise translate_error(exc) from exc
        except TypeError as exc:
            raise self._argument_error(f"{meta.class_name}.__init__", args, kwargs,
                                       exc) from exc
        if explicit.get("name"):
            self._remember_named(ray_handle, meta)
        return ActorHandle(ray_handle, meta, self)

    def _remember_named(self, ray_handle: Any, meta: ActorMeta) -> None:
        # Named actors stay alive until killed, as on the local backend (Ray alone would end
        # them with their last handle), and their metadata is kept in Ray's KV store so that
        # get_actor() in any process of the cluster rebuilds the same handle.
        key = ray_handle._actor_id.hex()
        with self._lock:
            self._named[key] = ray_handle
            self._metas[key] = meta
        try:
            from ray.experimental.internal_kv import _internal_kv_put

            _internal_kv_put(f"actor-meta:{key}", pickle.dumps(meta), namespace=_KV_NAMESPACE)
        except Exception:  # best effort: get_actor() falls back to what the Ray handle knows
            logger.debug("could not record the metadata of actor %s", key, exc_info=True)

    def _meta_of(self, ray_handle: Any) -> ActorMeta:
        key = ray_handle._actor_id.hex()
        meta = self._metas.get(key)
        if meta is not None:
            return meta
        try:
            from ray.experimental.internal_kv import _internal_kv_get

            data = _internal_kv_get(f"actor-meta:{key}", namespace=_KV_NAMESPACE)
            if data:
                meta = pickle.loads(data)
        except Exception:  # best effort, as above
            logger.debug("could not read the metadata of actor %s", key, exc_info=True)
        if meta is None:
            meta = meta_from_ray_handle(ray_handle)
        self._metas[key] = meta
        return meta

    def submit_actor_task(
        self, handle: ActorHandle, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
        num_returns: Any,
    ) -> Any:
        self._check_open()
        if isinstance(handle._actor_id, Unplaceable):
            return self._failed(handle._actor_id.error, num_returns)
        bound = getattr(handle._actor_id, method)
        declared = handle._meta.methods.get(method)
        if num_returns == "dynamic" and declared is not None and declared.num_returns == num_returns:
            num_returns = 1  # the method collects its items itself (see actor_runnable)
        if num_returns != 1:
            if is_streaming(num_returns):
                bound = bound.options(num_returns="streaming",
                                      _generator_backpressure_num_objects=GENERATOR_BACKPRESSURE)
            else:
                bound = bound.options(num_returns=num_returns)
        args, kwargs = self._unwrap_args(args, kwargs)
        try:
            result = bound.remote(*args, **kwargs)
        except TypeError as exc:
            raise self._argument_error(f"{handle._meta.class_name}.{method}", args, kwargs,
                                       exc) from exc
        except RuntimeError as exc:
            raise client_limit(exc) from exc
        return self._wrap(result)

    def kill(self, handle: ActorHandle, no_restart: bool) -> None:
        self._check_open()
        ray_handle = handle._actor_id
        if isinstance(ray_handle, Unplaceable):
            return
        key = ray_handle._actor_id.hex()
        before = _actor_info(key)
        self._ray.kill(ray_handle, no_restart=no_restart)
        if no_restart:
            with self._lock:
                self._named.pop(key, None)
                self._metas.pop(key, None)
        if before is not None:
            _await_kill(key, before)

    def get_actor(self, name: str, namespace: str | None) -> ActorHandle:
        self._check_open()
        try:
            ray_handle = self._ray.get_actor(name, namespace=namespace)
        except ValueError as exc:
            where = namespace if namespace is not None else self._namespace()
            raise ValueError(
                f"no live actor named {name!r} in namespace {where!r}; create it with "
                f".options(name={name!r}) first, or pass the namespace it was created in"
            ) from exc
        return ActorHandle(ray_handle, self._meta_of(ray_handle), self)

    def named_actors(self) -> list[tuple[str, str]]:
        """``(namespace, name)`` of the cluster's named actors, less ember's own bookkeeping
        actors (namespaces starting ``_ember``)."""
        self._check_open()
        from ray.util import list_named_actors

        return sorted((entry["namespace"], entry["name"])
                      for entry in list_named_actors(all_namespaces=True)
                      if not entry["namespace"].startswith("_ember"))

    # -- nodes ---------------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        """The alive nodes, with what each has in all and free now (see ``ember.nodes``)."""
        self._check_open()
        try:
            from ray._private import state

            free_by_node = state.available_resources_per_node()
        except Exception:  # the Ray client cannot ask; report the totals
            free_by_node = None
        out = []
        for node in self._ray.nodes():
            if not node.get("Alive", node.get("alive", False)):
                continue
            total = {k: float(v) for k, v in node.get("Resources", {}).items()
                     if not _is_group_resource(k)}
            free = total if free_by_node is None else free_by_node.get(node["NodeID"], {})
            out.append({
                "NodeID": node["NodeID"],
                "Alive": True,
                "NodeManagerAddress": node.get("NodeManagerAddress", ""),
                "IsHead": "node:__internal_head__" in total,
                "Resources": total,
                "AvailableResources": {k: float(free.get(k, 0.0)) for k in total},
            })
        return out

    # -- objects and control ---------------------------------------------------------------------
    def get(self, refs: Sequence[ObjectRef], timeout: float | None) -> list[Any]:
        self._check_open()
        try:
            values: list[Any] = self._ray.get([r._id for r in refs], timeout=timeout)
        except self._rx.RayError as exc:
            error = translate_error(exc, timeout=timeout)
            if isinstance(error, TaskError):
                raise error from None  # its message already carries the remote traceback
            raise error from exc
        dynamic = self._ray.DynamicObjectRefGenerator
        return [DynamicObjectRefGenerator(ObjectRef(r, self, add_ref=False) for r in value)
                if isinstance(value, dynamic) else value for value in values]

    def put(self, value: Any) -> ObjectRef:
        self._check_open()
        try:
            return ObjectRef(self._ray.put(value), self, add_ref=False)
        except TypeError as exc:
            if "serializ" not in str(exc):
                raise
            raise SerializationError(
                f"could not serialize a value of type {type(value).__qualname__}: {exc}"
            ) from exc

    def wait(
        self, refs: Sequence[ObjectRef | ObjectRefGenerator], num_returns: int,
        timeout: float | None, fetch_local: bool,
    ) -> tuple[list[Any], list[Any]]:
        self._check_open()
        if num_returns == 0:
            return [], list(refs)
        ids = [r._id for r in refs]
        ready, _ = self._ray.wait(ids, num_returns=num_returns, timeout=timeout,
                                  fetch_local=fetch_local)
        if len(ready) == num_returns and num_returns < len(ids):
            # Ray picks any num_returns of the ready ones; ember promises the first ones in
            # the order given, so look at everything that is ready now.
            ready, _ = self._ray.wait(ids, num_returns=len(ids), timeout=0,
                                      fetch_local=fetch_local)
        done = set(ready)
        first: list[Any] = []
        rest: list[Any] = []
        for ref in refs:
            (first if ref._id in done and len(first) < num_returns else rest).append(ref)
        return first, rest

    def cancel(self, ref: ObjectRef | ObjectRefGenerator, force: bool, recursive: bool) -> None:
        self._check_open()
        try:
            self._ray.cancel(ref._id, force=force, recursive=recursive)
        except ValueError:
            if not force:
                raise
            # Ray refuses force=True for actor calls; like the local backend, cancel the call
            # without killing the actor's process.
            force = False
            self._ray.cancel(ref._id, force=False, recursive=recursive)
        if isinstance(ref._id, self._ray_ref_type):  # Ray may lose it: see _recancel
            self._recancel.watch(ref._id, force, recursive)

    def cluster_resources(self) -> dict[str, float]:
        self._check_open()
        return dict(self._ray.cluster_resources())

    def available_resources(self) -> dict[str, float]:
        self._check_open()
        # Ray leaves out what is fully taken; ember reports it as 0.
        available = {k: 0.0 for k in self._ray.cluster_resources()}
        available.update(self._ray.available_resources())
        return available

    def node_ip_address(self) -> str:
        from ray.util import get_node_ip_address

        return str(get_node_ip_address())

    def timeline_events(self) -> list[dict[str, Any]]:
        self._check_open()
        return list(self._ray.timeline() or [])

    def _namespace(self) -> str:
        return str(self._ray.get_runtime_context().namespace)

    def runtime_context(self) -> RuntimeContext:
        self._check_open()
        ctx = self._ray.get_runtime_context()
        common = {
            "backend": "ray", "job_id": ctx.get_job_id(), "node_id": ctx.get_node_id(),
            "namespace": ctx.namespace, "worker_id": ctx.get_worker_id(),
        }
        if not self._in_worker:
            return RuntimeContext(**common)
        actor_id = ctx.get_actor_id()
        accelerators = {k: [str(i) for i in v]
                        for k, v in ctx.get_accelerator_ids().items() if v or k == "GPU"}
        return RuntimeContext(
            **common, task_id=ctx.get_task_id(), actor_id=actor_id,
            actor_name=ctx.get_actor_name() if actor_id else None,
            accelerator_ids=accelerators,
            assigned_resources=dict(ctx.get_assigned_resources()),
            was_current_actor_reconstructed=_reconstructed(ctx) if actor_id else False,
            task_name=ctx.get_task_name(),
            _is_canceled=ctx.is_canceled,
            _current_actor=None if actor_id is None else (
                lambda: ActorHandle(ctx.current_actor, self._meta_of(ctx.current_actor), self)),
        )


def _is_group_resource(name: str) -> bool:
    # Ray names the resources of a placement group's bundles CPU_group_<id>, CPU_group_0_<id>...
    return "_group_" in name


def _note_ignored(sizes: dict[str, Any], why: str) -> None:
    if sizes:
        logger.warning(
            "%s: ignoring %s, which only size a new Ray instance; the cluster's nodes have what "
            "`ray start` gave them", why, ", ".join(f"{k}={v!r}" for k, v in sorted(sizes.items())))


def _reconstructed(ctx: Any) -> bool:
    with warnings.catch_warnings():  # Ray's property uses its own deprecated API inside
        warnings.simplefilter("ignore")
        return bool(ctx.was_current_actor_reconstructed)


def _actor_info(key: str) -> dict[str, Any] | None:
    """What Ray's control store says about an actor (None where it cannot be asked)."""
    try:
        from ray._private import state

        info = state.actors(actor_id=key)
    except Exception:  # the Ray client, or a Ray without this developer API
        return None
    return info or None


def _await_kill(key: str, before: dict[str, Any], timeout: float = 10.0) -> None:
    """Return once Ray has acted on ``ray.kill``: the actor is dead, restarting or restarted.

    ``ray.kill`` only sends the request; without this, a call made right after
    ``ember.kill(actor, no_restart=False)`` could still be served by the old instance.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _actor_info(key)
        if (info is None or info.get("State") != "ALIVE"
                or info.get("NumRestarts") != before.get("NumRestarts")):
            return
        time.sleep(0.01)
    logger.warning("actor %s still looked alive %s s after ray.kill", key, timeout)
