"""Writes: each block is written by the task that produced it (a write step fused onto the last
stage), straight to local disk or an fsspec URL; nothing is gathered on the driver."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from ember.data import _block
from ember.data._block import Block
from ember.data._options import as_filesystem, fs_and_path
from ember.data._transforms import BlockFn

FORMATS = {"parquet": "parquet", "csv": "csv", "json": "json", "numpy": "npy"}


def _write_block(fs: Any, base: str, prefix: str, fmt: str, column: str | None,
                 block: Block) -> Block:
    if block.num_rows == 0:
        return pa.table({"path": pa.array([], pa.string()), "rows": pa.array([], pa.int64())})
    path = f"{base.rstrip('/')}/{prefix}_{uuid.uuid4().hex[:12]}.{FORMATS[fmt]}"
    with fs.open(path, "wb") as f:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(block, f)
        elif fmt == "csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(block, f)
        elif fmt == "json":
            block.to_pandas().to_json(f, orient="records", lines=True)
        else:
            assert column is not None
            np.save(f, _block.column_to_numpy(block.column(column)), allow_pickle=False)
    return pa.table({"path": [path], "rows": pa.array([block.num_rows], pa.int64())})


def write_transform(path: str, fmt: str, column: str | None = None, *,
                    filesystem: Any = None, create_dir: bool = True) -> BlockFn:
    """Write each block to a file of its own under ``path`` (``filesystem``: Ray's, a pyarrow
    or fsspec filesystem; ``create_dir``: make ``path`` first, as Ray's ``try_create_dir``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    fs, base = fs_and_path(path, as_filesystem(filesystem))
    if create_dir:
        fs.makedirs(base, exist_ok=True)
    prefix = uuid.uuid4().hex[:8]
    write: Callable[[Block], Block] = lambda block: _write_block(  # noqa: E731
        fs, base, prefix, fmt, column, block)
    return BlockFn(name=f"Write{fmt.capitalize()}", fn=write)
