"""``DeploymentHandle``: call a deployment from Python; and the routing plumbing behind it.

Each process keeps one ``_RouterClient`` per deployment it calls. The client long-polls the
controller for the live replicas and the models they report, feeds the pure ``Router`` the
events it sees (sent, done, replica died) and sends each request to the replica it picks. Calls
that find every replica full wait in a queue and go out as slots free up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import ember
from ember.errors import ActorDiedError, EmberError
from ember.serve._multiplex import model_id_problem
from ember.serve._router import Router
from ember.serve.context import _get_serve_request_context, new_request_id

CONTROLLER_NAME = "SERVE_CONTROLLER_ACTOR"  # Ray's names: programs that look it up find it
CONTROLLER_NAMESPACE = "serve"

Assigned = Callable[[str, Any], None]


async def await_future(future: concurrent.futures.Future[Any]) -> Any:
    """Await a thread-side future without ever cancelling it.

    ``asyncio.wrap_future`` cancels the underlying future when the awaiting task is cancelled
    (a client that went away, a timeout). Completing a cancelled ``ObjectRef.future()`` then
    raises in the core's reader thread and ends the whole worker process (see the report), and
    our own futures would refuse their result. This relay only ever settles an asyncio future.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[Any] = loop.create_future()

    def relay(done: concurrent.futures.Future[Any]) -> None:
        if done.cancelled():
            return

        def settle() -> None:
            if waiter.done():
                return
            exc = done.exception()
            if exc is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_result(done.result())

        try:
            loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop closed meanwhile: nobody waits any more
            pass

    future.add_done_callback(relay)
    return await waiter


async def await_ref(ref: Any) -> Any:
    """``await ref``, safe to cancel (see ``await_future``)."""
    return await await_future(ref.future())


class DeploymentUnavailableError(EmberError, RuntimeError):
    """The deployment was deleted, or serve shut down, while a call waited for a replica."""


class BackPressureError(EmberError, RuntimeError):
    """Every replica is busy and this caller already queues ``max_queued_requests`` calls."""


