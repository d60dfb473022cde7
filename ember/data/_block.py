"""Blocks (``pyarrow.Table``), batches and rows: conversions, with strict schemas.

Every block has named columns. A UDF's output becomes a block here, and anything without
columns raises ``StrictModeError`` saying what to return instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal, TypeAlias

import numpy as np
import pyarrow as pa

from ember.errors import EmberError

Block: TypeAlias = pa.Table
BatchFormat = Literal["numpy", "pandas", "pyarrow"]
BATCH_FORMATS = ("numpy", "pandas", "pyarrow", "default")

TENSOR_COLUMN_NOTE = "multi-dimensional arrays are stored as fixed-shape tensor columns"


class StrictModeError(EmberError, ValueError):
    """A UDF or a constructor produced data without named columns."""


def check_batch_format(batch_format: str | None) -> BatchFormat:
    # "native": Ray 2.5's older name of "default" (renamed since; 2.5 still took it).
    if batch_format in (None, "default", "native"):
        return "numpy"
    if batch_format not in BATCH_FORMATS:
        raise ValueError(
            f"unknown batch_format {batch_format!r} (known: 'default', 'numpy', 'pandas', "
            "'pyarrow')"
        )
    return batch_format  # type: ignore[return-value]


# -- columns ------------------------------------------------------------------------------------
# Numbers cross between numpy and Arrow here by their buffers, not by pa.array/to_numpy: those
# two import pandas on first use (pyarrow checks for pandas objects), 0.2 s and ~40 MiB in
# every process that touches a batch, for nothing pandas does.
def _numbers_from_numpy(values: np.ndarray) -> pa.Array:
    """A 1-D numpy array of numbers as an Arrow array over the same memory (contiguous) or a
    contiguous copy."""
    values = np.ascontiguousarray(values)
    if values.dtype.byteorder == ">":  # Arrow is little-endian
        values = values.astype(values.dtype.newbyteorder("<"))
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values),
                                 [None, pa.py_buffer(values)])


def _is_numbers(dtype: np.dtype) -> bool:
    return dtype.kind in "iuf" and dtype.itemsize in (1, 2, 4, 8)


def _array_from_numpy(values: np.ndarray) -> pa.Array:
    if values.ndim > 1:
        flat = np.ascontiguousarray(values).reshape(-1)
        storage_type = pa.from_numpy_dtype(values.dtype)
        tensor_type = pa.fixed_shape_tensor(storage_type, list(values.shape[1:]))
        storage = pa.FixedSizeListArray.from_arrays(
            _numbers_from_numpy(flat) if _is_numbers(flat.dtype)
            else pa.array(flat, type=storage_type), int(np.prod(values.shape[1:]))
        )
        return pa.ExtensionArray.from_storage(tensor_type, storage)
    if values.dtype == object:
        return pa.array(list(values))
    if values.ndim == 1 and _is_numbers(values.dtype):
        return _numbers_from_numpy(values)
    return pa.array(values)


def _column(values: Any) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    if isinstance(values, np.ndarray):
        return _array_from_numpy(values)
    if hasattr(values, "to_numpy") and hasattr(values, "dtype"):  # pandas Series, torch Tensor
        return _array_from_numpy(np.asarray(values.to_numpy()))
    if hasattr(values, "numpy") and hasattr(values, "shape"):  # torch.Tensor
        return _array_from_numpy(values.detach().cpu().numpy())
    values = list(values)
    if values and isinstance(values[0], np.ndarray) and values[0].ndim >= 1:
        shapes = {v.shape for v in values}
        if len(shapes) == 1:
            return _array_from_numpy(np.stack(values))
    return pa.array(values)


def column_to_numpy(column: pa.ChunkedArray | pa.Array, owned: bool = False) -> np.ndarray:
    """``column`` as a numpy array: a view of its data where Arrow allows (read-only), else a
    copy. ``owned``: the column's buffers are the caller's alone (a block read in this process
    and handed to one consumer), so a view of a mutable buffer may be writable."""
    if isinstance(column, pa.ChunkedArray):
        if isinstance(column.type, pa.FixedShapeTensorType):
            if column.num_chunks == 0:
                return np.empty((0, *column.type.shape), dtype=column.type.value_type.to_pandas_dtype())
            return np.concatenate([c.to_numpy_ndarray() for c in column.chunks])
        # One chunk (a batch cut from a block usually lies in one): use it as it is, since
        # combine_chunks would copy it, and block_to_batch copies again for a writable batch.
        # Several: the combined array is a fresh one, ours alone.
        owned = owned or column.num_chunks > 1
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    # pyarrow has no type hints: name what its conversions return.
    if isinstance(column.type, pa.FixedShapeTensorType):
        tensors: np.ndarray = column.to_numpy_ndarray()
        return tensors
    numbers = _numbers_view(column, owned)
    if numbers is not None:
        return numbers
    try:  # the rest (strings, nulls, dates...) is no view of Arrow's memory that can be written
        values: np.ndarray = column.to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, NotImplementedError):
        return np.array(column.to_pylist(), dtype=object)
    return values


_NUMBERS = {pa.from_numpy_dtype(np.dtype(name)).id: np.dtype(name) for name in (
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
    "float32", "float64")}


def _numbers_view(array: pa.Array, owned: bool) -> np.ndarray | None:
    """A view of ``array``'s data when it is numbers without nulls (None otherwise): writable
    only where ``owned`` and Arrow's buffer is, read-only otherwise (as ``to_numpy`` gives)."""
    dtype = _NUMBERS.get(array.type.id)
    if dtype is None or array.null_count:
        return None
    data = array.buffers()[1]
    if data is None:
        return None
    # np.ndarray over the buffer: half np.frombuffer's cost (this runs per column per batch)
    view: np.ndarray = np.ndarray((len(array),), dtype, data, array.offset * dtype.itemsize)
    if not (owned and data.is_mutable):
        view.setflags(write=False)  # Arrow's memory, maybe shared with other readers
    return view


