"""``Dataset.streaming_split``: ``n`` iterators over ONE streaming execution.

A coordinator actor runs the executor and hands out block references on request; each block
goes to exactly one consumer. The iterators are small picklable handles, so each can travel to
a different process (a train worker gets one in its actor). Which consumer gets which rows is
decided by ``SplitState``, a pure policy (no actors, no clocks), tested directly.

Epochs follow Ray: every ``iter_*`` call on an iterator starts its next epoch. The first epoch
starts as soon as any consumer asks; a later one starts once all ``n`` consumers have asked for
it (each finished or abandoned the previous one), so the others wait until then. When every
consumer is done with an epoch, the executor of that epoch is shut down (its tasks and pool
actors are released); the coordinator itself goes when the last iterator holding it does.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import ember
from ember.data import _iterator
from ember.data._block import Block
from ember.data._context import DataContext
from ember.data._plan import Node

if TYPE_CHECKING:
    import pyarrow as pa

    from ember.data._dataset import Dataset, MaterializedDataset
    from ember.data._stats import DatasetStats

Slice = tuple[Any, int, int]  # (block ref, first row, number of rows)


class SplitState:
    """Who gets which rows. Blocks come in with ``add`` (from the executor) and go out with
    ``take`` (to a consumer); ``finish`` says the executor is exhausted.

    ``equal=False``: a block goes to the consumer that asked for it (fast consumers get more).
    ``equal=True``: a block is assigned to the consumer with the fewest rows so far; a consumer
    is handed rows only up to the fewest any consumer was assigned, which never exceeds the final
    share ``total // n``. At the end the excess of the consumers over their share (never handed
    out yet) moves to those under it; the remainder (< n rows) is dropped.
    """

    def __init__(self, n: int, equal: bool) -> None:
        self.n = n
        self.equal = equal
        self.buffers: list[deque[Slice]] = [deque() for _ in range(n)]
        self.assigned = [0] * n
        self.delivered = [0] * n
        self.exhausted = False
        self.share: int | None = None

    def add(self, ref: Any, rows: int, requester: int) -> None:
        if rows <= 0:
            return
        target = requester
        if self.equal:
            fewest = min(self.assigned)
            if self.assigned[requester] != fewest:
                target = self.assigned.index(fewest)
        self.buffers[target].append((ref, 0, rows))
        self.assigned[target] += rows

    def take(self, consumer: int) -> Slice | None:
        """The next slice for ``consumer``; ``None`` when it has none now (after ``finish``:
        none ever again)."""
        buffer = self.buffers[consumer]
        if not buffer:
            return None
        if not self.equal:
            return buffer.popleft()
        cap = self.share if self.share is not None else min(self.assigned)
        room = cap - self.delivered[consumer]
        if room <= 0:
            return None
        ref, start, rows = buffer.popleft()
        if rows > room:
            buffer.appendleft((ref, start + room, rows - room))
            rows = room
        self.delivered[consumer] += rows
        return ref, start, rows

    def finish(self) -> None:
        self.exhausted = True
        if not self.equal:
            return
        share = sum(self.assigned) // self.n
        spare: deque[Slice] = deque()
        for i in range(self.n):
            excess = self.assigned[i] - share
            while excess > 0:  # excess rows are never handed out (delivered <= share)
                ref, start, rows = self.buffers[i].pop()
                if rows > excess:
                    self.buffers[i].append((ref, start, rows - excess))
                    spare.append((ref, start + rows - excess, excess))
                    excess = 0
                else:
                    spare.append((ref, start, rows))
                    excess -= rows
            self.assigned[i] = min(self.assigned[i], share)
        for i in range(self.n):
            while self.assigned[i] < share:
                ref, start, rows = spare.popleft()
                need = share - self.assigned[i]
                if rows > need:
                    spare.appendleft((ref, start + need, rows - need))
                    rows = need
                self.buffers[i].append((ref, start, rows))
                self.assigned[i] += rows
        self.share = share


class SplitCoordinator:
    """The actor behind ``streaming_split``: runs the executor, one epoch at a time."""

    def __init__(self, plan: Node, context: DataContext, n: int, equal: bool) -> None:
        self._plan = plan
        self._ctx = context
        self._n = n
        self._equal = equal
        self._epoch = -1
        self._asked: dict[int, set[int]] = {}
        self._done: set[int] = set()
        self._bundles: Iterator[Any] | None = None
        self._state = SplitState(n, equal)
        self._error: BaseException | None = None

    def next(self, consumer: int, epoch: int) -> tuple[str, Slice | None]:
        """``("slice", s)``, ``("wait", None)`` (the epoch has not started: ask again) or
        ``("end", None)``. Raises the pipeline's exception to every consumer."""
        if epoch > self._epoch:
            asked = self._asked.setdefault(epoch, set())
            asked.add(consumer)
            if not (epoch == self._epoch + 1 and (self._epoch < 0 or len(asked) == self._n)):
                return "wait", None
            self._start(epoch)
        elif epoch < self._epoch:
            return "end", None
        if consumer in self._done:
            return "end", None
        while True:
            if self._error is not None:
                raise self._error
            piece = self._state.take(consumer)
            if piece is not None:
                return "slice", piece
            if self._state.exhausted or self._bundles is None:
                return "end", None
            try:
                bundle = next(self._bundles)
            except StopIteration:
                self._state.finish()
                self._close()
                continue
            except BaseException as exc:  # every consumer of the epoch sees it, not just one
                self._error = exc
                self._close()
                raise
            self._state.add(bundle.ref, bundle.meta.num_rows, consumer)

    def consumer_done(self, consumer: int, epoch: int) -> None:
        """``consumer`` stopped (finished or broke off) epoch ``epoch``; its undelivered rows
        go to nobody, and once all consumers are done the executor is shut down."""
        if epoch != self._epoch:
            return
        self._done.add(consumer)
        self._state.buffers[consumer].clear()
        if len(self._done) == self._n:
            self._close()

    def _start(self, epoch: int) -> None:
        from ember.data._executor import execute

        self._close()
        self._asked.pop(epoch, None)
        self._epoch = epoch
        self._done = set()
        self._error = None
        self._state = SplitState(self._n, self._equal)
        self._bundles, _ = execute(self._plan, self._ctx)

    def _close(self) -> None:
        bundles, self._bundles = self._bundles, None
        close = getattr(bundles, "close", None)
        if close is not None:
            close()  # the executor's finally: kills its pool actors, drops running tasks


