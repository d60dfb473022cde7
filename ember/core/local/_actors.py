"""Actors in the local driver: creation, ordered calls, restarts, death, names and handles."""

# The driver is one class (LocalBackend) split by concern into mixins; each method declares
# `self: LocalBackend` so that mypy checks it against the whole class. mypy reports such self
# types on a mixin under "misc", which is therefore off for this module only.
# mypy: disable-error-code="misc"

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ember.core import _runtime_env
from ember.core import _serialization as ser
from ember.core._options import resource_request
from ember.core._refs import ObjectRef
from ember.core._remote import ActorClass, ActorHandle, ActorMeta
from ember.core.local._records import (
    _Actor,
    _kill,
    _Work,
    _Worker,
)
from ember.core.local._worker_client import _actor_settings
from ember.errors import (
    ActorAlreadyExistsError,
    ActorDiedError,
)

if TYPE_CHECKING:
    from ember.core.local._driver import LocalBackend

logger = logging.getLogger("ember")

_RUNNING = ("starting", "alive")


class ActorsMixin:
    def add_actor_ref(self: LocalBackend, actor_id: int) -> None:
        with self._lock:
            actor = self._actors.get(actor_id)
            if actor is not None:
                actor.handles += 1

    def remove_actor_ref(self: LocalBackend, actor_id: int) -> None:
        # Runs from ActorHandle.__del__, possibly while this thread holds the lock: defer.
        if self._closed:
            return
        self._decrefs.append(("actor", actor_id))
        if self._lock.acquire(blocking=False):
            self._unlock()

    def _release_actor(self: LocalBackend, actor_id: int) -> None:
        actor = self._actors.get(actor_id)
        if actor is None:
            return
        actor.handles -= 1
        if actor.handles <= 0 and not actor.pinned and actor.state == "pending" and not any(
            work.id != -1 for work in actor.queue
        ):  # out of scope before it started, with no calls to run: it never starts
            self._actor_dead(actor, "it went out of scope")
        elif actor.handles <= 0 and not actor.pinned and actor.state not in ("dead", "exiting"):
            # Out of scope: stop after the calls already submitted (Ray's semantics).
            exit_call = _Work()
            exit_call.id = -1
            actor.queue.append(exit_call)
            self._pump_actor(actor)

    def on_actor_handle_pickled(self: LocalBackend, actor_id: int) -> None:
        with self._lock:
            actor = self._actors.get(actor_id)
            if actor is not None:
                actor.pinned = True

    def create_actor(
        self: LocalBackend, cls: ActorClass, args: tuple[Any, ...], kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> ActorHandle:
        self._check_open()
        meta = cls.meta
        request = resource_request(options)
        settings = _actor_settings(options)
        settings["runtime_env"] = _runtime_env.for_local(options.get("runtime_env"),
                                                         f"actor {meta.class_name}")
        stored, deps = self._serialize(meta.class_name, args, kwargs)
        # Pickling user code may meet actor handles (module globals, defaults, closures), whose
        # __reduce__ takes the lock: never pickle while holding it.
        code = cls.pickled()
        with self._lock:
            actor_id = self._create_actor(next(self._ids), cls.class_id, code, stored,
                                          deps, request, settings, meta)
            handle = ActorHandle.__new__(ActorHandle)
            handle._actor_id, handle._meta, handle._rt = actor_id, meta, self
            self._actors[actor_id].handles += 1
            self._unlock_keep()
        self._run_deferred()
        return handle

    def _create_actor(
        self: LocalBackend, actor_id: int, class_id: str, code: bytes, stored: ser.Stored, deps: list[int],
        request: dict[str, float], settings: dict[str, Any], meta: ActorMeta,
    ) -> int:
        name = settings.get("name")
        namespace = settings.get("namespace") or self._cfg.namespace
        if name:
            existing = self._named.get((namespace, name))
            if existing is not None and self._actors[existing].state != "dead":
                if settings.get("get_if_exists"):
                    return existing
                raise ActorAlreadyExistsError(
                    f"an actor named {name!r} already exists in namespace {namespace!r}; "
                    "pick another name, kill it first, or pass get_if_exists=True"
                )
        actor = _Actor()
        actor.id = actor_id
        actor.class_id = class_id
        actor.class_code = code
        actor.args = stored
        actor.deps = deps
        actor.request = request
        actor.meta = meta
        actor.name = name
        actor.namespace = namespace
        actor.max_concurrency = settings.get("max_concurrency")
        actor.max_task_retries = settings.get("max_task_retries") or 0
        actor.restarts_left = settings.get("max_restarts") or 0
        actor.pinned = bool(name) or settings.get("lifetime") == "detached"
        actor.env = settings.get("runtime_env")
        self._store.pin(stored)
        for dep in deps:
            self._store.incref(dep)
        self._actors[actor_id] = actor
        self._live_actors += 1
        if name:
            self._named[(namespace, name)] = actor_id
        error = self._infeasible(request, f"actor {meta.class_name}")
        if error is not None:  # its calls raise the ResourceError at once
            actor.error = error
            self._actor_dead(actor, "it can never be placed")
            return actor_id
        pending = [d for d in deps if not self._store.is_ready(d)]
        if pending:
            counter = [len(pending)]

            def dep_ready(_oid: int) -> None:
                counter[0] -= 1
                if counter[0] == 0:
                    self._pending_actors.append(actor)
                    self._schedule()

            for dep in pending:
                self._store.add_callback(dep, dep_ready)
        else:
            self._pending_actors.append(actor)
            self._schedule()
        return actor_id

    def _start_actor(self: LocalBackend, actor: _Actor) -> None:
        if actor.state == "dead":
            return
        for dep in actor.deps:
            value = self._store.value(dep)
            if value is not None and value[1]:
                self._actor_dead(actor, "an argument of its constructor failed", error=value[0])
                return
        actor.gpu_ids = self._pool.acquire(actor.request)
        actor.holds = True
        self._launch_actor(actor, restarted=False)

    def _launch_actor(self: LocalBackend, actor: _Actor, restarted: bool) -> None:
        worker = self._spawn(actor)
        actor.worker = worker
        actor.state = "starting"
        self._send(worker, ("actor", actor.id, actor.class_id, actor.class_code, actor.args,
                            tuple(self._store.value(d) for d in actor.deps),
                            actor.max_concurrency, actor.gpu_ids, actor.meta.class_name,
                            actor.namespace, restarted, actor.meta.is_async, actor.env,
                            actor.name or ""))
        self._pump_actor(actor)

    def submit_actor_task(
        self: LocalBackend, handle: ActorHandle, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
        num_returns: Any,
    ) -> Any:
        if self._closed:
            self._check_open()
        stored, deps = self._serialize(method, args, kwargs)
        self._lock.acquire()
        try:
            actor = self._actors.get(handle._actor_id)
            if (num_returns == 1 and not deps and actor is not None and not actor.queue
                    and actor.worker is not None and actor.state in _RUNNING):
                # The common case, kept short: what _new_work, _queue_call and _pump_actor do
                # for a call with one result, no ObjectRef arguments and nothing queued ahead.
                work = _Work()
                work.id = work_id = next(self._ids)
                oid = next(self._ids)
                work.name = work.method = method
                work.args = stored
                work.return_ids = return_ids = [oid]
                work.actor = actor
                self._store.pin(stored)
                self._store.new(oid, refs=1)
                self._producer[oid] = work
                actor.inflight[work_id] = work
                self._send(actor.worker, ("call", work_id, method, stored, (), return_ids, None,
                                          work.backpressure))
                self._claim(work)
                return ObjectRef(oid, self, add_ref=False)
            if deps and self._claimed:  # a claimed result may be among them
                self._release_claims()
            work = self._new_work(method, stored, deps, num_returns, holder=None)
            self._queue_call(handle._actor_id, work, method)
            if work.actor is not None and num_returns == 1:
                self._claim(work)
            return self._returns(work, num_returns)
        finally:
            self._unlock()

    def _queue_call(self: LocalBackend, actor_id: int, work: _Work, method: str) -> None:
        actor = self._actors.get(actor_id)
        work.method = method
        work.fn_id = None
        work.retries_left = 0
        work.retry_exceptions = False
        if actor is None or actor.state == "dead":
            reason = actor.death if actor is not None else "it is not known to this runtime"
            self._fail(work, (actor.error if actor is not None else None) or ActorDiedError(
                f"cannot call {method}(): the actor is dead ({reason})"))
            return
        work.actor = actor
        actor.queue.append(work)
        self._pump_actor(actor)

    def _pump_actor(self: LocalBackend, actor: _Actor) -> None:
        worker = actor.worker
        if worker is None or actor.state not in _RUNNING:
            return
        queue = actor.queue
        while queue:
            work = queue[0]
            if work.id == -1:  # the end of the actor's scope
                queue.popleft()
                actor.state = "exiting"
                self._send(worker, ("exit",))
                return
            deps = work.deps
            pending = [d for d in deps if not self._store.is_ready(d)] if deps else deps
            if pending:
                if not work.waiting:
                    work.waiting = len(pending)

                    def dep_ready(_oid: int, work: _Work = work) -> None:
                        work.waiting -= 1
                        if work.waiting == 0:
                            self._pump_actor(actor)

                    for dep in pending:
                        self._store.add_callback(dep, dep_ready)
                return
            queue.popleft()
            if deps:
                failed = next((v for v in (self._store.value(d) for d in deps)
                               if v is not None and v[1]), None)
                if failed is not None:
                    self._finish(work, None, failed[0])
                    continue
            actor.inflight[work.id] = work
            self._send(worker, ("call", work.id, work.method, work.args, self._dep_values(work),
                                work.return_ids, work.gen_id, work.backpressure))
            if work.gen_id is not None:
                gen = self._gens.get(work.gen_id)
                if gen is not None:
                    gen.worker = worker

    def _actor_dead(self: LocalBackend, actor: _Actor, reason: str, error: Any = None) -> None:
        if actor.state == "dead":
            return
        actor.state = "dead"
        self._live_actors -= 1
        cause = ""
        if error is not None:
            try:
                cause = f": {ser.loads_detached(error, self._names)}"
            except Exception:
                cause = ""
        actor.death = f"{reason}{cause}"
        died = actor.error or ActorDiedError(f"actor {actor.meta.class_name} died: {actor.death}")
        for work in list(actor.inflight.values()) + [w for w in actor.queue if w.id != -1]:
            self._fail(work, died)
        actor.inflight.clear()
        actor.queue.clear()
        if actor.holds:  # a queued actor never took any: giving some back would overcommit
            self._pool.release(actor.request, actor.gpu_ids)
            actor.holds = False
        actor.gpu_ids = ()
        if actor.name and self._named.get((actor.namespace, actor.name)) == actor.id:
            del self._named[(actor.namespace, actor.name)]
        self._store.unpin(actor.args)
        for dep in actor.deps:
            self._store.decref(dep)
        worker = actor.worker
        if worker is not None and worker.uid in self._workers:
            _kill(worker)
        self._schedule()

    def _on_actor_worker_exit(self: LocalBackend, actor: _Actor, worker: _Worker, exitcode: Any) -> None:
        if actor.worker is not worker or actor.state == "dead":
            return
        actor.worker = None
        if actor.state == "exiting":
            self._actor_dead(actor, "it went out of scope")
            return
        how = f"its process exited (exit code {exitcode})"
        if actor.exited:
            self._actor_dead(actor, actor.exited)
            return
        if actor.no_restart or actor.restarts_left == 0:
            self._actor_dead(actor, "it was killed" if actor.no_restart else how)
            return
        if actor.restarts_left > 0:
            actor.restarts_left -= 1
        actor.restarts += 1
        retry = [w for w in actor.inflight.values()]
        actor.inflight.clear()
        died = ActorDiedError(
            f"actor {actor.meta.class_name} died while running this call ({how}); it is "
            "restarting. Set max_task_retries to retry such calls."
        )
        if actor.max_task_retries:
            actor.queue.extendleft(reversed(retry))
        else:
            for work in retry:
                self._fail(work, died)
        logger.info("restarting actor %s (%s)", actor.meta.class_name, how)
        self._launch_actor(actor, restarted=True)

    def _kill_owned_actors(self: LocalBackend, worker: _Worker) -> None:
        """Kill the non-detached actors that ``worker``'s task or actor created: an actor
        fate-shares with its creator's process, as in Ray."""
        creator = f"{worker.actor.meta.class_name} actor" if worker.actor else "task's worker"
        for actor_id in self._owned.pop(worker.uid, ()):
            actor = self._actors[actor_id]
            if actor.state == "dead":
                continue
            actor.exited = (f"its creator (a {creator}) died, and an actor that is not "
                            "detached fate-shares with the process that created it")
            self._kill_actor(actor.id, no_restart=True)

    def kill(self: LocalBackend, handle: ActorHandle, no_restart: bool) -> None:
        self._check_open()
        with self._lock:
            self._kill_actor(handle._actor_id, no_restart)
            self._unlock_keep()
        self._run_deferred()

    def _kill_actor(self: LocalBackend, actor_id: int, no_restart: bool) -> None:
        actor = self._actors.get(actor_id)
        if actor is None or actor.state == "dead":
            return
        actor.no_restart = no_restart
        worker = actor.worker
        if worker is not None:
            _kill(worker)
        elif no_restart:
            self._actor_dead(actor, actor.exited or "it was killed")

    def get_actor(self: LocalBackend, name: str, namespace: str | None) -> ActorHandle:
        self._check_open()
        with self._lock:
            actor_id, meta = self._lookup_actor(name, namespace)
            self._actors[actor_id].handles += 1
        handle = ActorHandle.__new__(ActorHandle)
        handle._actor_id, handle._meta, handle._rt = actor_id, meta, self
        return handle

    def _lookup_actor(self: LocalBackend, name: str, namespace: str | None) -> tuple[int, ActorMeta]:
        ns = namespace or self._cfg.namespace
        actor_id = self._named.get((ns, name))
        if actor_id is None or self._actors[actor_id].state == "dead":
            known = sorted(n for (space, n) in self._named if space == ns)
            raise ValueError(
                f"no live actor named {name!r} in namespace {ns!r} (named actors there: "
                f"{known or 'none'})"
            )
        return actor_id, self._actors[actor_id].meta
