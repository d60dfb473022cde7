"""Streaming generators in the local scheduler: pure bookkeeping, part of ``_scheduler``.

A generator task or call (``num_returns="streaming"``) sends its items one by one. Each item
becomes an object the generator holds until its consumer takes it; the consumer's progress
goes back to the producer (an ``ack``), which runs at most its backpressure ahead. Takers wait
here for an item not produced yet (a driver thread in ``next``, a worker's request), and
watchers (``ember.wait``) for the next item or the end. Dropping the generator's last
reference frees the items left and stops the producer (``close_generator``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ember.core import _serialization as ser
from ember.core.local._records import _Generator, _Work, _Worker
from ember.core.local._store import ObjectTable

Deliver = Callable[[int | None], None]


class Streams:
    """The scheduler's generators, by generator id."""

    def __init__(self, store: ObjectTable, ids: Iterator[int],
                 send: Callable[[_Worker, Any], None], workers: dict[int, _Worker]) -> None:
        self._store = store
        self._ids = ids
        self._send = send
        self._workers = workers  # the scheduler's live workers (an alias)
        self.gens: dict[int, _Generator] = {}

    # -- the generator's life ------------------------------------------------------------------
    def open(self, gen_id: int, work: _Work) -> None:
        """A new generator, with one reference: its caller's."""
        gen = self.gens[gen_id] = _Generator(work)
        gen.refs = 1

    def addref(self, gen_id: int) -> None:
        gen = self.gens.get(gen_id)
        if gen is not None:
            gen.refs += 1

    def release(self, gen_id: int) -> None:
        gen = self.gens.get(gen_id)
        if gen is not None:
            gen.refs -= 1
            if gen.refs <= 0:
                self._close(gen_id, gen)

    def attach(self, gen_id: int, worker: _Worker) -> None:
        """Its work was sent to ``worker``: acks and the close go there."""
        gen = self.gens.get(gen_id)
        if gen is not None:
            gen.worker = worker

    def produced(self, gen_id: int | None) -> int:
        gen = self.gens.get(gen_id) if gen_id is not None else None
        return 0 if gen is None else gen.produced

    def on_item(self, gen_id: int, index: int, stored: ser.Stored, is_error: bool) -> None:
        """The producer sent an item (or, with ``is_error``, failed)."""
        gen = self.gens.get(gen_id)
        if gen is None or gen.finished:
            self._store.discard_unowned(stored)
            return
        index = gen.produced
        gen.produced += 1
        oid = next(self._ids)
        self._store.new(oid, refs=1)  # held by the generator until the consumer takes it
        self._store.resolve(oid, stored, is_error)
        gen.items[index] = oid
        self._wake(gen)

    def finish(self, gen_id: int, error: ser.Stored | None) -> None:
        """Its work ended (with ``error`` as a last item when it failed)."""
        gen = self.gens.get(gen_id)
        if gen is not None:
            if error is not None:
                self.on_item(gen_id, -1, error, True)
            gen.finished = True
            self._wake(gen)

    def cancel(self, gen_id: int, error: ser.Stored) -> None:
        """Its work was cancelled: ``error`` is its last item, unless it had ended already."""
        gen = self.gens.get(gen_id)
        if gen is not None and not gen.finished:
            self.on_item(gen_id, -1, error, True)
            gen.finished = True
            self._wake(gen)

    def end_all(self) -> None:
        """The runtime stops: every generator ends, so that nobody waits for an item."""
        for gen in self.gens.values():
            gen.finished = True
            self._wake(gen)

    def _close(self, gen_id: int, gen: _Generator) -> None:
        del self.gens[gen_id]
        for oid in gen.items.values():
            self._store.decref(oid)
        gen.items.clear()
        worker = gen.worker
        if not gen.finished and worker is not None and worker.uid in self._workers:
            self._send(worker, ("close_generator", gen_id))

    # -- consumers -------------------------------------------------------------------------------
    def take(self, gen_id: int, index: int, deliver: Deliver) -> bool:
        """Hand item ``index`` to ``deliver`` now (True) or once it is produced (False): the
        id of an object with one reference for the taker, or None after the last item."""
        gen = self.gens.get(gen_id)
        if gen is None:
            deliver(None)
            return True
        if index in gen.items or (gen.finished and index >= gen.produced):
            self._take_item(gen, index, deliver)
            return True
        gen.waiters.append((index, deliver))
        return False

    def forget(self, gen_id: int, deliver: Deliver) -> None:
        """The taker gave up waiting (a timeout)."""
        gen = self.gens.get(gen_id)
        if gen is not None:
            gen.waiters = [(i, d) for i, d in gen.waiters if d is not deliver]

    def _take_item(self, gen: _Generator, index: int, deliver: Deliver) -> None:
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

    def _wake(self, gen: _Generator) -> None:
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

    # -- ember.wait over objects and generators ----------------------------------------------
    def ready(self, entry: Any) -> bool:
        """Whether an object (its id) or a generator's next item (``(id, index)``) is ready."""
        if type(entry) is tuple:
            gen = self.gens.get(entry[0])
            return gen is None or gen.finished or entry[1] in gen.items
        return self._store.is_ready(entry)

    def watch(self, entries: list[Any], callback: Callable[[int], None],
              generators_only: bool = False) -> None:
        """Call ``callback`` when an object arrives, or a generator produces or ends (once)."""
        for entry in entries:
            if type(entry) is tuple:
                gen = self.gens.get(entry[0])
                if gen is not None and callback not in gen.watchers:
                    gen.watchers.append(callback)
            elif not generators_only:
                self._store.add_callback(entry, callback)

    def unwatch(self, entries: list[Any], callback: Callable[[int], None]) -> None:
        for entry in entries:
            if type(entry) is tuple:
                gen = self.gens.get(entry[0])
                if gen is not None and callback in gen.watchers:
                    gen.watchers.remove(callback)
            else:
                self._store.remove_callback((entry,), callback)
