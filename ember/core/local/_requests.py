"""Requests that workers make of the driver (nested get/wait/submit/...) and streaming generators."""

# The driver is one class (LocalBackend) split by concern into mixins; each method declares
# `self: LocalBackend` so that mypy checks it against the whole class. mypy reports such self
# types on a mixin under "misc", which is therefore off for this module only.
# mypy: disable-error-code="misc"

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ember.core import _serialization as ser
from ember.core._refs import ObjectRef
from ember.core.local._protocol import COLLECT
from ember.core.local._records import (
    _Generator,
    _lost,
    _Waiter,
    _Worker,
)
from ember.core.local._worker_client import _RemoteFailure
from ember.errors import (
    GetTimeoutError,
)

if TYPE_CHECKING:
    from ember.core.local._driver import LocalBackend

logger = logging.getLogger("ember")


class RequestsMixin:
    def _reply(self: LocalBackend, worker: _Worker, request_id: int, payload: Any) -> None:
        if worker.uid in self._workers:
            self._send(worker, ("reply", request_id, payload))

    def _block(self: LocalBackend, worker: _Worker) -> None:
        if worker.actor is None and worker.inflight and not worker.blocked:
            worker.blocked = True
            self._pool.lend_cpus(worker.inflight[0].request)
            self._schedule()

    def _unblock(self: LocalBackend, worker: _Worker) -> None:
        if worker.blocked:
            worker.blocked = False
            if worker.inflight:
                self._pool.reclaim_cpus(worker.inflight[0].request)

    def _on_request(self: LocalBackend, worker: _Worker, rid: int, kind: str, payload: Any) -> None:
        if self._claimed:  # it may wait for a claimed result
            self._release_claims()
        try:
            if kind == "get":
                self._request_get(worker, rid, *payload)
            elif kind == "wait":
                self._request_wait(worker, rid, *payload)
            elif kind == "generator_next":
                self._request_generator_next(worker, rid, *payload)
            elif kind == "create_actor":
                (actor_id, class_id, code, stored, deps, request, settings, meta) = payload
                created = self._create_actor(actor_id, class_id, code, stored, deps, request,
                                             settings, meta)
                self._actors[created].pinned = True
                if created == actor_id and settings.get("lifetime") != "detached":
                    # It fate-shares with the process that created it (_kill_owned_actors).
                    self._owned.setdefault(worker.uid, set()).add(created)
                self._reply(worker, rid, created if created != actor_id else None)
            elif kind == "kill":
                self._kill_actor(*payload)
                self._reply(worker, rid, None)
            elif kind == "cancel":
                self._cancel(*payload)
                self._reply(worker, rid, None)
            elif kind == "get_actor":
                actor_id, meta = self._lookup_actor(*payload)
                self._actors[actor_id].pinned = True
                self._reply(worker, rid, (actor_id, meta))
            elif kind == "resources":
                self._reply(worker, rid, self._resources(payload))
            elif kind == "state":  # observe: ember.util.state called inside a worker
                self._reply(worker, rid, self._observer.query(*payload))
            elif kind == "assigned":  # get_runtime_context().get_assigned_resources()
                if worker.actor is not None:
                    request = worker.actor.request
                else:
                    work = self._tasks.get(payload) if payload is not None else None
                    request = work.request if work is not None else {}
                self._reply(worker, rid, dict(request))
            else:  # pragma: no cover - a protocol bug
                raise ValueError(f"unknown request {kind!r}")
        except Exception as exc:
            self._reply(worker, rid, _RemoteFailure(exc))

    def _request_get(
        self: LocalBackend, worker: _Worker, rid: int, ids: list[int], timeout: float | None
    ) -> None:
        store = self._store
        pending = [i for i in ids if not store.is_ready(i)]

        def answer() -> None:
            self._unblock(worker)
            self._reply(worker, rid, [store.value(i) or _lost(i) for i in ids])

        if not pending:
            answer()
            return
        self._block(worker)
        state: dict[str, Any] = {"left": len(pending), "timer": None}

        def arrived(_oid: int) -> None:
            state["left"] -= 1
            if state["left"] == 0:
                if state["timer"] is not None:
                    state["timer"][2] = lambda: None
                answer()

        for oid in pending:
            store.add_callback(oid, arrived)
        if timeout is not None:
            def expire() -> None:
                store.remove_callback(pending, arrived)
                self._unblock(worker)
                self._reply(worker, rid, _RemoteFailure(GetTimeoutError(
                    f"get timed out after {timeout} s ({state['left']} of {len(ids)} objects "
                    "not ready)")))

            state["timer"] = self._add_timer(timeout, expire)

    def _request_wait(
        self: LocalBackend, worker: _Worker, rid: int, entries: list[Any], num_returns: int,
        timeout: float | None,
    ) -> None:
        """``entries``: an object id, or ``(generator id, next index)`` for a generator. The
        answer lists the positions of the ready entries (at most ``num_returns``)."""
        done = {"sent": False}
        waitables = [tuple(e) if isinstance(e, (tuple, list)) else e for e in entries]

        def ready_positions() -> list[int]:
            return [i for i, e in enumerate(waitables) if self._waitable_ready(e)]

        def answer() -> None:
            if done["sent"]:
                return
            done["sent"] = True
            self._unwatch(waitables, arrived)
            self._unblock(worker)
            self._reply(worker, rid, ready_positions()[:num_returns])

        def arrived(_oid: int) -> None:
            if len(ready_positions()) >= num_returns:
                answer()
            else:  # a generator's watch is used up: watch the generators again
                self._watch(waitables, arrived, generators_only=True)

        if len(ready_positions()) >= num_returns or timeout == 0:
            answer()
            return
        self._block(worker)
        self._watch(waitables, arrived)
        if timeout is not None:
            self._add_timer(timeout, answer)

    def _waitable_ready(self: LocalBackend, entry: Any) -> bool:
        """Whether an object (its id) or a generator's next item (``(id, index)``) is ready."""
        if type(entry) is tuple:
            gen = self._gens.get(entry[0])
            return gen is None or gen.finished or entry[1] in gen.items
        return self._store.is_ready(entry)

    def _watch(self: LocalBackend, entries: list[Any], callback: Callable[[int], None],
               generators_only: bool = False) -> None:
        """Call ``callback`` when an object arrives, or a generator produces or ends (once)."""
        for entry in entries:
            if type(entry) is tuple:
                gen = self._gens.get(entry[0])
                if gen is not None and callback not in gen.watchers:
                    gen.watchers.append(callback)
            elif not generators_only:
                self._store.add_callback(entry, callback)

    def _unwatch(self: LocalBackend, entries: list[Any], callback: Callable[[int], None]) -> None:
        for entry in entries:
            if type(entry) is tuple:
                gen = self._gens.get(entry[0])
                if gen is not None and callback in gen.watchers:
                    gen.watchers.remove(callback)
            else:
                self._store.remove_callback((entry,), callback)

    def _request_generator_next(
        self: LocalBackend, worker: _Worker, rid: int, gen_id: int, index: int, timeout: float | None
    ) -> None:
        def deliver(oid: int | None) -> None:
            self._unblock(worker)
            if oid is not None:
                worker.held[oid] = worker.held.get(oid, 0) + 1
            self._reply(worker, rid, oid)

        if not self._generator_take(gen_id, index, deliver):
            self._block(worker)

    def _submit_from_worker(self: LocalBackend, worker: _Worker, spec: tuple[Any, ...]) -> None:
        (task_id, fn_id, code, stored, deps, return_ids, gen_id, request, max_retries,
         retry_exceptions, name, parent, collect, env) = spec
        if deps and self._claimed:
            self._release_claims()
        if code is not None:
            self._fn_code[fn_id] = code
        work = self._new_work(name, stored, deps, None, worker, work_id=task_id,
                              return_ids=return_ids, gen_id=gen_id)
        work.fn_id = fn_id
        work.request = request
        work.key = (fn_id, tuple(sorted(request.items())))
        work.retries_left = max_retries
        work.retry_exceptions = retry_exceptions
        work.parent = parent
        if collect:
            work.backpressure = COLLECT
        work.env = env
        self._enqueue_feasible(work, f"task {name}")

    def _call_from_worker(self: LocalBackend, worker: _Worker, spec: tuple[Any, ...]) -> None:
        actor_id, call_id, method, stored, deps, return_ids, gen_id, collect = spec
        if deps and self._claimed:
            self._release_claims()
        work = self._new_work(method, stored, deps, None, worker, work_id=call_id,
                              return_ids=return_ids, gen_id=gen_id)
        if collect:
            work.backpressure = COLLECT
        self._queue_call(actor_id, work, method)

    def _on_item(self: LocalBackend, gen_id: int, index: int, stored: ser.Stored, is_error: bool) -> None:
        gen = self._gens.get(gen_id)
        if gen is None or gen.finished:
            self._store.discard_unowned(stored)
            return
        index = gen.produced
        gen.produced += 1
        oid = next(self._ids)
        self._store.new(oid, refs=1)  # held by the generator until the consumer takes it
        self._store.resolve(oid, stored, is_error)
        gen.items[index] = oid
        self._wake_generator(gen)

    def _wake_generator(self: LocalBackend, gen: _Generator) -> None:
        if gen.watchers:
            watchers, gen.watchers = gen.watchers, []
            for watcher in watchers:
                watcher(gen.work.gen_id or 0)
        if not gen.waiters:
            return
        waiters, gen.waiters = gen.waiters, []
        for index, deliver in waiters:
            if index in gen.items or gen.finished:
                self._take_item(gen, index, deliver)
            else:
                gen.waiters.append((index, deliver))

    def _generator_take(
        self: LocalBackend, gen_id: int, index: int, deliver: Callable[[int | None], None]
    ) -> bool:
        """Hand item ``index`` to ``deliver`` now (True) or once it is produced (False)."""
        gen = self._gens.get(gen_id)
        if gen is None:
            deliver(None)
            return True
        if index in gen.items or (gen.finished and index >= gen.produced):
            self._take_item(gen, index, deliver)
            return True
        gen.waiters.append((index, deliver))
        return False

    def _take_item(self: LocalBackend, gen: _Generator, index: int, deliver: Callable[[int | None], None]
                   ) -> None:
        oid = gen.items.pop(index, None)
        if oid is None:
            deliver(None)
            return
        self._store.incref(oid)  # the consumer's reference
        deliver(oid)
        self._store.decref(oid)  # the generator's pin
        gen.consumed = max(gen.consumed, index + 1)
        worker = gen.worker
        if worker is not None and not gen.finished and worker.uid in self._workers:
            self._send(worker, ("ack", gen.work.gen_id, gen.consumed))

    def _close_generator(self: LocalBackend, gen_id: int, gen: _Generator) -> None:
        del self._gens[gen_id]
        for oid in gen.items.values():
            self._store.decref(oid)
        gen.items.clear()
        worker = gen.worker
        if not gen.finished and worker is not None and worker.uid in self._workers:
            self._send(worker, ("close_generator", gen_id))

    def generator_next(self: LocalBackend, generator_id: int, index: int, timeout: float | None
                       ) -> ObjectRef | None:
        self._check_open()
        box: list[int | None] = []
        waiter = _Waiter(1)

        def deliver(oid: int | None) -> None:
            box.append(oid)
            waiter(0)

        self._lock.acquire()
        try:
            if self._claimed:
                self._release_claims()
            self._generator_take(generator_id, index, deliver)
        finally:
            self._unlock()
        if not waiter.wait(timeout):
            with self._lock:
                gen = self._gens.get(generator_id)
                if gen is not None:
                    gen.waiters = [(i, d) for i, d in gen.waiters if d is not deliver]
                if not box:
                    raise GetTimeoutError(f"no item from the generator within {timeout} s")
        oid = box[0]
        if oid is None:
            return None
        ref = ObjectRef(oid, self, add_ref=False)
        return ref

    def generator_next_async(
        self: LocalBackend, generator_id: int, index: int,
        deliver: Callable[[ObjectRef | None, BaseException | None], None],
    ) -> None:
        self._check_open()

        def take(oid: int | None) -> None:
            ref = None if oid is None else ObjectRef(oid, self, add_ref=False)
            self._deferred.append(lambda: deliver(ref, None))

        self._lock.acquire()
        try:
            if self._claimed:
                self._release_claims()
            self._generator_take(generator_id, index, take)
        finally:
            self._unlock()