def _strict(what: str, value: Any) -> StrictModeError:
    return StrictModeError(
        f"{what} returned a {type(value).__name__}, which has no column names. Datasets have "
        "named columns: return a dict of column name -> array (for example "
        "{'data': array}), a pandas.DataFrame or a pyarrow.Table"
    )


# -- batches ------------------------------------------------------------------------------------
def batch_to_block(batch: Any, *, what: str = "the function") -> Block:
    """A UDF's batch output as a block: dict of columns, DataFrame or Table; else StrictModeError."""
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, Mapping):
        if not batch:
            return pa.table({})
        for name in batch:
            if not isinstance(name, str):
                raise StrictModeError(
                    f"{what} returned a dict with a non-string key {name!r}; column names are "
                    "strings: return {'name': array, ...}"
                )
        columns = {name: _column(values) for name, values in batch.items()}
        lengths = {len(c) for c in columns.values()}
        if len(lengths) > 1:
            sizes = {name: len(c) for name, c in columns.items()}
            raise ValueError(
                f"{what} returned columns of different lengths {sizes}; every column of a "
                "batch must have one value per row"
            )
        return pa.table(columns)
    if _is_pandas(batch):
        return pa.Table.from_pandas(batch, preserve_index=False)
    raise _strict(what, batch)


