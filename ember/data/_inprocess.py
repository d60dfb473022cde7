"""Reads run by threads of the consuming process, for plans that only read local files with
native code (``Read.in_process``) and are iterated here.

A read task run as a task copies its block into the object store, and the consumer copies it
again out of there; here pyarrow decodes each file in pieces of a few MiB (off the GIL, with its
own threads) and the pieces go straight to the consumer. A bounded queue keeps the readers at
most a few pieces ahead of it, so the memory touched stays small and is reused: on virtual
machines that hand memory back to the host, each fresh page costs a fault that a whole-file
block pays hundreds of thousands of times.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from ember.data import _block
from ember.data._iterator import put_until_stopped
from ember.data._plan import ReadTask

# Pieces waiting for the consumer, beyond those it holds: enough to keep both readers busy.
QUEUE_PIECES = 4


class InProcessReads:
    """Runs read tasks on ``threads`` threads; ``arrivals`` hands over what they produced, as
    ``(key, item, size)``: a block (a piece) and its size in bytes, then the task's meta dict
    when it is done, or the exception it raised (size 0 for both)."""

    def __init__(self, threads: int) -> None:
        # Daemon threads of its own, not a ThreadPoolExecutor: the interpreter joins those at
        # exit, and a reader waiting for a consumer that left without closing its iterator
        # (``it = iter(ds.iter_batches()); next(it)`` in a script) would hang the exit.
        self._tasks: queue.SimpleQueue[tuple[Any, ReadTask] | None] = queue.SimpleQueue()
        self._arrivals: queue.Queue[tuple[Any, Any, int]] = queue.Queue(maxsize=QUEUE_PIECES)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, name=f"ember-data-read_{i}",
                                          daemon=True) for i in range(max(1, threads))]
        for thread in self._threads:
            thread.start()

    def submit(self, key: Any, task: ReadTask) -> None:
        self._tasks.put((key, task))

    def _serve(self) -> None:
        while not self._stop.is_set():
            work = self._tasks.get()
            if work is None or self._stop.is_set():
                return
            self._run(*work)

    def _run(self, key: Any, task: ReadTask) -> None:
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        rows = size = 0
        try:
            for block in (task.pieces or task.read)():
                piece = _block.size_bytes(block)
                rows += block.num_rows
                size += piece
                if not put_until_stopped(self._arrivals, (key, block, piece), self._stop):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put_until_stopped(self._arrivals, (key, exc, 0), self._stop)
            return
        meta = {"rows": rows, "bytes": size, "wall_s": time.perf_counter() - wall0,
                "cpu_s": time.thread_time() - cpu0}
        put_until_stopped(self._arrivals, (key, meta, 0), self._stop)

    def arrivals(self, timeout: float) -> list[tuple[Any, Any, int]]:
        """What arrived: waits up to ``timeout`` for the first item, then takes what is there."""
        try:
            items = [self._arrivals.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self._arrivals.get_nowait())
            except queue.Empty:
                return items

    def shutdown(self) -> None:
        """Stop: a reader ends at its next piece (a piece being decoded is finished first, off
        the consumer's thread), and what waited for the consumer is dropped."""
        self._stop.set()
        for _ in self._threads:
            self._tasks.put(None)  # wakes the threads waiting for work: they end
        while True:
            try:
                self._arrivals.get_nowait()
            except queue.Empty:
                return