class _RouterClient:
    def __init__(self, app_name: str, deployment_name: str) -> None:
        self.app_name = app_name
        self.deployment_name = deployment_name
        try:
            self._controller = ember.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)
        except ValueError:
            raise DeploymentUnavailableError(
                f"cannot call deployment {deployment_name!r}: serve is not running; "
                "deploy it with serve.run(...) first"
            ) from None
        self._lock = threading.Lock()
        self._router: Router | None = None
        self._replicas: dict[str, Any] = {}
        self._waiting: deque[tuple[str, Assigned, Callable[[BaseException], None]]] = deque()
        self._version = -1
        self.max_queued_requests = -1
        self._first_info = threading.Event()
        self._client_id = os.urandom(6).hex()
        self._reported_queue = 0
        self._report_seq = 0
        self.dead: BaseException | None = None
        self._poll()

    # -- long poll of the controller -------------------------------------------------------

    def _poll(self) -> None:
        ref = self._controller.routing_info.remote(
            self.app_name, self.deployment_name, self._version
        )
        ref.future().add_done_callback(self._on_info)

    def _on_info(self, future: concurrent.futures.Future[Any]) -> None:
        if self.dead is not None:  # replaced by a fresh client: stop polling
            return
        try:
            info = future.result()
        except BaseException as exc:
            self._fail_all(DeploymentUnavailableError(
                f"lost the serve controller while routing to {self.deployment_name!r}: {exc}"
            ))
            return
        if info is None:
            self._fail_all(DeploymentUnavailableError(
                f"deployment {self.deployment_name!r} of application {self.app_name!r} "
                "no longer exists"
            ))
            return
        self._apply(info)
        self._poll()

    def _apply(self, info: dict[str, Any]) -> None:
        with self._lock:
            if info["version"] < self._version:  # an answer overtaken by a newer one
                return
            if self._router is None:
                cap = info["max_ongoing_requests"]
                # A replica holding a hot model takes its requests until it is full; then
                # the model spreads to another replica rather than pinning to this one.
                # (Spilling earlier, at half, measured 60% more model loads on the serve
                # benchmark: requests waiting for a model's load count as ongoing, so a
                # spill then only starts a second load of the same model.)
                self._router = Router(cap)
            self._version = info["version"]
            self.max_queued_requests = info.get("max_queued_requests", -1)
            self._replicas = dict(info["replicas"])
            self._router.set_replicas(self._replicas)
            self._router.report_slots(info.get("model_slots", {}))
            self._router.report_models(info["models"], time.monotonic())
        self._first_info.set()
        self._drain()

    def refresh(self, timeout_s: float) -> None:
        """Take the controller's routing now, without waiting for the long poll's news: after
        a redeploy, this process's next call goes to the new version."""
        if self.dead is not None:
            return
        info = ember.get(self._controller.routing_info.remote(
            self.app_name, self.deployment_name, -1), timeout=timeout_s)
        if info is not None:  # gone: the long poll says so
            self._apply(info)

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            self.dead = exc
            waiting, self._waiting = list(self._waiting), deque()
        self._first_info.set()
        for _, _, fail in waiting:
            fail(exc)

    # -- routing -------------------------------------------------------------------------------

    def try_assign(self, model_id: str) -> tuple[str, Any] | None:
        """A replica with a free slot (counted as busy from now on), or ``None``."""
        with self._lock:
            if self._router is None:
                return None
            now = time.monotonic()
            replica_id = self._router.choose(now, model_id or None)
            if replica_id is None:
                return None
            self._router.on_sent(replica_id, now, model_id or None)
            return str(replica_id), self._replicas[str(replica_id)]

    def wait_for_replicas(self, timeout: float) -> None:
        self._first_info.wait(timeout)

    def submit(self, model_id: str, assigned: Assigned,
               fail: Callable[[BaseException], None]) -> None:
        """Call ``assigned(replica_id, actor)`` now, or when a slot frees up."""
        if self.dead is not None:
            fail(self.dead)
            return
        refused: BaseException | None = None
        with self._lock:
            queue_first = bool(self._waiting) or self._router is None
            if queue_first:
                refused = self._enqueue(model_id, assigned, fail)
        if queue_first:
            if refused is not None:
                fail(refused)
            self._report_queue()
            return
        choice = self.try_assign(model_id)
        if choice is None:
            with self._lock:
                refused = self._enqueue(model_id, assigned, fail)
            if refused is not None:
                fail(refused)
                return
            self._drain()  # a slot may have freed meanwhile
            self._report_queue()
            return
        assigned(*choice)

    def _enqueue(self, model_id: str, assigned: Assigned,
                 fail: Callable[[BaseException], None]) -> BaseException | None:
        """Queue a call (lock held), or past ``max_queued_requests`` say why not."""
        limit = self.max_queued_requests
        if self._router is not None and 0 <= limit <= len(self._waiting):
            return BackPressureError(
                f"every replica of {self.deployment_name!r} is busy and {limit} calls "
                f"already wait here (max_queued_requests={limit}); retry later, or raise "
                "max_queued_requests or the number of replicas"
            )
        self._waiting.append((model_id, assigned, fail))
        return None

    @property
    def has_routing_info(self) -> bool:
        return self._first_info.is_set()

    @property
    def has_replicas(self) -> bool:
        return bool(self._replicas)

    def _report_queue(self) -> None:
        """Tell the controller how many calls wait here: the autoscaler counts them as load
        (so a deployment scaled to zero comes back when called)."""
        with self._lock:  # numbered under the lock: the controller keeps the newest
            queued = len(self._waiting)
            if queued == self._reported_queue or self.dead is not None:
                return
            self._reported_queue = queued
            self._report_seq += 1
            seq = self._report_seq
        self._controller.record_queued.remote(
            self.app_name, self.deployment_name, self._client_id, queued, seq
        )

    def _drain(self) -> None:
        try:
            self._drain_waiting()
        finally:
            self._report_queue()

    def _drain_waiting(self) -> None:
        while True:
            with self._lock:
                if not self._waiting or self._router is None:
                    return
                model_id = self._waiting[0][0]
                now = time.monotonic()
                replica_id = self._router.choose(now, model_id or None)
                if replica_id is None:
                    return
                self._router.on_sent(replica_id, now, model_id or None)
                _, assigned, _ = self._waiting.popleft()
                actor = self._replicas[str(replica_id)]
            assigned(str(replica_id), actor)

    def done(self, replica_id: str, error: BaseException | None = None) -> None:
        with self._lock:
            if self._router is not None:
                self._router.on_done(replica_id)
                if isinstance(error, ActorDiedError):
                    self._router.remove_replica(replica_id)
                    self._replicas.pop(replica_id, None)
            if not self._waiting and not self._reported_queue:
                return  # no call waits here, and the controller knows it: nothing to drain
        self._drain()


# (runtime's job id, app, deployment) -> client: a new runtime never reuses an old one's client.
_clients: dict[tuple[str, str, str], _RouterClient] = {}
_clients_lock = threading.Lock()