class DataIterator(_iterator.BatchIteration):
    """One consumer's share of a ``streaming_split``; picklable, so it can be sent to another
    task or actor. Each ``iter_*`` call is one epoch (see the module docstring).

    >>> a, b = ember.data.range(100).streaming_split(2)
    >>> # in two different workers: for batch in a.iter_batches(batch_size=10): ...
    """

    def __init__(self, coordinator: Any, index: int, n: int) -> None:
        self._coordinator = coordinator
        self._index = index
        self._n = n
        self._epoch = 0

    def __repr__(self) -> str:
        return f"DataIterator(split {self._index} of {self._n})"

    def _blocks(self, prefetch_blocks: int) -> Iterator[Block]:
        epoch = self._epoch
        self._epoch += 1
        return self._epoch_blocks(epoch, max(0, prefetch_blocks))

    def _epoch_blocks(self, epoch: int, ahead: int) -> Iterator[Block]:
        # Prefetch by keeping ``ahead`` more requests queued at the coordinator, not with a
        # thread: inside a worker process only the thread that reads the socket may block on
        # the runtime while the main thread is busy elsewhere.
        pending: deque[Any] = deque()
        delay = 0.002
        try:
            while True:
                while len(pending) <= ahead:
                    pending.append(self._coordinator.next.remote(self._index, epoch))
                kind, piece = ember.get(pending.popleft())
                if kind == "end":
                    return
                if kind == "wait":  # the other consumers have not reached this epoch yet
                    time.sleep(delay)
                    delay = min(delay * 2, 0.1)
                    continue
                yield _fetch_slice(piece)
        finally:
            try:
                self._coordinator.consumer_done.remote(self._index, epoch)
            except Exception:  # the runtime is shutting down: there is nothing to release
                pass



class WholeDatasetIterator(DataIterator):
    """``Dataset.iterator()``: a ``DataIterator`` whose every ``iter_*`` call runs the
    dataset."""

    def __init__(self, dataset: Dataset) -> None:
        self._dataset = dataset

    def __repr__(self) -> str:
        return f"DataIterator({self._dataset!r})"

    def _blocks(self, prefetch_blocks: int) -> Iterator[Block]:
        return self._dataset._blocks(prefetch_blocks)

    def _owned_blocks(self, prefetch_blocks: int) -> Iterator[tuple[Block, bool]]:
        return self._dataset._owned_blocks(prefetch_blocks)

    def stats(self) -> DatasetStats:
        """The stats of the dataset's last execution."""
        return self._dataset.stats()

    def schema(self) -> pa.Schema | None:
        """The dataset's schema."""
        return self._dataset.schema()

    def materialize(self) -> MaterializedDataset:
        """The dataset, materialized."""
        return self._dataset.materialize()


def _fetch_slice(piece: Slice) -> Block:
    ref, start, rows = piece
    block: Block = ember.get(ref)
    if start == 0 and rows == block.num_rows:
        return block
    return block.slice(start, rows)


def streaming_split(plan: Node, n: int, equal: bool,
                    locality_hints: list[Any] | None) -> list[DataIterator]:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"streaming_split(n={n!r}) needs an int >= 1")
    if locality_hints is not None and len(locality_hints) != n:
        raise ValueError(f"locality_hints has {len(locality_hints)} entries; it needs one per "
                         f"split (n={n}), or leave it out")
    # locality_hints are accepted for Ray compatibility; every block is on this node's store.
    actor = ember.remote(SplitCoordinator).options(num_cpus=0)
    coordinator = actor.remote(plan, DataContext.get_current(), n, equal)
    return [DataIterator(coordinator, i, n) for i in range(n)]
