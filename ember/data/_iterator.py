"""Consuming a dataset: blocks, batches, rows and torch tensors, with prefetching.

With ``prefetch_batches > 0`` a background thread drives the executor and fetches blocks into a
bounded queue, so the next blocks are on their way while the loop body runs; the bound keeps it
consumer-paced (a full queue stops the thread, which stops the executor starting new work).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import ember
from ember.data import _block
from ember.data._block import Batcher, Block
from ember.data._plan import Bundle

_DONE = object()


def _fetch_bundle(bundle: Bundle) -> Block:
    block: Block = ember.get(bundle.ref)
    return block


def blocks_of(bundles: Iterator[Any], prefetch_blocks: int,
              fetch: Callable[[Any], Block] = _fetch_bundle) -> Iterator[Block]:
    """The blocks of ``bundles`` (each turned into a block by ``fetch``), ``prefetch_blocks``
    ahead of the consumer."""
    if prefetch_blocks <= 0:
        try:
            for bundle in bundles:
                yield fetch(bundle)
        finally:
            close = getattr(bundles, "close", None)
            if close is not None:
                close()
        return
    buffer: queue.Queue[Any] = queue.Queue(maxsize=prefetch_blocks)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for bundle in bundles:
                if not put(("block", fetch(bundle))):
                    break
        except BaseException as exc:  # handed to the consumer, raised in its thread
            put(("error", exc))
        else:
            put(("done", None))
        finally:
            close = getattr(bundles, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="ember-data-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = buffer.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


def iter_batches(
    blocks: Iterator[Block], *, batch_size: int | None, batch_format: str | None,
    drop_last: bool = False,
    collate: Callable[[Any], Any] | None = None,
) -> Iterator[Any]:
    fmt = _block.check_batch_format(batch_format)
    batcher = Batcher(batch_size, drop_last=drop_last)
    for block in blocks:
        for piece in batcher.add(block):
            batch = _block.block_to_batch(piece, fmt)
            yield collate(batch) if collate is not None else batch
    for piece in batcher.finish():
        batch = _block.block_to_batch(piece, fmt)
        yield collate(batch) if collate is not None else batch


def torch_collate(dtypes: Any, device: str | None) -> Callable[[Any], Any]:
    import torch

    def convert(batch: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, array in batch.items():
            if array.dtype == object:
                raise TypeError(
                    f"column {name!r} holds Python objects, which torch cannot hold; drop it "
                    "or convert it with map_batches first"
                )
            dtype = dtypes.get(name) if isinstance(dtypes, dict) else dtypes
            tensor = torch.as_tensor(array, dtype=dtype)
            out[name] = tensor.to(device) if device else tensor
        return out

    return convert


class BatchIteration:
    """Row, batch and torch-batch iteration over ``_blocks``: shared by ``Dataset`` and by the
    ``DataIterator`` shards of ``streaming_split``."""

    def _blocks(self, prefetch_blocks: int) -> Iterator[Any]:
        raise NotImplementedError

    def iter_batches(self, *, batch_size: int | None = 256, batch_format: str | None = "default",
                     prefetch_batches: int = 1, drop_last: bool = False) -> Iterator[Any]:
        """Batches of ``batch_size`` rows (the last may be short unless ``drop_last``)."""
        return iter_batches(self._blocks(prefetch_batches), batch_size=batch_size,
                            batch_format=batch_format, drop_last=drop_last)

    def iter_torch_batches(self, *, batch_size: int | None = 256, dtypes: Any = None,
                           device: str | None = None, prefetch_batches: int = 1,
                           drop_last: bool = False) -> Iterator[dict[str, Any]]:
        """Batches as ``dict[str, torch.Tensor]``."""
        return iter_batches(
            self._blocks(prefetch_batches), batch_size=batch_size, batch_format="numpy",
            drop_last=drop_last, collate=torch_collate(dtypes, device))

    def iter_rows(self, *, prefetch_blocks: int = 1) -> Iterator[dict[str, Any]]:
        from ember.data import _block

        for block in self._blocks(prefetch_blocks):
            yield from _block.iter_rows(block)
