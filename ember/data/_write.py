"""Writes: each block is written by the task that produced it (a write step fused onto the last
stage), straight to local disk or an fsspec URL; nothing is gathered on the driver."""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ember.data import _block, _options, _transforms
from ember.data._block import Block
from ember.data._options import as_filesystem, fs_and_path, parameters
from ember.data._transforms import BlockFn

FORMATS = {"parquet": "parquet", "csv": "csv", "json": "json", "numpy": "npy"}
# Ray's defaults for write_json's **pandas_json_args: JSON lines.
JSON_DEFAULTS = {"orient": "records", "lines": True}
# The name of each write_*'s function of more arguments, called in the write tasks.
ARGS_FN = {"parquet": "arrow_parquet_args_fn", "csv": "arrow_csv_args_fn",
           "json": "pandas_json_args_fn"}
# The folder name of a null partition value, as pyarrow and Hive write it.
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
# File name endings of compressed files, so that reads infer the codec back.
CODEC_SUFFIXES = {"gzip": ".gz", "bz2": ".bz2", "zstd": ".zst", "lz4": ".lz4", "brotli": ".br"}


def format_arg_names(fmt: str) -> tuple[list[str], str]:
    """The keyword arguments a ``write_*`` of ``fmt`` passes on, and to what."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return ["schema", *parameters(pq.write_table, "table", "where", "filesystem"),
                *parameters(pq.ParquetWriter.__init__, "self", "where", "schema",
                            "filesystem")], "pyarrow.parquet.write_table"
    if fmt == "csv":
        import pyarrow.csv as pacsv

        return parameters(pacsv.write_csv, "data", "output_file", "memory_pool"), (
            "pyarrow.csv.write_csv")
    if fmt == "json":
        import pandas as pd

        return parameters(pd.DataFrame.to_json, "self", "path_or_buf"), (
            "pandas.DataFrame.to_json")
    return [], "numpy.save"


def checked_format_args(fmt: str, given: dict[str, Any], what: str) -> dict[str, Any]:
    """``given`` (``**arrow_parquet_args`` and the like of ``what``) checked by name, with
    values that pickle cannot carry to the write tasks made portable."""
    accepted, target = format_arg_names(fmt)
    args = _options.format_args(given, list(dict.fromkeys(accepted)), what, target)
    if fmt == "csv" and args.get("write_options") is not None:
        import pyarrow.csv as pacsv

        options = args["write_options"]
        if not isinstance(options, pacsv.WriteOptions):
            raise TypeError(f"{what}: write_options={options!r} must be a "
                            "pyarrow.csv.WriteOptions")
        args["write_options"] = _Portable(options)
    return args


class _Portable:
    """An options object of pyarrow that does not pickle (``pyarrow.csv.WriteOptions``),
    carried as its class and attributes and made again where it is used."""

    def __init__(self, options: Any) -> None:
        self.kind = type(options)
        self.attributes = {name: getattr(options, name) for name in dir(options)
                           if not name.startswith("_")
                           and not callable(getattr(options, name))}

    def rebuild(self) -> Any:
        return self.kind(**self.attributes)


def _resolved_args(fmt: str, args: dict[str, Any], args_fn: Callable[[], dict[str, Any]] | None
                   ) -> dict[str, Any]:
    """The arguments of one write: ``args``, then what ``args_fn()`` returns (called in the
    write task, as Ray does; its keys win), checked."""
    resolved = dict(JSON_DEFAULTS) if fmt == "json" else {}
    resolved.update(args)
    if args_fn is not None:
        more = args_fn()
        if not isinstance(more, dict):
            raise TypeError(f"write_{fmt}: {ARGS_FN[fmt]} returned {more!r}; it must return a "
                            "dict of keyword arguments")
        resolved.update(checked_format_args(fmt, more, f"write_{fmt}: {ARGS_FN[fmt]}"))
    return {k: v.rebuild() if isinstance(v, _Portable) else v for k, v in resolved.items()}


def _write_file(fs: Any, path: str, fmt: str, column: str | None, block: Block,
                args: dict[str, Any], open_args: dict[str, Any] | None) -> None:
    with fs.open(path, "wb") as raw:
        codec = (open_args or {}).get("compression")
        buffer_size = (open_args or {}).get("buffer_size")
        f = raw if codec is None and buffer_size is None else pa.output_stream(
            raw, compression=codec, buffer_size=buffer_size)
        try:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                schema = args.get("schema")
                if schema is not None:
                    block = block.select(schema.names).cast(schema)
                pq.write_table(block, f, **{k: v for k, v in args.items() if k != "schema"})
            elif fmt == "csv":
                import pyarrow.csv as pacsv

                pacsv.write_csv(block, f, **args)
            elif fmt == "json":
                f.write(block.to_pandas().to_json(None, **args).encode())
            else:
                assert column is not None
                np.save(f, _block.column_to_numpy(block.column(column)), allow_pickle=False)
        finally:
            if f is not raw:
                f.close()


def _hive_groups(block: Block, partition_cols: Sequence[str]) -> list[tuple[str, Block]]:
    """``block``'s rows grouped by the values of ``partition_cols``: each group's folder
    (``col=value/...``, values URL-quoted as pyarrow writes them) and rows, without those
    columns."""
    import pyarrow.compute as pc

    missing = [c for c in partition_cols if c not in block.column_names]
    if missing:
        raise KeyError(f"write_parquet(partition_cols={list(partition_cols)}): the dataset has "
                       f"no columns {missing}; its columns are {block.column_names}")
    rest = [c for c in block.column_names if c not in partition_cols]
    keys = block.select(list(partition_cols)).group_by(list(partition_cols)).aggregate([])
    groups = []
    for key in keys.to_pylist():
        mask = None
        parts = []
        for col in partition_cols:
            value = key[col]
            cond = (pc.is_null(block.column(col)) if value is None
                    else pc.equal(block.column(col), pa.scalar(value, block.schema.field(
                        col).type)))
            cond = pc.fill_null(cond, False)
            mask = cond if mask is None else pc.and_(mask, cond)
            text = NULL_PARTITION if value is None else urllib.parse.quote(str(value), safe="")
            parts.append(f"{col}={text}")
        groups.append(("/".join(parts), block.filter(mask).select(rest)))
    return groups


def _write_block(fs: Any, base: str, prefix: str, fmt: str, column: str | None,
                 args: dict[str, Any], args_fn: Callable[[], dict[str, Any]] | None,
                 open_args: dict[str, Any] | None, partition_cols: Sequence[str],
                 block: Block) -> Block:
    if block.num_rows == 0:
        return pa.table({"path": pa.array([], pa.string()), "rows": pa.array([], pa.int64())})
    codec = (open_args or {}).get("compression")
    suffix = FORMATS[fmt] + (CODEC_SUFFIXES.get(codec, f".{codec}") if codec else "")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}.{suffix}"
    base = base.rstrip("/")
    if partition_cols:
        files = [(f"{base}/{folder}/{name}", rows)
                 for folder, rows in _hive_groups(block, partition_cols)]
    else:
        files = [(f"{base}/{name}", block)]
    resolved = _resolved_args(fmt, args, args_fn)
    for path, rows in files:
        try:
            if partition_cols:
                fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            _write_file(fs, path, fmt, column, rows, resolved, open_args)
        except Exception as exc:  # pyarrow's and pandas' errors do not say which file
            _transforms.add_note(exc, f"ember.data: raised while writing {path}")
            raise
    return pa.table({"path": [p for p, _ in files],
                     "rows": pa.array([rows.num_rows for _, rows in files], pa.int64())})


def write_transform(path: str, fmt: str, column: str | None = None, *,
                    filesystem: Any = None, create_dir: bool = True,
                    format_args: dict[str, Any] | None = None,
                    format_args_fn: Callable[[], dict[str, Any]] | None = None,
                    open_args: dict[str, Any] | None = None,
                    partition_cols: Sequence[str] = ()) -> BlockFn:
    """Write each block to a file of its own under ``path`` (``filesystem``: Ray's, a pyarrow
    or fsspec filesystem; ``create_dir``: make ``path`` first, as Ray's ``try_create_dir``),
    with ``format_args`` (checked ones) and ``format_args_fn()``'s for the format's writer,
    through a stream opened with ``open_args`` (Ray's ``arrow_open_stream_args``), in hive
    folders of ``partition_cols``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if format_args_fn is not None and not callable(format_args_fn):
        raise TypeError(f"write_{fmt}: {ARGS_FN.get(fmt)}={format_args_fn!r} must be a function "
                        "returning a dict of keyword arguments")
    fs, base = fs_and_path(path, as_filesystem(filesystem))
    if create_dir:
        fs.makedirs(base, exist_ok=True)
    prefix = uuid.uuid4().hex[:8]
    args = dict(format_args or {})
    partition_cols = tuple(partition_cols)
    write: Callable[[Block], Block] = lambda block: _write_block(  # noqa: E731
        fs, base, prefix, fmt, column, args, format_args_fn, open_args, partition_cols, block)
    return BlockFn(name=f"Write{fmt.capitalize()}", fn=write)


# -- custom sinks (write_datasink, write_datasource) ----------------------------------------------
def _sink_task(write: Callable[..., Any], task_idx: int, op_name: str, *blocks: Block
               ) -> tuple[Any, int, int]:
    from ember.data.datasource import TaskContext

    returned = write(list(blocks), TaskContext(task_idx, op_name))
    return (returned, sum(b.num_rows for b in blocks),
            sum(_block.size_bytes(b) for b in blocks))


def run_sink(bundles: Any, write: Callable[..., Any], op_name: str, *,
             num_cpus: float | None, options: dict[str, Any] | None,
             concurrency: int | None, min_rows: int | None) -> tuple[list[Any], int, int]:
    """Run ``write(blocks, ctx)`` in one task per group of ``bundles`` (a group holds blocks
    up to ``min_rows`` rows), at most ``concurrency`` (default: the CPUs) at once, while the
    dataset streams; ``(the values write returned in task order, rows, bytes)``."""
    import ember

    task = ember.remote(_sink_task).options(**{
        "name": op_name, **(options or {}), "num_cpus": 1.0 if num_cpus is None else num_cpus})
    limit = concurrency or max(1, int(ember.cluster_resources().get("CPU", 1)))
    refs: list[Any] = []
    running: list[Any] = []
    group: list[Any] = []
    rows = 0

    def submit() -> None:
        nonlocal group, rows
        while len(running) >= limit:  # bounded: the dataset waits for the writes
            done, _ = ember.wait(running, num_returns=1)
            for ref in done:
                running.remove(ref)
                ember.get(ref)  # a failed write fails the whole write now
        ref = task.remote(write, len(refs), op_name, *(b.ref for b in group))
        refs.append(ref)
        running.append(ref)
        group, rows = [], 0

    for bundle in bundles:
        group.append(bundle)
        rows += bundle.meta.num_rows
        if rows >= (min_rows or 0):
            submit()
    if group:
        submit()
    results = ember.get(refs)
    return ([r[0] for r in results], sum(r[1] for r in results), sum(r[2] for r in results))
