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
from ember.data._block import Batcher, Block, ShufflingBatcher
from ember.data._plan import Bundle, InProcessBlock, fetch

_DONE = object()


def _fetch_bundle(bundle: Bundle) -> Block:
    return fetch(bundle.ref)


def fetch_owned(bundle: Bundle) -> tuple[Block, bool]:
    """A bundle's block, and whether its buffers are this consumer's alone: a block read in
    this process, where a block from the store may be shared (``Batcher.add``'s ``owned``)."""
    return fetch(bundle.ref), isinstance(bundle.ref, InProcessBlock)


def put_until_stopped(buffer: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item`` into the bounded ``buffer``, waiting for room until ``stop`` is set;
    whether it went in (a producer thread's hand-off to a consumer that may leave)."""
    while not stop.is_set():
        try:
            buffer.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def blocks_of(bundles: Iterator[Any], prefetch_blocks: int,
              fetch: Callable[[Any], Any] = _fetch_bundle) -> Iterator[Any]:
    """The blocks of ``bundles`` (each turned into a block, or what ``fetch`` makes of it),
    ``prefetch_blocks`` ahead of the consumer."""
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
        return put_until_stopped(buffer, item, stop)

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
        request_stop = getattr(bundles, "request_stop", None)
        if request_stop is not None:  # the producer may be waiting inside the executor
            request_stop()
        thread.join()


def iter_batches(
    blocks: Iterator[tuple[Block, bool]], *, batch_size: int | None, batch_format: str | None,
    drop_last: bool = False,
    collate: Callable[[Any], Any] | None = None,
    local_shuffle_buffer_size: int | None = None,
    local_shuffle_seed: int | None = None,
) -> Iterator[Any]:
    fmt = _block.check_batch_format(batch_format)
    batcher: Batcher | ShufflingBatcher
    if local_shuffle_buffer_size is not None:
        batcher = ShufflingBatcher(batch_size, local_shuffle_buffer_size,
                                   seed=local_shuffle_seed, drop_last=drop_last)
    else:
        batcher = Batcher(batch_size, drop_last=drop_last)
    for block, owned in blocks:  # owned: see fetch_owned
        for piece in batcher.add(block, owned):
            batch = _block.block_to_batch(piece, fmt, owned=batcher.owned)
            yield collate(batch) if collate is not None else batch
    for piece in batcher.finish():
        batch = _block.block_to_batch(piece, fmt, owned=batcher.owned)
        yield collate(batch) if collate is not None else batch


def resolve_device(device: Any) -> Any:
    """Ray's ``device="auto"``: this process's GPU when it was given one (a task or actor that
    asked for ``num_gpus``) and CUDA is there, else ``None`` (tensors stay on the CPU)."""
    if not (isinstance(device, str) and device == "auto"):
        return device
    import torch

    if ember.get_runtime_context().get_accelerator_ids().get("GPU") and (
            torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device())
    return None


def to_device(value: Any, device: Any) -> Any:
    """``value`` (a tensor, or a dict, list or tuple of them) moved to ``device``."""
    if device is None:
        return value
    if hasattr(value, "to") and callable(value.to):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


def torch_collate(dtypes: Any, device: Any) -> Callable[[Any], Any]:
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
            out[name] = tensor.to(device) if device is not None else tensor
        return out

    return convert


def prefetch_ahead(prefetch_batches: int, prefetch_blocks: int | None) -> int:
    """How many blocks to fetch ahead: ``prefetch_batches``, or Ray 2.5's ``prefetch_blocks``
    when that is given instead."""
    if prefetch_blocks is None:
        return prefetch_batches
    if isinstance(prefetch_blocks, bool) or not isinstance(prefetch_blocks, int) or (
            prefetch_blocks < 0):
        raise ValueError(f"prefetch_blocks={prefetch_blocks!r} must be an int >= 0")
    if prefetch_batches not in (1, prefetch_blocks):  # 1: the default, not given
        raise ValueError(f"prefetch_batches={prefetch_batches} and prefetch_blocks="
                         f"{prefetch_blocks} disagree; pass prefetch_batches only (Ray's "
                         "current name)")
    return prefetch_blocks


class BatchIteration:
    """Row, batch and torch-batch iteration over ``_blocks``: shared by ``Dataset`` and by the
    ``DataIterator`` shards of ``streaming_split``."""

    def _blocks(self, prefetch_blocks: int) -> Iterator[Any]:
        raise NotImplementedError

    def _owned_blocks(self, prefetch_blocks: int) -> Iterator[tuple[Block, bool]]:
        """``_blocks``, each with whether its buffers are this consumer's alone."""
        return ((block, False) for block in self._blocks(prefetch_blocks))

    def iter_batches(self, *, batch_size: int | None = 256, batch_format: str | None = "default",
                     prefetch_batches: int = 1, drop_last: bool = False,
                     local_shuffle_buffer_size: int | None = None,
                     local_shuffle_seed: int | None = None,
                     prefetch_blocks: int | None = None) -> Iterator[Any]:
        """Batches of ``batch_size`` rows (the last may be short unless ``drop_last``).
        ``prefetch_batches`` (Ray 2.5: ``prefetch_blocks``) blocks are fetched ahead.

        ``local_shuffle_buffer_size=n``: each batch is drawn at random from a buffer of at least
        ``n`` rows (``n >= batch_size``), so rows are shuffled beyond block boundaries without a
        global shuffle; ``local_shuffle_seed`` makes the draw repeatable for the same order of
        blocks."""
        if local_shuffle_buffer_size is not None:  # checked now, not at the first batch
            ShufflingBatcher(batch_size, local_shuffle_buffer_size)
        prefetch_batches = prefetch_ahead(prefetch_batches, prefetch_blocks)
        return iter_batches(self._owned_blocks(prefetch_batches), batch_size=batch_size,
                            batch_format=batch_format, drop_last=drop_last,
                            local_shuffle_buffer_size=local_shuffle_buffer_size,
                            local_shuffle_seed=local_shuffle_seed)

    def iter_torch_batches(self, *, batch_size: int | None = 256, dtypes: Any = None,
                           device: Any = "auto",
                           collate_fn: Callable[[dict[str, Any]], Any] | None = None,
                           prefetch_batches: int = 1, drop_last: bool = False,
                           local_shuffle_buffer_size: int | None = None,
                           local_shuffle_seed: int | None = None,
                           prefetch_blocks: int | None = None) -> Iterator[Any]:
        """Batches as ``dict[str, torch.Tensor]``, on ``device`` (``"auto"``: this process's GPU
        when it was given one, else the CPU; ``prefetch_blocks``: as in ``iter_batches``).

        ``collate_fn`` replaces the conversion: it gets each batch as ``dict[str, np.ndarray]``
        and returns what the loop wants (a tensor, or a dict, list or tuple of tensors, which
        are then moved to ``device``); ``dtypes`` cannot be combined with it. Shuffling as in
        ``iter_batches``."""
        if collate_fn is not None and dtypes is not None:
            raise ValueError("iter_torch_batches: pass dtypes= or collate_fn=, not both (set "
                             "the dtypes inside collate_fn)")
        if local_shuffle_buffer_size is not None:
            ShufflingBatcher(batch_size, local_shuffle_buffer_size)
        prefetch_batches = prefetch_ahead(prefetch_batches, prefetch_blocks)
        target = resolve_device(device)
        collate: Callable[[Any], Any]
        if collate_fn is None:
            collate = torch_collate(dtypes, target)
        else:
            def collate(batch: dict[str, Any]) -> Any:
                return to_device(collate_fn(batch), target)
        return iter_batches(
            self._owned_blocks(prefetch_batches), batch_size=batch_size, batch_format="numpy",
            drop_last=drop_last, collate=collate,
            local_shuffle_buffer_size=local_shuffle_buffer_size,
            local_shuffle_seed=local_shuffle_seed)

    def iter_rows(self, *, prefetch_blocks: int = 1) -> Iterator[dict[str, Any]]:
        """Rows one at a time, as dicts of column name to value.

        >>> sorted(row["id"] for row in ember.data.range(3).iter_rows())
        [0, 1, 2]
        """
        from ember.data import _block

        for block in self._blocks(prefetch_blocks):
            yield from _block.iter_rows(block)

    def to_torch(self, *, label_column: str | None = None, feature_columns: Any = None,
                 label_column_dtype: Any = None, feature_column_dtypes: Any = None,
                 batch_size: int = 1, prefetch_batches: int = 1,
                 prefetch_blocks: int | None = None, drop_last: bool = False,
                 local_shuffle_buffer_size: int | None = None,
                 local_shuffle_seed: int | None = None, unsqueeze_label_tensor: bool = True,
                 unsqueeze_feature_tensors: bool = True) -> Any:
        """A ``torch.utils.data.IterableDataset`` of ``(features, label)`` per batch of
        ``batch_size`` rows (Ray 2.5's ``to_torch``). ``label`` is the ``label_column``
        tensor, ``(N, 1)`` (``(N,)`` without ``unsqueeze_label_tensor``), or ``None`` without
        a label column. ``features``: for a list of names (default: every column but the
        label), one ``(N, n)`` tensor; for a list of lists, a list of such tensors; for a dict
        of lists, a dict of them. ``*_dtype(s)``: torch dtypes (a list or dict to match the
        groups). Each iteration runs the dataset again.

        >>> ds = ember.data.from_items([{"x": 1.0, "y": 2.0, "label": 0}])
        >>> features, label = next(iter(ds.to_torch(label_column="label")))
        >>> tuple(features.shape), tuple(label.shape)
        ((1, 2), (1, 1))
        """
        from ember.data import _export

        convert = _export.features_and_label(
            label_column, feature_columns, label_column_dtype, feature_column_dtypes,
            unsqueeze_label_tensor, unsqueeze_feature_tensors)
        ahead = prefetch_ahead(prefetch_batches, prefetch_blocks)

        def batches() -> Iterator[dict[str, Any]]:
            return self.iter_batches(batch_size=batch_size, batch_format="numpy",
                                     prefetch_batches=ahead, drop_last=drop_last,
                                     local_shuffle_buffer_size=local_shuffle_buffer_size,
                                     local_shuffle_seed=local_shuffle_seed)

        return _export.torch_dataset(batches, convert)