def router_client(app_name: str, deployment_name: str) -> _RouterClient:
    key = (ember.get_runtime_context().get_job_id(), app_name, deployment_name)
    with _clients_lock:
        client = _clients.get(key)
        if client is None or client.dead is not None:
            client = _clients[key] = _RouterClient(app_name, deployment_name)
        return client


def forget_app(app_name: str) -> None:
    """This process deleted ``app_name``: its handles fail at once, without waiting for news."""
    with _clients_lock:
        gone = [c for key, c in _clients.items() if key[1] == app_name]
    for client in gone:
        client._fail_all(DeploymentUnavailableError(
            f"deployment {client.deployment_name!r} of application {app_name!r} no longer exists"
        ))


def refresh_app(app_name: str, timeout_s: float = 10.0) -> None:
    """This process's routers of ``app_name`` take the controller's routing now."""
    job = ember.get_runtime_context().get_job_id()
    with _clients_lock:
        clients = [c for key, c in _clients.items() if key[:2] == (job, app_name)]
    for client in clients:
        client.refresh(timeout_s)


def forget_clients() -> None:
    with _clients_lock:
        _clients.clear()


class DeploymentHandle:
    """Calls a deployment: ``handle.remote(x)`` or ``handle.method.remote(x)``.

    ``await response`` or ``response.result()`` gives the value. Options:
    ``handle.options(stream=True)`` (iterate the response), ``multiplexed_model_id="m"``,
    ``method_name="..."``. Handles may be passed to other deployments (``.bind`` does that).

    A ``DeploymentResponse`` passed as an argument (``b.remote(a.remote(x))``, Ray's model
    composition) is resolved to its value before the call runs: its result goes from the first
    replica to the second through the object store, not through the caller, and an error of the
    first call is what the second raises. As in Ray this holds for top-level arguments; one
    nested inside a list or dict is refused (await it first).
    """

    def __init__(
        self, deployment_name: str, app_name: str = "default", *, method_name: str = "__call__",
        stream: bool = False, multiplexed_model_id: str = "",
    ) -> None:
        self.deployment_name = deployment_name
        self.app_name = app_name
        self._method_name = method_name
        self._stream = stream
        self._model_id = multiplexed_model_id

    def __repr__(self) -> str:
        return (f"DeploymentHandle(deployment={self.deployment_name!r}, "
                f"app={self.app_name!r}, method={self._method_name!r})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_handle, (self.deployment_name, self.app_name, self._method_name,
                                  self._stream, self._model_id))

    def options(
        self, *, method_name: str | None = None, stream: bool | None = None,
        multiplexed_model_id: str | None = None, use_new_handle_api: bool | None = None,
    ) -> DeploymentHandle:
        """A copy of this handle with call options changed: ``method_name`` (which method
        ``.remote`` calls), ``stream=True`` (calls return a ``DeploymentResponseGenerator``),
        ``multiplexed_model_id`` (routes to a replica holding that model).

        ::

            tokens = handle.options(stream=True).generate.remote("Hello")
            for token in tokens:
                print(token)
            answer = handle.options(multiplexed_model_id="customer-7").remote(text).result()
        """
        if use_new_handle_api is False:
            raise ValueError(
                "use_new_handle_api=False is not supported: ember has only the handle API of "
                "Ray 2.7+ (responses you await or .result()); drop the option"
            )
        if multiplexed_model_id is not None:
            problem = model_id_problem(multiplexed_model_id)
            if problem is not None:
                raise ValueError(f"multiplexed_model_id: {problem}")
        return DeploymentHandle(
            self.deployment_name, self.app_name,
            method_name=self._method_name if method_name is None else method_name,
            stream=self._stream if stream is None else stream,
            multiplexed_model_id=self._model_id if multiplexed_model_id is None
            else multiplexed_model_id,
        )

    def __getattr__(self, name: str) -> DeploymentHandle:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.options(method_name=name)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Send the call; returns a ``DeploymentResponse`` (or a ``DeploymentResponseGenerator``
        with ``stream=True``) at once."""
        client = router_client(self.app_name, self.deployment_name)
        # A call made while serving a request belongs to it: it carries the request's id on.
        request_id = _get_serve_request_context().request_id or new_request_id()
        out: DeploymentResponse | DeploymentResponseGenerator = (
            DeploymentResponseGenerator() if self._stream else DeploymentResponse())
        upstream = [value._future for value in (*args, *kwargs.values())
                    if isinstance(value, DeploymentResponse)]
        if any(isinstance(v, DeploymentResponseGenerator) for v in (*args, *kwargs.values())):
            raise TypeError("a DeploymentResponseGenerator cannot be passed to another handle "
                            "call; iterate it and pass the items")

        def send() -> None:
            # Each response argument becomes a placeholder, and the ObjectRef of its result
            # goes as a top-level argument of the actor call: the core hands the replica its
            # value (or fails the call with its error) without the caller ever fetching it.
            refs: list[Any] = []
            try:
                call_args = tuple(_placeholder(v, refs) for v in args)
                call_kwargs = {k: _placeholder(v, refs) for k, v in kwargs.items()}
            except BaseException as exc:  # the first call never reached a replica
                out._fail(exc)
                return
            self._submit(client, call_args, call_kwargs, request_id, out, refs)

        if upstream:
            _when_all_done(upstream, send)
        else:
            send()
        return out

    def _submit(self, client: _RouterClient, args: tuple[Any, ...], kwargs: dict[str, Any],
                request_id: str, out: DeploymentResponse | DeploymentResponseGenerator,
                refs: list[Any]) -> None:
        method, model_id = self._method_name, self._model_id

        def assigned(replica_id: str, actor: Any) -> None:
            if out._future.cancelled():  # cancelled while it waited for a replica
                client.done(replica_id)
                return
            try:
                if isinstance(out, DeploymentResponseGenerator):
                    stream = actor.handle_request_streaming.remote(
                        method, args, kwargs, model_id, request_id, *refs)
                    out._start(client, replica_id, stream)
                    return
                ref, done = actor.handle_request.options(num_returns=2).remote(
                    method, args, kwargs, model_id, request_id, *refs)
            except BaseException as exc:  # e.g. an argument that cannot be pickled
                client.done(replica_id)
                out._fail(exc)
                return

            def finished(future: concurrent.futures.Future[Any]) -> None:
                client.done(replica_id, future.exception())

            # The second return is None (or the call's error): watching it tells the router
            # the call ended without fetching the result into this process.
            done.future().add_done_callback(finished)
            out._set_ref(ref)

        client.submit(model_id, assigned, out._fail)


class Upstream:
    """Stands for the ``index``-th upstream result among a replica call's extra arguments."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (Upstream, (self.index,))


