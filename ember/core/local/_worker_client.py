"""The core API as seen from inside a worker: every call becomes a message to the driver."""

# WorkerRuntime is one class split by concern into this mixin and its process loop; methods
# declare `self: WorkerRuntime` so that mypy checks them against the whole class. mypy reports
# such self types on a mixin under "misc", which is therefore off for this module only.
# mypy: disable-error-code="misc"

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ember.core import _runtime_env, _shm
from ember.core import _serialization as ser
from ember.core._context import RuntimeContext
from ember.core._placement import group_of
from ember.core._refs import ObjectRef, ObjectRefGenerator
from ember.core._remote import ActorClass, ActorHandle, RemoteFunction, method_meta
from ember.core._settings import LOCAL_NODE_IP
from ember.core.local._protocol import Dep, RemoteFailure
from ember.core.local._resources import local_request, node_record
from ember.errors import EmberError, SerializationError

if TYPE_CHECKING:
    from ember.core.local._worker import WorkerRuntime


# The name of the task or actor call running in this thread or asyncio task, as Ray's
# get_task_name() reports it.
TASK_NAME: ContextVar[str | None] = ContextVar("ember_task_name", default=None)


class _Slot:
    __slots__ = ("callback", "done", "payload")

    def __init__(self, callback: Callable[[Any], None] | None = None) -> None:
        self.done = False
        self.payload: Any = None
        self.callback = callback





def _returns(rt: WorkerRuntime, return_ids: list[int], gen_id: int | None, num_returns: Any) -> Any:
    with rt._counts_lock:
        for oid in [*return_ids, *([gen_id] if gen_id is not None else [])]:
            rt._counts[oid] = rt._counts.get(oid, 0) + 1
    if gen_id is not None:
        gen = ObjectRefGenerator.__new__(ObjectRefGenerator)
        gen._id, gen._rt, gen._index, gen._done = gen_id, rt, 0, False
        return gen
    refs = [ObjectRef(oid, rt, add_ref=False) for oid in return_ids]
    if num_returns in (1, "dynamic"):
        return refs[0]
    return refs or None



def _actor_settings(options: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "namespace", "lifetime", "max_restarts", "max_task_retries",
            "max_concurrency", "get_if_exists", "runtime_env")
    settings = {k: options.get(k) for k in keys}
    settings["placement_group"] = group_of(options)
    return settings



def serialize_args(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any], names: _shm.SegmentNames | None,
    threshold: int,
) -> tuple[ser.Stored, list[int]]:
    """Serialize call arguments; top-level ``ObjectRef``s become ``Dep`` placeholders."""
    deps: list[int] = []

    def swap(value: Any) -> Any:
        if isinstance(value, ObjectRef):
            deps.append(value._id)
            return Dep(len(deps) - 1)
        return value

    if args:
        args = tuple(swap(a) for a in args)
    if kwargs:
        kwargs = {k: swap(v) for k, v in kwargs.items()}
    try:
        return ser.dumps((args, kwargs), names, threshold), deps
    except SerializationError as exc:
        labelled = [(f"argument {i}", v) for i, v in enumerate(args)]
        labelled += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
        for label, value in labelled:
            try:
                ser.dumps(value, None, 0)
            except SerializationError as inner:
                raise SerializationError(
                    f"{label} of {name}() could not be pickled: {inner.__cause__ or inner}. "
                    "Pass picklable values, or create the object inside the task/actor."
                ) from inner
        raise exc



