"""Blocks handed over elsewhere: ObjectRefs of NumPy or pandas batches (converted where the
blocks are, in tasks), custom sinks (``write_datasink``, ``write_datasource``), and a torch
``IterableDataset`` of ``(features, label)`` tensors (Ray 2.5's ``to_torch``).

``Exports`` holds the ``Dataset`` methods of this concern; ``Dataset`` inherits them."""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

import ember
from ember.data import _block, _write
from ember.data._block import Block
from ember.data._options import IOOptions
from ember.data._plan import Bundle, InputBlocks, Node, fetch, input_files


@ember.remote
def block_to_numpy(block: Block, column: str | None) -> Any:
    """The block as ``{column: ndarray}``, or one column's ndarray."""
    if column is None:
        return _block.block_to_batch(block, "numpy")
    if column not in block.column_names:
        raise ValueError(f"to_numpy_refs(column={column!r}): no such column; the dataset has "
                         f"{block.column_names}")
    return _block.column_to_numpy(block.column(column))


@ember.remote
def block_to_pandas(block: Block) -> Any:
    return block.to_pandas()


def _tensor(batch: dict[str, Any], columns: list[str], dtype: Any, unsqueeze: bool) -> Any:
    """``columns`` of ``batch`` side by side in one tensor: ``(N, len(columns))`` for scalar
    columns (``(N,)`` for one column when not ``unsqueeze``)."""
    import torch

    missing = [c for c in columns if c not in batch]
    if missing:
        raise ValueError(f"to_torch: columns {missing} not found; the dataset has "
                         f"{list(batch)}")
    tensors = []
    for column in columns:
        array = batch[column]
        if array.dtype == object:
            raise TypeError(f"to_torch: column {column!r} holds Python objects, which torch "
                            "cannot hold; leave it out of feature_columns")
        tensor = torch.as_tensor(array, dtype=dtype)
        tensors.append(tensor.unsqueeze(1) if unsqueeze and tensor.ndim == 1 else tensor)
    if len(tensors) == 1:
        return tensors[0]
    if all(t.ndim == 1 for t in tensors):
        return torch.stack(tensors, dim=1)
    return torch.cat(tensors, dim=1)


def features_and_label(label_column: str | None, feature_columns: Any,
                       label_column_dtype: Any, feature_column_dtypes: Any,
                       unsqueeze_label_tensor: bool, unsqueeze_feature_tensors: bool
                       ) -> Callable[[dict[str, Any]], tuple[Any, Any]]:
    """The conversion of a NumPy batch into Ray's ``(features, label)``: ``feature_columns``
    a list of names (one tensor), a list of lists (a list of tensors) or a dict of lists (a
    dict of tensors); ``None``: every column but the label, as one tensor."""
    if isinstance(feature_columns, (list, tuple)) and feature_columns and all(
            isinstance(c, (list, tuple)) for c in feature_columns):
        groups: Any = [list(c) for c in feature_columns]
        dtypes: Any = (list(feature_column_dtypes) if isinstance(
            feature_column_dtypes, (list, tuple)) else [feature_column_dtypes] * len(groups))
        if len(dtypes) != len(groups):
            raise ValueError(f"to_torch: feature_column_dtypes has {len(dtypes)} entries for "
                             f"{len(groups)} groups of feature_columns")
    elif isinstance(feature_columns, dict):
        groups = {k: list(v) for k, v in feature_columns.items()}
        dtypes = (dict(feature_column_dtypes) if isinstance(feature_column_dtypes, dict)
                  else dict.fromkeys(groups, feature_column_dtypes))
    elif feature_columns is None or (isinstance(feature_columns, (list, tuple)) and all(
            isinstance(c, str) for c in feature_columns)):
        groups = None if feature_columns is None else list(feature_columns)
        dtypes = feature_column_dtypes
    else:
        raise TypeError(f"to_torch: feature_columns={feature_columns!r} must be a list of "
                        "column names, a list of such lists, or a dict of such lists")

    def convert(batch: dict[str, Any]) -> tuple[Any, Any]:
        label = None
        if label_column is not None:
            label = _tensor(batch, [label_column], label_column_dtype, unsqueeze_label_tensor)
        u = unsqueeze_feature_tensors
        if groups is None:
            features = _tensor(batch, [c for c in batch if c != label_column], dtypes, u)
        elif isinstance(groups, dict):
            features = {k: _tensor(batch, cols, dtypes.get(k), u) for k, cols in groups.items()}
        elif groups and isinstance(groups[0], list):
            features = [_tensor(batch, cols, dt, u) for cols, dt in zip(groups, dtypes,
                                                                          strict=True)]
        else:
            features = _tensor(batch, groups, dtypes, u)
        return features, label

    return convert