def _placeholder(value: Any, refs: list[Any]) -> Any:
    if not isinstance(value, DeploymentResponse):
        return value
    refs.append(value._future.result())  # done: raises if the first call found no replica
    return Upstream(len(refs) - 1)


def fill_upstream(args: tuple[Any, ...], kwargs: dict[str, Any], values: tuple[Any, ...]
                  ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``args`` and ``kwargs`` with each ``Upstream`` placeholder replaced by its value."""
    if not values:
        return args, kwargs
    return (tuple(values[a.index] if isinstance(a, Upstream) else a for a in args),
            {k: values[v.index] if isinstance(v, Upstream) else v for k, v in kwargs.items()})


def _when_all_done(futures: list[concurrent.futures.Future[Any]], then: Callable[[], None]
                   ) -> None:
    """Call ``then`` once every future is done (at once if they already are)."""
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Any) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            then()

    for future in futures:
        future.add_done_callback(one_done)


def _rebuild_handle(deployment_name: str, app_name: str, method_name: str, stream: bool,
                    model_id: str) -> DeploymentHandle:
    return DeploymentHandle(deployment_name, app_name, method_name=method_name, stream=stream,
                            multiplexed_model_id=model_id)


class DeploymentResponse:
    """The pending result of ``handle.remote()``: ``await`` it or call ``.result()``.

    Pass it to another handle call to compose deployments (see ``DeploymentHandle``).
    ``ember.get(response)`` (alone or in a list with ``ObjectRef``s, as Ray 2.5 programs wrote
    ``ray.get(handle.remote(x))``) and ``ember.wait`` take it too.
    ``await response._to_object_ref()`` gives the ``ObjectRef`` of its result, to pass to an
    ember task or actor.
    """

    def __init__(self) -> None:
        # The ObjectRef of the result, once a replica took the call.
        self._future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def _set_ref(self, ref: Any) -> None:
        try:
            self._future.set_result(ref)
        except concurrent.futures.InvalidStateError:  # cancelled meanwhile
            ember.cancel(ref)

    def _fail(self, exc: BaseException) -> None:
        try:
            self._future.set_exception(exc)
        except concurrent.futures.InvalidStateError:  # cancelled meanwhile: nobody waits
            pass

    def __reduce__(self) -> Any:
        raise TypeError(
            "a DeploymentResponse can be passed to another handle call only as a top-level "
            "argument (b.remote(a.remote(x)), as in Ray), not inside a list, dict or other "
            "object; await it (or .result()) first and pass the value"
        )

    def result(self, timeout_s: float | None = None, *, _skip_asyncio_check: bool = False
               ) -> Any:
        """The call's value (its exception raised here); ``TimeoutError`` after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        ref = self._to_object_ref_sync(_timeout_s=timeout_s)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return ember.get(ref, timeout=left)

    def __await__(self) -> Any:
        return self._wait().__await__()

    async def _wait(self) -> Any:
        ref = await await_future(self._future)
        return await await_ref(ref)

    async def _to_object_ref(self, _record_telemetry: bool = True) -> Any:
        """The ``ObjectRef`` of the result, once a replica took the call (Ray's API)."""
        return await await_future(self._future)

    def _to_object_ref_sync(self, _record_telemetry: bool = True,
                            _timeout_s: float | None = None,
                            _allow_running_in_asyncio_loop: bool = False) -> Any:
        """``_to_object_ref`` for code outside an event loop: waits for a replica."""
        return _taken(self._future, _timeout_s)

    def __ember_object_ref__(self, timeout: float | None) -> Any:
        """The core's hook: ``ember.get(response)`` and ``ember.wait([response])`` work, as
        ``ray.get(handle.remote(x))`` did with Ray 2.5's handles (a ``TimeoutError`` when no
        replica took the call within ``timeout`` seconds)."""
        return self._to_object_ref_sync(_timeout_s=timeout)

    def cancel(self) -> None:
        """Best effort: a call still waiting for a replica is dropped (``result()`` raises
        ``concurrent.futures.CancelledError``); a running one is cancelled on its replica."""
        if not self._future.cancel() and self._future.exception() is None:
            ember.cancel(self._future.result())

    def cancelled(self) -> bool:
        """Whether the call was cancelled before a replica took it."""
        return self._future.cancelled()


def _taken(future: concurrent.futures.Future[Any], timeout_s: float | None) -> Any:
    """What ``future`` resolves to once a replica took the call; ``TimeoutError`` after
    ``timeout_s``."""
    try:
        return future.result(timeout_s)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"no replica took the call within {timeout_s} s") from None


