"""Block transforms: what runs inside a task or a pool actor. A fused stage is a list of these,
applied one after the other to each block, so ``map -> filter -> map_batches`` is one task per
block. The UDF of a class-based transform is constructed once per actor (``setup``)."""

from __future__ import annotations

import inspect
import os
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ember.data import _block
from ember.data._block import BatchFormat, Block


def udf_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def is_class_udf(fn: Any) -> bool:
    return inspect.isclass(fn)


def _preview_value(value: Any) -> str:
    if hasattr(value, "shape") and hasattr(value, "__getitem__") and len(value.shape) > 0:
        head = ", ".join(repr(v) for v in list(value[:3]))
        more = ", ..." if value.shape[0] > 3 else ""
        return f"[{head}{more}] (shape {tuple(value.shape)})"
    return repr(value)


def preview(data: Any, limit: int = 300) -> str:
    """A short description of a row or batch for an error message: keys and a few values."""
    if isinstance(data, dict):
        text = "{" + ", ".join(f"{k!r}: {_preview_value(v)}" for k, v in data.items()) + "}"
    elif hasattr(data, "columns") and hasattr(data, "head"):  # pandas
        text = f"DataFrame columns {list(data.columns)}, first rows {data.head(3).to_dict('list')}"
    elif isinstance(data, pa.Table):
        text = f"Table columns {data.column_names}, first rows {data.slice(0, 3).to_pydict()}"
    else:
        text = repr(data)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _add_context(exc: BaseException, operator: str, what: str, data: Any) -> None:
    # A note keeps the user's exception type and object; the consumer's error message carries
    # the remote traceback, notes included.
    add_note(exc, f"ember.data: raised by the UDF of operator {operator} on {what} "
                  f"{preview(data)}")


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, also on Python 3.10 (where tracebacks do not show notes yet)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # pragma: no cover - Python 3.10
        setattr(exc, "__notes__", [*getattr(exc, "__notes__", []), note])  # noqa: B010


@dataclass
class Transform:
    """One step of a fused stage. Subclasses implement ``apply``."""

    name: str

    def setup(self) -> None:
        """Construct class UDFs; called once per task or actor before the first block."""

    def apply(self, block: Block) -> Block:
        raise NotImplementedError


@dataclass
class MapRows(Transform):
    fn: Callable[..., Any] = field(default=print)
    fn_args: tuple[Any, ...] = ()
    fn_kwargs: dict[str, Any] = field(default_factory=dict)
    ctor: tuple[tuple[Any, ...], dict[str, Any]] | None = None
    mode: str = "map"  # "map" | "filter" | "flat_map"

    def setup(self) -> None:
        if self.ctor is not None and is_class_udf(self.fn):
            self.fn = self.fn(*self.ctor[0], **self.ctor[1])

    def apply(self, block: Block) -> Block:
        what = f"{self.mode} function {udf_name(self.fn)}"
        out: list[dict[str, Any]] = []
        fn, args, kwargs = self.fn, self.fn_args, self.fn_kwargs
        if self.mode == "filter":
            keep = []
            for row in _block.iter_rows(block):
                try:
                    keep.append(bool(fn(row, *args, **kwargs)))
                except Exception as exc:
                    _add_context(exc, self.name, "the row", row)
                    raise
            return block.filter(pa.array(keep, type=pa.bool_())) if keep else block
        for row in _block.iter_rows(block):
            try:
                result = fn(row, *args, **kwargs)
            except Exception as exc:
                _add_context(exc, self.name, "the row", row)
                raise
            if self.mode == "map":
                out.append(_block.row_to_dict(result, what=what))
            else:
                if isinstance(result, dict) or not isinstance(result, Iterable):
                    raise _block.StrictModeError(
                        f"{what} returned a {type(result).__name__}; flat_map functions return "
                        "a list of rows, each a dict such as {'item': value}"
                    )
                out.extend(_block.row_to_dict(r, what=what) for r in result)
        if not out:
            return block.schema.empty_table() if self.mode == "filter" else pa.table({})
        return _block.rows_to_block(out)