def _is_pandas(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("pandas") and type(value).__name__ == "DataFrame"


def block_to_batch(block: Block, batch_format: BatchFormat, *, zero_copy: bool = False,
                   owned: bool = False) -> Any:
    """``block`` in ``batch_format``: numpy batches are writable unless ``zero_copy``;
    ``owned`` (the block's buffers are the caller's alone) makes them so without a copy where
    the memory allows."""
    if batch_format == "pyarrow":
        return block
    if batch_format == "pandas":
        return block.to_pandas()
    batch = {name: column_to_numpy(column, owned and not zero_copy)
             for name, column in zip(block.column_names, block.columns, strict=True)}
    if not zero_copy:
        # Arrow-backed arrays are read-only; UDFs expect to be able to write into their batch.
        batch = {k: (v if v.flags.writeable else v.copy()) for k, v in batch.items()}
    return batch


# -- rows ---------------------------------------------------------------------------------------
def row_to_dict(row: Any, *, what: str = "the function") -> dict[str, Any]:
    if isinstance(row, Mapping):
        for name in row:
            if not isinstance(name, str):
                raise StrictModeError(
                    f"{what} returned a dict with a non-string key {name!r}; rows are dicts "
                    "of column name -> value"
                )
        return dict(row)
    raise StrictModeError(
        f"{what} returned a {type(row).__name__}, not a dict. Rows have named columns: return "
        "a dict such as {'item': value}"
    )


def rows_to_block(rows: Iterable[Mapping[str, Any]]) -> Block:
    rows = list(rows)
    if not rows:
        return pa.table({})
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    columns = {name: [row.get(name) for row in rows] for name in names}
    return batch_to_block(columns)


def iter_rows(block: Block) -> Iterator[dict[str, Any]]:
    if block.num_rows == 0:
        return
    tensor = [n for n in block.column_names if isinstance(block.schema.field(n).type,
                                                          pa.FixedShapeTensorType)]
    if not tensor:
        yield from block.to_pylist()
        return
    arrays = {n: column_to_numpy(block.column(n)) for n in tensor}
    plain = block.drop_columns(tensor).to_pylist() if len(tensor) < block.num_columns else None
    for i in range(block.num_rows):
        row = dict(plain[i]) if plain is not None else {}
        for n in tensor:
            row[n] = arrays[n][i]
        yield {n: row[n] for n in block.column_names}


# -- whole blocks -------------------------------------------------------------------------------
def concat(blocks: list[Block]) -> Block:
    blocks = [b for b in blocks if b.num_columns > 0 or b.num_rows > 0]
    if not blocks:
        return pa.table({})
    if len(blocks) == 1:
        return blocks[0]
    try:
        return pa.concat_tables(blocks, promote_options="default")
    except pa.ArrowInvalid as exc:
        schemas = "; ".join(sorted({str(b.schema).replace("\n", ", ") for b in blocks}))
        raise ValueError(f"blocks have incompatible schemas ({schemas})") from exc


def size_bytes(block: Block) -> int:
    return int(block.nbytes)


def iter_slices(block: Block, batch_size: int | None) -> Iterator[Block]:
    if batch_size is None or block.num_rows <= batch_size:
        yield block
        return
    for start in range(0, block.num_rows, batch_size):
        yield block.slice(start, batch_size)


class Batcher:
    """Re-cuts a stream of blocks into batches of exactly ``batch_size`` rows (the last one may
    be short, or dropped with ``drop_last``)."""

    def __init__(self, batch_size: int | None, *, drop_last: bool = False) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1 or None (whole blocks)")
        self.batch_size = batch_size
        self.drop_last = drop_last
        self._pending: list[Block] = []
        self._rows = 0
        self._pending_owned = True
        # Whether the batch last yielded comes from blocks added as ``owned`` only.
        self.owned = False

    def add(self, block: Block, owned: bool = False) -> Iterator[Block]:
        """The batches that ``block`` completes. ``owned``: its buffers are the caller's alone
        (see ``column_to_numpy``); ``self.owned`` tells it for each batch, as it is yielded."""
        n = block.num_rows
        if n == 0:
            return
        size = self.batch_size
        if size is None:
            self.owned = owned
            yield block
            return
        start = 0
        if self._pending:  # first the batch that earlier blocks began
            start = min(size - self._rows, n)
            self._pending.append(block.slice(0, start))
            self._rows += start
            self._pending_owned = self._pending_owned and owned
            if self._rows < size:
                return
            self.owned = self._pending_owned
            yield concat(self._pending)
        self.owned = owned
        while n - start >= size:  # slices of this block alone
            yield block.slice(start, size)
            start += size
        self._pending = [block.slice(start)] if start < n else []
        self._rows = n - start
        self._pending_owned = owned

    def finish(self) -> Iterator[Block]:
        if self._rows and not self.drop_last:
            self.owned = self._pending_owned
            yield concat(self._pending)
        self._pending, self._rows, self._pending_owned = [], 0, True


class ShufflingBatcher:
    """Batches of ``batch_size`` rows drawn at random from a local buffer (Ray's
    ``local_shuffle_buffer_size``): a batch leaves only while the buffer holds at least
    ``buffer_size`` rows, so each is a random pick among that many; at the end the rest is
    drained, shuffled. Pure: blocks in, batches out, randomness from ``seed``.

    The buffer is shuffled once per arriving block (not once per batch): batches are slices of
    the shuffled buffer until new rows come in.
    """

    def __init__(self, batch_size: int | None, buffer_size: int, *, seed: int | None = None,
                 drop_last: bool = False) -> None:
        if batch_size is None:
            raise ValueError("local_shuffle_buffer_size needs a batch_size (batches are drawn "
                             "from the buffer); pass batch_size=")
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or (
                buffer_size < batch_size):
            raise ValueError(f"local_shuffle_buffer_size={buffer_size!r} must be an int >= "
                             f"batch_size ({batch_size})")
        self.batch_size = batch_size
        self.buffer_size = buffer_size
        self.drop_last = drop_last
        self._rng = np.random.default_rng(seed)
        self._shuffled: Block | None = None  # rows shuffled and not handed out yet
        self._pending: list[Block] = []  # rows added since the last shuffle
        self._rows = 0

    def _shuffle(self) -> None:
        blocks = ([self._shuffled] if self._shuffled is not None else []) + self._pending
        table = concat(blocks)
        order = self._rng.permutation(table.num_rows)
        self._shuffled = table.take(pa.array(order)) if table.num_rows else None
        self._pending = []

    def _take(self, rows: int) -> Block:
        assert self._shuffled is not None
        batch = self._shuffled.slice(0, rows)
        rest = self._shuffled.slice(rows)
        self._shuffled = rest if rest.num_rows else None
        self._rows -= rows
        return batch

    # Its batches are slices of a table that ``take`` made for it alone, none shared: a consumer
    # may write into them as they are (see ``Batcher.owned``).
    owned = True

    def add(self, block: Block, owned: bool = False) -> Iterator[Block]:
        if block.num_rows == 0:
            return
        self._pending.append(block)
        self._rows += block.num_rows
        while self._rows >= self.buffer_size:
            if self._pending:
                self._shuffle()
            yield self._take(self.batch_size)

    def finish(self) -> Iterator[Block]:
        if self._pending:
            self._shuffle()
        while self._rows >= self.batch_size:
            yield self._take(self.batch_size)
        if self._rows and not self.drop_last:
            yield self._take(self._rows)
        self._shuffled, self._pending, self._rows = None, [], 0