class DeploymentResponseGenerator:
    """The items of a streaming call (``handle.options(stream=True)``), as they are produced.

    Iterate it with ``for`` or ``async for``. Dropping it (or leaving the loop) ends the call:
    the replica closes the deployment's generator.
    """

    def __init__(self) -> None:
        self._future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._finish: Callable[[], None] | None = None

    def _start(self, client: _RouterClient, replica_id: str, generator: Any) -> None:
        self._finish = weakref.finalize(self, client.done, replica_id)
        try:
            self._future.set_result(generator)
        except concurrent.futures.InvalidStateError:  # cancelled meanwhile
            self._ended()

    def _fail(self, exc: BaseException) -> None:
        try:
            self._future.set_exception(exc)
        except concurrent.futures.InvalidStateError:  # cancelled meanwhile: nobody waits
            pass

    def __reduce__(self) -> Any:
        raise TypeError("a DeploymentResponseGenerator cannot be pickled or passed to another "
                        "handle call; iterate it and pass the items")

    def _ended(self, exc: BaseException | None = None) -> None:
        if self._finish is not None:
            self._finish()

    async def _to_object_ref_gen(self, _record_telemetry: bool = True) -> Any:
        """The ``ObjectRefGenerator`` of the call, once a replica took it (Ray's API)."""
        return await await_future(self._future)

    def _to_object_ref_gen_sync(self, _record_telemetry: bool = True,
                                _timeout_s: float | None = None,
                                _allow_running_in_asyncio_loop: bool = False) -> Any:
        """``_to_object_ref_gen`` for code outside an event loop: waits for a replica."""
        return _taken(self._future, _timeout_s)

    def cancel(self) -> None:
        """Best effort, as ``DeploymentResponse.cancel``."""
        self._future.cancel()

    def cancelled(self) -> bool:
        """Whether the call was cancelled before a replica took it."""
        return self._future.cancelled()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        generator = self._future.result()
        try:
            ref = next(generator)
            return ember.get(ref)
        except StopIteration:
            self._ended()
            raise
        except BaseException as exc:
            self._ended(exc)
            raise

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        generator = await await_future(self._future)
        try:
            ref = await generator.__anext__()
            return await await_ref(ref)
        except StopAsyncIteration:
            self._ended()
            raise
        except BaseException as exc:
            self._ended(exc)
            raise