@dataclass
class MapBatches(Transform):
    fn: Any = None
    batch_size: int | None = 1024
    batch_format: BatchFormat = "numpy"
    zero_copy_batch: bool = False
    fn_args: tuple[Any, ...] = ()
    fn_kwargs: dict[str, Any] = field(default_factory=dict)
    ctor: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    def setup(self) -> None:
        if is_class_udf(self.fn):
            args, kwargs = self.ctor or ((), {})
            self.fn = self.fn(*args, **kwargs)

    def apply(self, block: Block) -> Block:
        what = f"map_batches function {udf_name(self.fn)}"
        outputs: list[Block] = []
        for piece in _block.iter_slices(block, self.batch_size):
            batch = _block.block_to_batch(piece, self.batch_format, zero_copy=self.zero_copy_batch)
            try:
                result = self.fn(batch, *self.fn_args, **self.fn_kwargs)
                if inspect.isgenerator(result):
                    result = list(result)
            except Exception as exc:
                _add_context(exc, self.name, f"a batch of {piece.num_rows} rows", batch)
                raise
            if isinstance(result, list):
                outputs.extend(_block.batch_to_block(r, what=what) for r in result)
            else:
                outputs.append(_block.batch_to_block(result, what=what))
        return _block.concat(outputs)


@dataclass
class BlockFn(Transform):
    """A library-internal transform on a whole block (select, rename, add_column...)."""

    fn: Callable[[Block], Block] = field(default=lambda b: b)

    def apply(self, block: Block) -> Block:
        return self.fn(block)


def apply_all(transforms: Sequence[Transform], block: Block) -> Block:
    for transform in transforms:
        block = transform.apply(block)
    return block


def _peak_rss_bytes() -> int:
    # ru_maxrss is KiB on Linux: the worker process's peak resident set so far.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def run_stage(sources: Sequence[Any], transforms: Sequence[Transform]
              ) -> tuple[Block, dict[str, Any]]:
    """Produce one block: read it (a source is a ReadTask) or take it (a Block; several are
    joined), transform it, and measure the work for ``Dataset.stats()``."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    blocks: list[Block] = []
    for source in sources:
        blocks.extend([source] if isinstance(source, pa.Table) else source())
    block = _block.concat(blocks)
    block = apply_all(transforms, block)
    meta = {
        "rows": block.num_rows,
        "bytes": _block.size_bytes(block),
        "wall_s": time.perf_counter() - wall0,
        "cpu_s": time.process_time() - cpu0,
        "peak_rss": _peak_rss_bytes(),
        "pid": os.getpid(),
    }
    return block, meta


def make_task_function(transforms: Sequence[Transform]) -> Callable[..., Any]:
    """A function to wrap with ``ember.remote``: its code (and the stage's UDFs) ship once."""
    stage = list(transforms)

    def run_block_stage(*sources: Any) -> tuple[Block, dict[str, Any]]:
        for transform in stage:
            transform.setup()
        return run_stage(sources, stage)

    return run_block_stage


class MapWorker:
    """The actor of an actor-pool stage: constructs the class UDFs once, then maps blocks."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self._stage = list(transforms)
        # A UDF constructor that raises makes every call raise its exception (the UDF's
        # error, sent to the consumer as it is), rather than a dead actor that the pool
        # would replace and build again for each retry of the block.
        self._failed: Exception | None = None
        for transform in self._stage:
            try:
                transform.setup()
            except Exception as exc:
                add_note(exc, f"(raised while constructing {transform.name} in an actor of "
                              "its pool)")
                self._failed = exc
                break

    def ready(self) -> bool:
        return True

    def process(self, *blocks: Block) -> tuple[Block, dict[str, Any]]:
        if self._failed is not None:
            raise self._failed
        return run_stage(blocks, self._stage)
