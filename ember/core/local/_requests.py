"""What a worker's running task asks of the driver, in the local scheduler (part of it).

A task that calls ``ember.get``, ``ember.wait`` or ``next`` on a generator inside a worker
blocks on the answer: while it waits, its CPUs are lent to other work (else nested tasks could
never run on a full machine) and taken back when the answer goes out, even if that overcommits
for a moment. A timeout becomes a ``TIMER`` instruction whose callback answers with
``GetTimeoutError``. The other requests (create, kill or look up an actor, cancel, the
resources) are answered at once; an exception becomes the answer (``RemoteFailure``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ember.core._placement import NOT_SET
from ember.core.local._protocol import RemoteFailure
from ember.core.local._records import TIMER, _lost, _Worker
from ember.errors import GetTimeoutError

if TYPE_CHECKING:
    from ember.core.local._scheduler import Scheduler


class Requests:
    """Answers the requests of the workers of one scheduler."""

    def __init__(self, sched: Scheduler) -> None:
        self._sched = sched
        self._streams = sched.streams

    def _block(self, worker: _Worker) -> None:
        if worker.actor is None and worker.inflight and not worker.blocked:
            worker.blocked = True
            self._sched.pool.lend_cpus(worker.inflight[0].request)
            self._sched.schedule()

    def _unblock(self, worker: _Worker) -> None:
        if worker.blocked:
            worker.blocked = False
            if worker.inflight:
                self._sched.pool.reclaim_cpus(worker.inflight[0].request)

    def on_request(self, worker: _Worker, rid: int, kind: str, payload: Any) -> None:
        sched = self._sched
        try:
            if kind == "get":
                self._get(worker, rid, *payload)
            elif kind == "wait":
                self._wait(worker, rid, *payload)
            elif kind == "generator_next":
                self._generator_next(worker, rid, *payload)
            elif kind == "create_actor":
                (actor_id, class_id, code, stored, deps, request, settings, meta) = payload
                if settings.get("placement_group") == NOT_SET:
                    running = worker.inflight[0].id if worker.inflight else None
                    settings["placement_group"] = sched.placed_by(worker, running)
                created = sched.create_actor(actor_id, class_id, code, stored, deps, request,
                                             settings, meta)
                sched.actors[created].pinned = True
                if created == actor_id and settings.get("lifetime") != "detached":
                    sched.own_actor(worker, created)  # it fate-shares with its creator
                sched.reply(worker, rid, created if created != actor_id else None)
            elif kind == "kill":
                sched.kill_actor(*payload)
                sched.reply(worker, rid, None)
            elif kind == "cancel":
                sched.cancel(*payload)
                sched.reply(worker, rid, None)
            elif kind == "get_actor":
                actor_id, meta = sched.lookup_actor(*payload)
                sched.actors[actor_id].pinned = True
                sched.reply(worker, rid, (actor_id, meta))
            elif kind == "named_actors":
                sched.reply(worker, rid, sched.named_actors())
            elif kind == "resources":
                sched.reply(worker, rid, sched.resources(payload))
            elif kind == "assigned":  # get_runtime_context().get_assigned_resources()
                if worker.actor is not None:
                    request = worker.actor.request
                else:
                    work = sched.tasks.get(payload) if payload is not None else None
                    request = work.request if work is not None else {}
                sched.reply(worker, rid, dict(request))
            elif kind == "placement_group":
                sched.reply(worker, rid, self._placement_group(worker, *payload))
            else:  # pragma: no cover - a protocol bug
                raise ValueError(f"unknown request {kind!r}")
        except Exception as exc:
            self._sched.reply(worker, rid, RemoteFailure(exc))

    def _placement_group(self, worker: _Worker, op: str, *args: Any) -> Any:
        """``ember.util``'s placement group functions called inside a worker."""
        sched = self._sched
        if op == "create":
            return sched.new_group(*args)
        if op == "remove":
            sched.groups.remove(args[0])
            return None
        if op == "named":
            return sched.groups.named(args[0])
        if op == "table":
            return sched.groups.table(args[0])
        placed = sched.running_group(worker, args[0])  # "current": args[0] is its task's id
        return None if placed is None else placed[0]

    def _get(self, worker: _Worker, rid: int, ids: list[int], timeout: float | None) -> None:
        store = self._sched.store
        pending = [i for i in ids if not store.is_ready(i)]

        def answer() -> None:
            self._unblock(worker)
            self._sched.reply(worker, rid, [store.value(i) or _lost(i) for i in ids])

        if not pending:
            answer()
            return
        self._block(worker)
        left = [len(pending)]

        def arrived(_oid: int) -> None:
            left[0] -= 1
            if left[0] == 0:
                answer()

        for oid in pending:
            store.add_callback(oid, arrived)
        if timeout is not None:
            def expire() -> None:
                if left[0] == 0:  # answered already
                    return
                store.remove_callback(pending, arrived)
                self._unblock(worker)
                self._sched.reply(worker, rid, RemoteFailure(GetTimeoutError(
                    f"get timed out after {timeout} s ({left[0]} of {len(ids)} objects "
                    "not ready)")))

            self._sched.instructions.append((TIMER, timeout, expire))

    def _wait(
        self, worker: _Worker, rid: int, entries: list[Any], num_returns: int,
        timeout: float | None,
    ) -> None:
        """``entries``: an object id, or ``(generator id, next index)`` for a generator. The
        answer lists the positions of the ready entries (at most ``num_returns``)."""
        sent = [False]
        waitables = [tuple(e) if isinstance(e, (tuple, list)) else e for e in entries]

        def ready_positions() -> list[int]:
            return [i for i, e in enumerate(waitables) if self._streams.ready(e)]

        def answer() -> None:
            if sent[0]:
                return
            sent[0] = True
            self._streams.unwatch(waitables, arrived)
            self._unblock(worker)
            self._sched.reply(worker, rid, ready_positions()[:num_returns])

        def arrived(_oid: int) -> None:
            if len(ready_positions()) >= num_returns:
                answer()
            else:  # a generator's watch is used up: watch the generators again
                self._streams.watch(waitables, arrived, generators_only=True)

        if len(ready_positions()) >= num_returns or timeout == 0:
            answer()
            return
        self._block(worker)
        self._streams.watch(waitables, arrived)
        if timeout is not None:
            self._sched.instructions.append((TIMER, timeout, answer))

    def _generator_next(self, worker: _Worker, rid: int, gen_id: int, index: int,
                                timeout: float | None) -> None:
        def deliver(oid: int | None) -> None:
            self._unblock(worker)
            if oid is not None:
                worker.held[oid] = worker.held.get(oid, 0) + 1
            self._sched.reply(worker, rid, oid)

        if not self._streams.take(gen_id, index, deliver):
            self._block(worker)