def torch_dataset(batches: Callable[[], Iterator[dict[str, Any]]],
                  convert: Callable[[dict[str, Any]], tuple[Any, Any]]) -> Any:
    """A ``torch.utils.data.IterableDataset`` whose every iteration converts ``batches()``."""
    import torch.utils.data

    class _TorchIterable(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
        """Ray's ``to_torch`` dataset: ``(features, label)`` per batch; iterate it directly
        (each iteration runs the dataset again)."""

        def __iter__(self) -> Iterator[tuple[Any, Any]]:
            for batch in batches():
                yield convert(batch)

    return _TorchIterable()


def _write_with_args(datasource: Any, write_args: dict[str, Any], blocks: list[Block],
                     ctx: Any) -> Any:
    return datasource.write(blocks, ctx, **write_args)


class Exports:
    """The ``Dataset`` methods that hand its blocks over: what it read, its size, its blocks
    as ObjectRefs in other shapes, and writes to custom sinks."""

    _plan: Node

    def _bundles(self, *, ordered: bool = False, in_process: bool = False
                 ) -> Iterator[Bundle]:
        raise NotImplementedError

    def schema(self) -> pa.Schema | None:
        raise NotImplementedError

    def input_files(self) -> list[str]:
        """The files the dataset's reads read (each once, in plan order; none for datasets
        made from memory). Runs nothing.

        >>> ember.data.range(3).input_files()
        []
        """
        return input_files(self._plan)

    def size_bytes(self) -> int:
        """The in-memory size of the blocks, in bytes (runs the plan unless the dataset is
        materialized)."""
        if isinstance(self._plan, InputBlocks):
            return sum(b.meta.size_bytes for b in self._plan.bundles)
        return sum(b.meta.size_bytes for b in self._bundles())

    def _ordered_refs(self) -> list[Any]:
        if isinstance(self._plan, InputBlocks):
            return [b.ref for b in self._plan.bundles]
        return [b.ref for b in sorted(self._bundles(), key=lambda bundle: bundle.seq)]

    def get_internal_block_refs(self) -> list[Any]:
        """The ``ObjectRef`` of every block (a ``pyarrow.Table`` each), in the dataset's
        order."""
        return self._ordered_refs()

    def to_numpy_refs(self, *, column: str | None = None) -> list[Any]:
        """An ``ObjectRef`` per block of its rows as NumPy: ``{column: ndarray}``, or with
        ``column``, that column's ndarray (converted in tasks, where the blocks are).

        >>> ember.get(ember.data.range(4, override_num_blocks=2).to_numpy_refs(column="id"))
        [array([0, 1]), array([2, 3])]
        """
        return [block_to_numpy.remote(ref, column) for ref in self._ordered_refs()]

    def to_pandas_refs(self) -> list[Any]:
        """An ``ObjectRef`` per block of its rows as a ``pandas.DataFrame`` (converted in
        tasks)."""
        return [block_to_pandas.remote(ref) for ref in self._ordered_refs()]

    def _run_sink(self, write: Callable[..., Any], op_name: str, *,
                  ray_remote_args: dict[str, Any] | None, concurrency: int | None,
                  min_rows: int | None,
                  on_first: Callable[[pa.Schema | None], None] | None = None
                  ) -> tuple[list[Any], int, int]:
        num_cpus, options = IOOptions(ray_remote_args=ray_remote_args,
                                      concurrency=concurrency).task_args(op_name)
        bundles = self._bundles(ordered=True)
        try:
            stream: Iterator[Bundle] = bundles
            if on_first is not None:  # called with the schema of the first block, as in Ray
                first = next(bundles, None)
                on_first(None if first is None else fetch(first.ref).schema)
                stream = iter(() if first is None else itertools.chain([first], bundles))
            return _write.run_sink(stream, write, op_name, num_cpus=num_cpus,
                                   options=options, concurrency=concurrency,
                                   min_rows=min_rows)
        finally:
            bundles.close()  # type: ignore[attr-defined]

    def write_datasink(self, datasink: Any, *, ray_remote_args: dict[str, Any] | None = None,
                       concurrency: int | None = None) -> None:
        """Write to a custom ``ember.data.Datasink``: ``on_write_start`` on the driver once
        the first block is ready (with its schema), then ``datasink.write(blocks, ctx)`` in
        write tasks (at most ``concurrency`` at once, started with ``ray_remote_args``) as
        the dataset streams, then ``on_write_complete(WriteResult)``; if anything fails,
        ``on_write_failed(error)`` and the error is raised."""
        from ember.data.datasource import Datasink, WriteResult

        if not isinstance(datasink, Datasink):
            raise TypeError(f"write_datasink takes an ember.data.Datasink, got {datasink!r}; "
                            "for a Datasource with write()/do_write() use write_datasource")
        start = datasink.on_write_start

        def on_first(schema: pa.Schema | None) -> None:
            if inspect.signature(start).parameters:
                start(schema)
            else:  # the older callback without a schema
                start()

        try:
            returns, rows, size = self._run_sink(
                datasink.write, f"Write{datasink.get_name()}", ray_remote_args=ray_remote_args,
                concurrency=concurrency, min_rows=datasink.min_rows_per_write,
                on_first=on_first)
            datasink.on_write_complete(WriteResult(rows, size, returns))
        except Exception as exc:
            datasink.on_write_failed(exc)
            raise

    def write_datasource(self, datasource: Any, *,
                         ray_remote_args: dict[str, Any] | None = None,
                         **write_args: Any) -> None:
        """Write to a Ray 2.5 ``Datasource`` that writes: its ``write(blocks, ctx,
        **write_args)`` runs in write tasks (or, if it has only the older
        ``do_write(block_refs, metadata, ray_remote_args, **write_args)``, that runs on the
        driver and returns ObjectRefs of results); then ``on_write_complete(results,
        **write_args)``, or on failure ``on_write_failed(refs, error, **write_args)``."""
        cls = type(datasource)
        writes = callable(getattr(cls, "write", None))
        if not writes and not callable(getattr(cls, "do_write", None)):
            raise TypeError(f"write_datasource: {cls.__name__} has no write(blocks, ctx, "
                            "**write_args) (nor the older do_write); implement one, or "
                            "subclass ember.data.Datasink and call write_datasink")
        refs: list[Any] = []
        try:
            if writes:
                results, _, _ = self._run_sink(
                    functools.partial(_write_with_args, datasource, write_args),
                    "Write", ray_remote_args=ray_remote_args, concurrency=None, min_rows=None)
            else:
                from ember.data.block import BlockMetadata

                bundles = list(self._bundles(ordered=True))
                metadata = [BlockMetadata(num_rows=b.meta.num_rows,
                                          size_bytes=b.meta.size_bytes) for b in bundles]
                refs = list(datasource.do_write([b.ref for b in bundles], metadata,
                                                dict(ray_remote_args or {}), **write_args))
                results = ember.get(refs)
        except Exception as exc:
            failed = getattr(datasource, "on_write_failed", None)
            if failed is not None:
                failed(refs, exc, **write_args)
            raise
        complete = getattr(datasource, "on_write_complete", None)
        if complete is not None:
            complete(results, **write_args)
