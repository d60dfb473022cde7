"""Actors in the local scheduler: pure bookkeeping and decisions, part of ``_scheduler``.

An actor waits for its constructor's arguments, then for its resources (``pending_actors``, in
order), then gets a process of its own. Its calls queue in submission order and go out up to
the first whose arguments are not ready yet (``_pump``). When its process dies it restarts
while ``max_restarts`` allows, resending the calls in flight when ``max_task_retries`` is set,
and failing them with ``ActorDiedError`` otherwise; once dead, every call fails at once. Out of
scope (no handle left, not named or detached) it stops after the calls already submitted. It
ends for good, whatever ``max_restarts`` says, when it is killed with ``no_restart``, when a
method calls ``exit_actor()``, or when the process that created it dies (it fate-shares with its
creator unless ``lifetime="detached"``, as in Ray).

The records (``actors``, ``named``, ``pending_actors``, ``owned``) are the scheduler's, shared
with it; instructions go out through it (``send``, ``spawn``, ``instructions``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ember.core import _serialization as ser
from ember.core._remote import ActorMeta
from ember.core.local._records import KILL, _Actor, _Work, _Worker
from ember.errors import ActorAlreadyExistsError, ActorDiedError, TaskCancelledError, TaskError

if TYPE_CHECKING:
    from ember.core.local._scheduler import Scheduler

logger = logging.getLogger("ember")

RUNNING = ("starting", "alive")
EXIT_CALL = -1  # the id of the queue entry that ends an actor's scope


class Actors:
    """The actors of one scheduler (see the module's docstring)."""

    def __init__(self, sched: Scheduler) -> None:
        self._sched = sched
        self.actors = sched.actors
        self.named = sched.named
        self.pending = sched.pending_actors
        self.owned = sched.owned
        self.store = sched.store
        self.pool = sched.pool
        self.instructions = sched.instructions
        self._send = sched.send

    def cancel_call(self, work: _Work) -> None:
        """Cancel an actor call. A queued one never runs. A running one is not interrupted (an
        actor has state), as in Ray: an ``async`` actor cancels its asyncio task, the others
        let the method see ``get_runtime_context().is_canceled()``. Either way ``get`` raises
        ``TaskCancelledError`` at once."""
        actor = work.actor
        assert actor is not None
        if work in actor.queue:
            actor.queue.remove(work)
            work.cancelled = True
            self._sched.fail(work, TaskCancelledError(
                f"{actor.meta.class_name}.{work.method} was cancelled"))
        elif work.id in actor.inflight and actor.worker is not None:
            work.cancelled = True
            self._send(actor.worker, ("cancel", work.id))
            self._sched.resolve_cancelled(
                work, actor.worker, interrupted(f"{actor.meta.class_name}.{work.method}"))

    def create(
        self, actor_id: int, class_id: str, code: bytes, stored: ser.Stored, deps: list[int],
        request: dict[str, float], settings: dict[str, Any], meta: ActorMeta,
    ) -> int:
        """A new actor (or, with ``get_if_exists``, the live one of that name): its id."""
        name = settings.get("name")
        namespace = settings.get("namespace") or self._sched.namespace
        if name:
            existing = self.named.get((namespace, name))
            if existing is not None and self.actors[existing].state != "dead":
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
        group = settings.get("placement_group")
        actor.group = group if isinstance(group, tuple) else None
        self.store.pin(stored)
        for dep in deps:
            self.store.incref(dep)
        self.actors[actor_id] = actor
        self._sched.live_actors += 1
        if name:
            self.named[(namespace, name)] = actor_id
        error = self._sched.infeasible(request, f"actor {meta.class_name}")
        if error is not None:  # its calls raise the ResourceError at once
            actor.error = error
            self.dead(actor, "it can never be placed")
            return actor_id
        pending = [d for d in deps if not self.store.is_ready(d)]
        if pending:
            counter = [len(pending)]

            def dep_ready(_oid: int) -> None:
                counter[0] -= 1
                if counter[0] == 0:
                    self.pending.append(actor)
                    self._sched.schedule()

            for dep in pending:
                self.store.add_callback(dep, dep_ready)
        else:
            self.pending.append(actor)
            self._sched.schedule()
        return actor_id

    def add_handle(self, actor_id: int) -> None:
        actor = self.actors.get(actor_id)
        if actor is not None:
            actor.handles += 1

    def pin(self, actor_id: int) -> None:
        """A handle left this process (pickled): the actor lives until it is killed."""
        actor = self.actors.get(actor_id)
        if actor is not None:
            actor.pinned = True

    def release(self, actor_id: int) -> None:
        actor = self.actors.get(actor_id)
        if actor is None:
            return
        actor.handles -= 1
        if actor.handles <= 0 and not actor.pinned and actor.state == "pending" and not any(
            work.id != EXIT_CALL for work in actor.queue
        ):  # out of scope before it started, with no calls to run: it never starts
            self.dead(actor, "it went out of scope")
        elif actor.handles <= 0 and not actor.pinned and actor.state not in ("dead", "exiting"):
            # Out of scope: stop after the calls already submitted (Ray's semantics).
            exit_call = _Work()
            exit_call.id = EXIT_CALL
            actor.queue.append(exit_call)
            self._pump(actor)

    def lookup(self, name: str, namespace: str | None) -> tuple[int, ActorMeta]:
        ns = namespace or self._sched.namespace
        actor_id = self.named.get((ns, name))
        if actor_id is None or self.actors[actor_id].state == "dead":
            known = sorted(n for (space, n) in self.named if space == ns)
            raise ValueError(
                f"no live actor named {name!r} in namespace {ns!r} (named actors there: "
                f"{known or 'none'})"
            )
        return actor_id, self.actors[actor_id].meta

    def kill(self, actor_id: int, no_restart: bool) -> None:
        actor = self.actors.get(actor_id)
        if actor is None or actor.state == "dead":
            return
        # For good once asked so (a later kill that allows a restart does not undo it).
        actor.no_restart = actor.no_restart or no_restart
        worker = actor.worker
        if worker is not None:
            self.instructions.append((KILL, worker))
        elif no_restart:
            self.dead(actor, actor.exited or "it was killed")

    def own(self, worker: _Worker, actor_id: int) -> None:
        """``worker``'s task or actor created this actor (not detached): the actor fate-shares
        with that process, as in Ray."""
        self.owned.setdefault(worker.uid, set()).add(actor_id)

    def kill_owned(self, worker: _Worker) -> None:
        """Kill the non-detached actors that ``worker``'s task or actor created."""
        creator = f"{worker.actor.meta.class_name} actor" if worker.actor else "task's worker"
        for actor_id in self.owned.pop(worker.uid, ()):
            actor = self.actors[actor_id]
            if actor.state == "dead":
                continue
            actor.exited = (f"its creator (a {creator}) died, and an actor that is not "
                            "detached fate-shares with the process that created it")
            self.kill(actor.id, no_restart=True)

    def submit_call(
        self, actor_id: int, method: str, stored: ser.Stored, deps: list[int], num_returns: Any,
    ) -> _Work:
        """A call of an actor's method by the driver (see ``submit_task``)."""
        actor = self.actors.get(actor_id)
        if (num_returns == 1 and not deps and actor is not None and not actor.queue
                and actor.worker is not None and actor.state in RUNNING):
            # The common case, kept short: what new_work, queue_call and _pump do
            # for a call with one result, no ObjectRef arguments and nothing queued ahead.
            work = _Work()
            work.id = work_id = next(self._sched.ids)
            oid = next(self._sched.ids)
            work.name = work.method = method
            work.args = stored
            work.return_ids = return_ids = [oid]
            work.actor = actor
            self.store.pin(stored)
            self.store.new(oid, refs=1)
            self._sched.producer[oid] = work
            actor.inflight[work_id] = work
            self._send(actor.worker, ("call", work_id, method, stored, (), return_ids, None,
                                      work.backpressure))
            return work
        work = self._sched.new_work(method, stored, deps, num_returns, holder=None)
        self.queue_call(actor_id, work, method)
        return work

    def start(self, actor: _Actor) -> None:
        if actor.state == "dead":
            return
        for dep in actor.deps:
            value = self.store.value(dep)
            if value is not None and value[1]:
                self.dead(actor, "an argument of its constructor failed", error=value[0])
                return
        actor.gpu_ids = self.pool.acquire(actor.request)
        actor.holds = True
        self._launch(actor, restarted=False)

    def _launch(self, actor: _Actor, restarted: bool) -> None:
        worker = self._sched.spawn(actor)
        actor.worker = worker
        actor.state = "starting"
        self._send(worker, ("actor", actor.id, actor.class_id, actor.class_code, actor.args,
                            tuple(self.store.value(d) for d in actor.deps),
                            actor.max_concurrency, actor.gpu_ids, actor.meta.class_name,
                            actor.namespace, restarted, actor.meta.is_async, actor.env,
                            actor.name or ""))
        self._pump(actor)

    def queue_call(self, actor_id: int, work: _Work, method: str) -> None:
        actor = self.actors.get(actor_id)
        work.method = method
        work.fn_id = None
        work.retries_left = 0
        work.retry_exceptions = False
        if actor is None or actor.state == "dead":
            reason = actor.death if actor is not None else "it is not known to this runtime"
            died = ActorDiedError(f"cannot call {method}(): the actor is dead ({reason})")
            self._sched.fail(work, (actor.error if actor is not None else None) or died)
            return
        work.actor = actor
        actor.queue.append(work)
        self._pump(actor)

    def _pump(self, actor: _Actor) -> None:
        """Send the actor's queued calls, in order, up to the first whose arguments are not
        ready yet."""
        worker = actor.worker
        if worker is None or actor.state not in RUNNING:
            return
        queue = actor.queue
        while queue:
            work = queue[0]
            if work.id == EXIT_CALL:  # the end of the actor's scope
                queue.popleft()
                actor.state = "exiting"
                self._send(worker, ("exit",))
                return
            deps = work.deps
            pending = [d for d in deps if not self.store.is_ready(d)] if deps else deps
            if pending:
                if not work.waiting:
                    work.waiting = len(pending)

                    def dep_ready(_oid: int, work: _Work = work) -> None:
                        work.waiting -= 1
                        if work.waiting == 0:
                            self._pump(actor)

                    for dep in pending:
                        self.store.add_callback(dep, dep_ready)
                return
            queue.popleft()
            if deps:
                failed = next((v for v in (self.store.value(d) for d in deps)
                               if v is not None and v[1]), None)
                if failed is not None:
                    self._sched.finish(work, None, failed[0])
                    continue
            actor.inflight[work.id] = work
            self._send(worker, ("call", work.id, work.method, work.args,
                                self._sched.dep_values(work), work.return_ids, work.gen_id,
                                work.backpressure))
            if work.gen_id is not None:
                self._sched.streams.attach(work.gen_id, worker)

    def dead(self, actor: _Actor, reason: str, error: ser.Stored | None = None) -> None:
        if actor.state == "dead":
            return
        actor.state = "dead"
        self._sched.live_actors -= 1
        cause = ""
        if error is not None:
            try:
                cause = f": {self._sched.decode(error)}"
            except Exception:
                cause = ""
        actor.death = f"{reason}{cause}"
        died = actor.error or ActorDiedError(f"actor {actor.meta.class_name} died: {actor.death}")
        for work in list(actor.inflight.values()) + [w for w in actor.queue
                                                     if w.id != EXIT_CALL]:
            self._sched.fail(work, died)
        actor.inflight.clear()
        actor.queue.clear()
        if actor.holds:  # a queued actor never took any: giving some back would overcommit
            self.pool.release(actor.request, actor.gpu_ids)
            actor.holds = False
        actor.gpu_ids = ()
        if actor.name and self.named.get((actor.namespace, actor.name)) == actor.id:
            del self.named[(actor.namespace, actor.name)]
        self.store.unpin(actor.args)
        for dep in actor.deps:
            self.store.decref(dep)
        worker = actor.worker
        if worker is not None and worker.uid in self._sched.workers:
            self.instructions.append((KILL, worker))
        self._sched.schedule()

    def worker_exited(self, actor: _Actor, worker: _Worker, exitcode: int | None
                              ) -> None:
        if actor.worker is not worker or actor.state == "dead":
            return
        actor.worker = None
        if actor.state == "exiting":
            self.dead(actor, "it went out of scope")
            return
        how = f"its process exited (exit code {exitcode})"
        if actor.exited:
            self.dead(actor, actor.exited)
            return
        if actor.no_restart or actor.restarts_left == 0:
            self.dead(actor, "it was killed" if actor.no_restart else how)
            return
        if actor.restarts_left > 0:
            actor.restarts_left -= 1
        actor.restarts += 1
        retry = list(actor.inflight.values())
        actor.inflight.clear()
        died = ActorDiedError(
            f"actor {actor.meta.class_name} died while running this call ({how}); it is "
            "restarting. Set max_task_retries to retry such calls."
        )
        if actor.max_task_retries:
            actor.queue.extendleft(reversed(retry))
        else:
            for work in retry:
                self._sched.fail(work, died)
        logger.info("restarting actor %s (%s)", actor.meta.class_name, how)
        self._launch(actor, restarted=True)


def interrupted(name: str) -> TaskError:
    """The error of a call cancelled while it ran: a ``TaskCancelledError`` that is also a
    ``TaskError``, as Ray raises ``RayTaskError(TaskCancelledError)`` for it (a call cancelled
    before it ran raises a plain ``TaskCancelledError``, in Ray too)."""
    return TaskError.wrap(TaskCancelledError(f"{name} was cancelled while it ran"), name, "")