class ClientMixin:
    def make_ref(self: WorkerRuntime, object_id: int) -> ObjectRef:
        return ObjectRef(object_id, self)

    def _adopt(self: WorkerRuntime, object_id: int) -> ObjectRef:
        """A reference the driver already counted for this worker."""
        with self._counts_lock:
            count = self._counts.get(object_id, 0)
            self._counts[object_id] = count + 1
            if count:
                self._deltas.append((object_id, -1))
        return ObjectRef(object_id, self, add_ref=False)

    def add_local_ref(self: WorkerRuntime, object_id: int) -> None:
        with self._counts_lock:
            count = self._counts.get(object_id, 0)
            self._counts[object_id] = count + 1
            if not count:
                self._deltas.append((object_id, 1))

    def remove_local_ref(self: WorkerRuntime, object_id: int) -> None:
        with self._counts_lock:
            count = self._counts.get(object_id, 0) - 1
            if count <= 0:
                self._counts.pop(object_id, None)
                self._deltas.append((object_id, -1))
            else:
                self._counts[object_id] = count


    def add_actor_ref(self: WorkerRuntime, actor_id: int) -> None:
        pass  # handles held inside workers pin their actor (see on_actor_handle_pickled)

    def remove_actor_ref(self: WorkerRuntime, actor_id: int) -> None:
        pass

    def on_actor_handle_pickled(self: WorkerRuntime, actor_id: int) -> None:
        pass

    def on_ready(self: WorkerRuntime, ref: ObjectRef, callback: Callable[[Any], None]) -> None:
        if self._inline:
            try:
                self.get([ref], None)
            finally:
                callback(ref)
            return

        def arrived(payload: Any) -> None:
            if not isinstance(payload, RemoteFailure):
                self._prefetched[ref._id] = payload[0]
            callback(ref)

        rid = next(self._ids)
        with self._cond:
            self._slots[rid] = _Slot(arrived)
        self._send([("request", rid, "get", ([ref._id], None))])

    def generator_next(self: WorkerRuntime, generator_id: int, index: int, timeout: float | None) -> Any:
        oid = self._request("generator_next", (generator_id, index, timeout))
        return None if oid is None else self._adopt(oid)

    def generator_next_async(
        self: WorkerRuntime, generator_id: int, index: int,
        deliver: Callable[[ObjectRef | None, BaseException | None], None],
    ) -> None:
        if self._inline:
            try:
                deliver(self.generator_next(generator_id, index, None), None)
            except BaseException as exc:
                deliver(None, exc)
            return

        def arrived(payload: Any) -> None:
            if isinstance(payload, RemoteFailure):
                deliver(None, payload.error)
            else:
                deliver(None if payload is None else self._adopt(payload), None)

        rid = next(self._ids)
        with self._cond:
            self._slots[rid] = _Slot(arrived)
        self._send([("request", rid, "generator_next", (generator_id, index, None))])

    def _child_env(self: WorkerRuntime, options: dict[str, Any], what: str
                   ) -> dict[str, Any] | None:
        """The runtime_env of a task or actor made here: its own over the one it runs in."""
        merged = _runtime_env.merge(self._current_env(), options.get("runtime_env"))
        return _runtime_env.for_local(merged, what)

    def _serialize_args(
        self: WorkerRuntime, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[ser.Stored, list[int]]:
        return serialize_args(name, args, kwargs, self._names, self._cfg.threshold)

    def _code_once(self: WorkerRuntime, key: str, code: Callable[[], bytes]) -> bytes | None:
        if key in self._code_known_by_driver:
            return None
        self._code_known_by_driver.add(key)
        return code()

    def submit_task(
        self: WorkerRuntime, fn: RemoteFunction, args: tuple[Any, ...], kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> Any:
        request = local_request(options)
        env = self._child_env(options, f"task {fn._name}")
        stored, deps = self._serialize_args(fn._name, args, kwargs)
        num_returns = options["num_returns"]
        return_ids, gen_id = self._return_ids(num_returns)
        task_id = self._new_id()
        spec = (task_id, fn.function_id, self._code_once(fn.function_id, fn.pickled), stored,
                deps, return_ids, gen_id, request, options["max_retries"],
                options["retry_exceptions"], fn._name, self._parent(), num_returns == "dynamic",
                env, group_of(options))
        self._send([("submit", spec)])
        return _returns(self, return_ids, gen_id, num_returns)

    def _return_ids(self: WorkerRuntime, num_returns: Any) -> tuple[list[int], int | None]:
        """Ids of the results of a submission, and of its stream if it streams."""
        if num_returns == "streaming":
            return [], self._new_id()
        count = 1 if num_returns == "dynamic" else num_returns
        return [self._new_id() for _ in range(count)], None

    def _parent(self: WorkerRuntime) -> int | None:
        return getattr(self._local, "task_id", None)

    def create_actor(
        self: WorkerRuntime, cls: ActorClass, args: tuple[Any, ...], kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> ActorHandle:
        request = local_request(options)
        settings = _actor_settings(options)
        settings["runtime_env"] = self._child_env(options, f"actor {cls.meta.class_name}")
        stored, deps = self._serialize_args(cls.meta.class_name, args, kwargs)
        actor_id = self._new_id()
        spec = (actor_id, cls.class_id, cls.pickled(), stored, deps, request, settings,
                cls.meta)
        existing = self._request("create_actor", spec)
        if existing is not None:
            actor_id = existing
        return ActorHandle(actor_id, cls.meta, self)

    def submit_actor_task(
        self: WorkerRuntime, handle: ActorHandle, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
        num_returns: Any,
    ) -> Any:
        stored, deps = self._serialize_args(method, args, kwargs)
        return_ids, gen_id = self._return_ids(num_returns)
        call_id = self._new_id()
        self._send([("call", (handle._actor_id, call_id, method, stored, deps, return_ids,
                              gen_id, num_returns == "dynamic"))])
        return _returns(self, return_ids, gen_id, num_returns)

    def get(self: WorkerRuntime, refs: Sequence[ObjectRef], timeout: float | None) -> list[Any]:
        ids = [r._id for r in refs]
        found: list[tuple[Any, bool] | None] = [self._prefetched.pop(i, None) for i in ids]
        missing = [i for i, f in zip(ids, found, strict=True) if f is None]
        if missing:
            fetched = iter(self._request("get", (missing, timeout)))
            found = [f if f is not None else next(fetched) for f in found]
        values = []
        for entry in found:
            assert entry is not None
            stored, is_error = entry
            value = ser.loads(stored, self._names)
            if is_error:
                raise value
            values.append(value)
        return values

    def put(self: WorkerRuntime, value: Any) -> ObjectRef:
        stored = ser.dumps(value, self._names, self._cfg.threshold)
        oid = self._new_id()
        with self._counts_lock:
            self._counts[oid] = self._counts.get(oid, 0) + 1
        self._send([("put", oid, stored)])
        return ObjectRef(oid, self, add_ref=False)

    def put_error(self: WorkerRuntime, error: ser.Stored) -> ObjectRef:
        """An object that holds a serialized error: ``get`` of it raises the error."""
        oid = self._new_id()
        with self._counts_lock:
            self._counts[oid] = self._counts.get(oid, 0) + 1
        self._send([("put", oid, error, True)])
        return ObjectRef(oid, self, add_ref=False)

    def wait(
        self: WorkerRuntime, refs: Sequence[ObjectRef | ObjectRefGenerator], num_returns: int,
        timeout: float | None, fetch_local: bool,
    ) -> tuple[list[Any], list[Any]]:
        entries = [(r._id, r._index) if isinstance(r, ObjectRefGenerator) else r._id
                   for r in refs]
        positions = set(self._request("wait", (entries, num_returns, timeout)))
        ready = [r for i, r in enumerate(refs) if i in positions]
        return ready, [r for i, r in enumerate(refs) if i not in positions]

    def kill(self: WorkerRuntime, handle: ActorHandle, no_restart: bool) -> None:
        self._request("kill", (handle._actor_id, no_restart))

    def cancel(self: WorkerRuntime, ref: ObjectRef | ObjectRefGenerator, force: bool,
               recursive: bool) -> None:
        self._request("cancel", (ref._id, force, recursive))

    def get_actor(self: WorkerRuntime, name: str, namespace: str | None) -> ActorHandle:
        actor_id, meta = self._request("get_actor", (name, namespace))
        return ActorHandle(actor_id, meta, self)

    def named_actors(self: WorkerRuntime) -> list[tuple[str, str]]:
        return [(namespace, name) for namespace, name in self._request("named_actors", None)]

    def cluster_resources(self: WorkerRuntime) -> dict[str, float]:
        return dict(self._request("resources", "total"))

    # -- placement groups: the driver keeps them ------------------------------------------------
    def create_placement_group(self: WorkerRuntime, bundles: list[dict[str, float]],
                               strategy: str, name: str, lifetime: str | None) -> Any:
        return self._request("placement_group", ("create", bundles, strategy, name))

    def remove_placement_group(self: WorkerRuntime, group: Any) -> None:
        self._request("placement_group", ("remove", group.id))

    def get_placement_group(self: WorkerRuntime, name: str) -> Any:
        return self._request("placement_group", ("named", name))

    def placement_group_table(self: WorkerRuntime, group: Any) -> dict[str, Any]:
        return dict(self._request("placement_group",
                                  ("table", None if group is None else group.id)))

    def current_placement_group(self: WorkerRuntime) -> Any:
        return self._request("placement_group", ("current", getattr(self._local, "task_id", None)))

    def available_resources(self: WorkerRuntime) -> dict[str, float]:
        return dict(self._request("resources", "available"))

    def state(self: WorkerRuntime, kind: str, filters: Any = None, limit: int | None = None,
              detail: bool = False) -> Any:
        """observe: ``ember.util.state`` inside a worker asks the driver."""
        return self._request("state", (kind, filters, limit, detail))

    def runtime_context(self: WorkerRuntime) -> RuntimeContext:
        task_id = getattr(self._local, "task_id", None)
        return RuntimeContext(
            backend="local", job_id=self._cfg.job_id, node_id="local",
            namespace=self._cfg.namespace, worker_id=f"{self._cfg.uid}",
            task_id=None if task_id is None else f"{task_id:016x}",
            actor_id=None if self._actor_id is None else f"{self._actor_id:016x}",
            actor_name=None if self._actor_id is None else self._actor_name,
            accelerator_ids={"GPU": list(self._gpu_ids)},
            was_current_actor_reconstructed=self._actor_restarted,
            task_name=TASK_NAME.get(),
            _is_canceled=self.is_canceled,
            _assigned=lambda: self._request("assigned", task_id),
            _current_actor=None if self._actor_id is None else self._handle_to_self,
        )

    def _handle_to_self(self: WorkerRuntime) -> ActorHandle:
        return ActorHandle(self._actor_id, method_meta(type(self._instance)), self)

    def nodes(self: WorkerRuntime) -> list[dict[str, Any]]:
        return [node_record("local", self._request("resources", "total"),
                            self._request("resources", "available"))]

    def node_ip_address(self: WorkerRuntime) -> str:
        return LOCAL_NODE_IP

    def timeline_events(self: WorkerRuntime) -> list[dict[str, Any]]:
        return []

    def shutdown(self: WorkerRuntime) -> None:
        raise EmberError("ember.shutdown() is for the driver; a worker cannot shut down the runtime")

    def add_generator_ref(self: WorkerRuntime, generator_id: int) -> None:
        self.add_local_ref(generator_id)

    def remove_generator_ref(self: WorkerRuntime, generator_id: int) -> None:
        self.remove_local_ref(generator_id)
