"""ember.data: streaming datasets of Arrow blocks, for batch inference and preprocessing over
data larger than memory.

    import ember

    ds = ember.data.range(10_000).map_batches(lambda batch: {"id": batch["id"] * 2})
    for batch in ds.iter_batches(batch_size=256):
        ...  # dict[str, np.ndarray]

Sources (``range``, ``from_*``, ``read_*``) build a lazy plan; transformations add to it;
consumption (``iter_batches``, ``take``, ``count``, ``write_*``) runs it on a streaming
executor within ``DataContext.memory_budget_bytes``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ember.data import _options, _read
from ember.data import aggregate as aggregate
from ember.data import block as block
from ember.data import context as context
from ember.data import datasource as datasource
from ember.data._block import StrictModeError
from ember.data._context import DataContext, DatasetContext
from ember.data._dataset import Dataset, MaterializedDataset
from ember.data._execution_options import ExecutionOptions, ExecutionResources
from ember.data._grouped import GroupedData
from ember.data._options import IOOptions
from ember.data._pipeline import DatasetPipeline
from ember.data._plan import ActorPoolStrategy, TaskPoolStrategy
from ember.data._split import DataIterator
from ember.data._stats import DatasetStats
from ember.data.block import BlockMetadata
from ember.data.datasource import (
    Datasink,
    Datasource,
    Partitioning,
    PathPartitionFilter,
    ReadTask,
)

DatasetIterator = DataIterator  # Ray's older name, still exported by Ray

__all__ = [
    "ActorPoolStrategy",
    "BlockMetadata",
    "DataContext",
    "DataIterator",
    "Dataset",
    "DatasetContext",
    "DatasetIterator",
    "DatasetPipeline",
    "Datasink",
    "Datasource",
    "DatasetStats",
    "ExecutionOptions",
    "ExecutionResources",
    "GroupedData",
    "MaterializedDataset",
    "ReadTask",
    "StrictModeError",
    "TaskPoolStrategy",
    "from_arrow",
    "from_arrow_refs",
    "from_huggingface",
    "from_items",
    "from_numpy",
    "from_numpy_refs",
    "from_pandas",
    "from_pandas_refs",
    "from_torch",
    "range",
    "range_tensor",
    "read_binary_files",
    "read_csv",
    "read_datasource",
    "read_images",
    "read_json",
    "read_numpy",
    "read_parquet",
    "read_sql",
    "read_text",
]

Paths = str | Sequence[str]


def _blocks(parallelism: int, override_num_blocks: int | None) -> int:
    """Ray's ``override_num_blocks`` (the current name) or ``parallelism`` (the older one)."""
    if override_num_blocks is None:
        return parallelism
    if isinstance(override_num_blocks, bool) or not isinstance(override_num_blocks, int) or (
            override_num_blocks < 1):
        raise ValueError(f"override_num_blocks={override_num_blocks!r} must be an int >= 1")
    if parallelism != -1 and parallelism != override_num_blocks:
        raise ValueError(f"parallelism={parallelism} and override_num_blocks="
                         f"{override_num_blocks} disagree; pass override_num_blocks only")
    return override_num_blocks


def range(n: int, *, parallelism: int = -1, override_num_blocks: int | None = None
          ) -> Dataset:
    """Rows ``{"id": 0}`` ... ``{"id": n - 1}``."""
    return Dataset(_read.range_source(n, parallelism=_blocks(parallelism, override_num_blocks)))


def range_tensor(n: int, *, shape: tuple[int, ...] = (1,), parallelism: int = -1,
                 override_num_blocks: int | None = None) -> Dataset:
    """Rows ``{"data": array}`` where row i's array of ``shape`` is filled with i."""
    return Dataset(_read.range_source(n, parallelism=_blocks(parallelism, override_num_blocks),
                                      shape=tuple(shape)))


def from_items(items: Sequence[Any], *, parallelism: int = -1,
               override_num_blocks: int | None = None) -> MaterializedDataset:
    """Rows from a list: dicts become rows, anything else becomes ``{"item": value}``."""
    return MaterializedDataset(_read.from_items(
        items, parallelism=_blocks(parallelism, override_num_blocks)))


def from_numpy(ndarrays: Any) -> MaterializedDataset:
    """One block per array, in column ``data`` (extra dimensions become tensor columns)."""
    return MaterializedDataset(_read.from_numpy(ndarrays))


def from_pandas(dfs: Any) -> MaterializedDataset:
    """Rows from a ``pandas.DataFrame`` (or a list of them: one block each); the columns keep
    their names.

    >>> import pandas as pd
    >>> ds = ember.data.from_pandas(pd.DataFrame({"name": ["ada", "bob"], "age": [36, 41]}))
    >>> ds.take(1)
    [{'name': 'ada', 'age': 36}]
    """
    return MaterializedDataset(_read.from_pandas(dfs))


def from_arrow(tables: Any) -> MaterializedDataset:
    """Rows from a ``pyarrow.Table`` (or a list of tables or record batches: one block each).

    >>> import pyarrow as pa
    >>> ember.data.from_arrow(pa.table({"x": [1, 2, 3]})).count()
    3
    """
    return MaterializedDataset(_read.from_arrow(tables))


def from_arrow_refs(tables: Any) -> MaterializedDataset:
    """From ObjectRefs of ``pyarrow.Table``s (one block each); the tables stay in the store."""
    return MaterializedDataset(_read.refs_source("FromArrowRefs", tables, "arrow"))


def from_pandas_refs(dfs: Any) -> MaterializedDataset:
    """From ObjectRefs of ``pandas.DataFrame``s, converted to blocks where they are."""
    return MaterializedDataset(_read.refs_source("FromPandasRefs", dfs, "pandas"))


def from_numpy_refs(ndarrays: Any) -> MaterializedDataset:
    """From ObjectRefs of NumPy arrays: each becomes a block with column ``data``."""
    return MaterializedDataset(_read.refs_source("FromNumpyRefs", ndarrays, "numpy"))


def from_huggingface(dataset: Any, *, parallelism: int = -1,
                     override_num_blocks: int | None = None) -> MaterializedDataset:
    """From a ``datasets.Dataset`` (its Arrow table, without copying row by row)."""
    return MaterializedDataset(_read.from_huggingface(
        dataset, parallelism=_blocks(parallelism, override_num_blocks)))


def from_torch(dataset: Any, *, parallelism: int = -1,
               override_num_blocks: int | None = None) -> MaterializedDataset:
    """From a map-style ``torch.utils.data.Dataset``: each item becomes a row ``{"item": x}``."""
    return MaterializedDataset(_read.from_torch(
        dataset, parallelism=_blocks(parallelism, override_num_blocks)))


# Ray's defaults: hive partitions for the tabular formats, none for the others.
_HIVE = Partitioning("hive")
_PARQUET_EXTENSIONS = ("parquet",)
# Ray's ["npy"], and the names of compressed ones that write_numpy(arrow_open_stream_args=)
# gives its files.
_NUMPY_EXTENSIONS = ("npy", "npy.gz", "npy.bz2", "npy.zst", "npy.lz4", "npy.br")
_JSON_EXTENSIONS = tuple(e.lstrip(".") for e in _read.JSON_EXTENSIONS)
_IMAGE_EXTENSIONS = tuple(e.lstrip(".") for e in _read.IMAGE_EXTENSIONS)
# read_parquet's **arrow_parquet_args that only tune how pyarrow scans (Ray hands them to
# pyarrow.dataset.Scanner.from_fragment) or where Ray finds metadata: ember sizes its reads
# itself, so they are accepted and have no effect on what is read.
_PARQUET_SCAN_HINTS = ("batch_size", "batch_readahead", "fragment_readahead", "use_threads",
                       "cache_metadata", "meta_provider")


def _read_files(name: str, paths: Paths, reader: Any, selection: _options.FileOptions, *,
                parallelism: int, override_num_blocks: int | None, filesystem: Any,
                ray_remote_args: dict[str, Any] | None, num_cpus: float | None,
                memory: float | None, concurrency: int | None, native: bool = False
                ) -> Dataset:
    return Dataset(_read.file_source(
        name, paths, reader, selection=selection,
        parallelism=_blocks(parallelism, override_num_blocks), native=native,
        options=IOOptions(filesystem, ray_remote_args, num_cpus, memory, concurrency)))


def _arrow_args(what: str, given: dict[str, Any], fn: Any, options: dict[str, Any]
                ) -> dict[str, Any]:
    """``given`` (the ``**arrow_*_args`` of ``what``) checked against ``fn``'s parameters and
    each against the pyarrow class it must be an instance of (``options``)."""
    accepted = _options.parameters(fn, "input_file", "memory_pool")
    target = f"{fn.__module__.replace('._', '.')}.{fn.__name__}"  # pyarrow._csv: pyarrow.csv
    args = _options.format_args(given, accepted, what, target)
    for key, kind in options.items():
        if args.get(key) is not None and not isinstance(args[key], kind):
            raise TypeError(f"{what}: {key}={args[key]!r} must be a "
                            f"{kind.__module__.replace('._', '.')}.{kind.__name__}")
    return args


def read_parquet(paths: Paths, *, columns: list[str] | None = None,
                 schema: Any = None, parallelism: int = -1,
                 override_num_blocks: int | None = None, filesystem: Any = None,
                 ray_remote_args: dict[str, Any] | None = None, num_cpus: float | None = None,
                 memory: float | None = None, concurrency: int | None = None,
                 filter: Any = None, include_paths: bool = False,
                 ignore_missing_paths: bool = False,
                 file_extensions: Sequence[str] | None = _PARQUET_EXTENSIONS,
                 partitioning: Partitioning | None = _HIVE,
                 partition_filter: PathPartitionFilter | None = None,
                 tensor_column_schema: dict[str, tuple[Any, tuple[int, ...]]] | None = None,
                 **arrow_parquet_args: Any) -> Dataset:
    """Parquet files (a file, a folder, or a list). Files whose schemas differ are read as one
    schema, unified as ``pyarrow.unify_schemas`` does (columns missing from a file are null,
    numeric types widen); ``schema=`` forces a ``pyarrow.Schema``. Files whose schemas cannot
    be unified raise a ``ValueError`` naming two of them. ``filter`` (a
    ``pyarrow.compute.Expression`` such as ``pyarrow.dataset.field("x") > 5``, as in Ray) keeps
    only the rows it holds for, skipping row groups whose statistics rule it out; it may name
    columns that ``columns`` leaves out, and partition columns (decided by each file's
    folder). ``tensor_column_schema`` (``{column: (dtype, shape)}``) reads binary columns of
    serialized arrays as tensors. Of Ray's other ``**arrow_parquet_args``, the scan hints
    ``batch_size``, ``batch_readahead``, ``fragment_readahead``, ``use_threads``,
    ``cache_metadata`` and ``meta_provider`` are accepted and change nothing (ember sizes its reads itself); any other is a ``TypeError``.

    Hive folders (``year=2024/part.parquet``) add their values as string columns
    (``partitioning``, as in Ray; ``columns=`` may name them; ``partitioning=None``: none).

    Every ``read_*`` of files also takes Ray's ``filesystem=`` (a ``pyarrow.fs.FileSystem`` or
    an fsspec one such as ``s3fs.S3FileSystem(endpoint_url=...)``; paths may keep or drop their
    ``s3://``), ``include_paths=`` (a ``path`` column), ``ignore_missing_paths=``,
    ``file_extensions=`` (a list such as ``["csv", "csv.gz"]``; ``None``: every file; a list
    given applies to the files named too, the default one only to those found in folders),
    ``partitioning=`` (a ``datasource.Partitioning``), ``partition_filter=`` (a
    ``datasource.PathPartitionFilter``: files it rejects are not read), and, for its read
    tasks, ``num_cpus=``, ``memory=``, ``concurrency=`` (at most that many at once) and
    ``ray_remote_args=`` (``scheduling_strategy``, ``runtime_env``, ``max_retries``...)."""
    unknown = sorted(set(arrow_parquet_args) - {"filter", *_PARQUET_SCAN_HINTS})
    if unknown:
        raise TypeError(
            f"read_parquet() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}"
            "; of Ray's arrow_parquet_args it takes columns, schema, filter, "
            f"tensor_column_schema and the scan hints {', '.join(_PARQUET_SCAN_HINTS)} "
            "(which change nothing)")
    options = IOOptions(filesystem, ray_remote_args, num_cpus, memory, concurrency)
    options.task_args("ReadParquet")  # bad options fail before any file is listed
    selection = _options.FileOptions.of(
        "read_parquet", file_extensions, _PARQUET_EXTENSIONS, include_paths=include_paths,
        ignore_missing_paths=ignore_missing_paths, partitioning=partitioning,
        partition_filter=partition_filter)
    import pyarrow.compute as pc

    if filter is not None and not isinstance(filter, pc.Expression):
        raise TypeError(f"read_parquet: filter={filter!r} must be a pyarrow.compute.Expression, "
                        "e.g. pyarrow.dataset.field('x') > 5")
    fs, files = _read.resolve_files(paths, None, filesystem, selection)
    partitions = _read.partition_values(fs, files, selection.partitioning)
    # a filter may name partition columns: each file's fragment is told its values
    partitions_of = (dict(zip(files, partitions, strict=True))
                     if partitions and filter is not None else None)
    names = [name for name, _, _ in partitions[0]] if partitions else []
    target = _read.parquet_schema(fs, files, columns, schema, names)
    if partitions and columns is not None:  # the partition columns that columns names
        partitions = [tuple(p for p in values if p[0] in columns) for values in partitions]
        partitions = partitions if partitions[0] else None
    reader = _read.parquet_reader(target, filter, partitions_of)
    pieces = _read.parquet_pieces(target, row_filter=filter, partitions_of=partitions_of)
    if tensor_column_schema:
        reader = _read.tensor_columns(reader, dict(tensor_column_schema))
        pieces = _read.tensor_columns(pieces, dict(tensor_column_schema))
    return Dataset(_read.file_source(
        "ReadParquet", paths, reader, selection=selection,
        parallelism=_blocks(parallelism, override_num_blocks), resolved=(fs, files),
        native=True, pieces=pieces, options=options, partitions=partitions))


def read_csv(paths: Paths, *, parallelism: int = -1, include_paths: bool = False,
             override_num_blocks: int | None = None,
             filesystem: Any = None, ray_remote_args: dict[str, Any] | None = None,
             num_cpus: float | None = None, memory: float | None = None,
             concurrency: int | None = None, ignore_missing_paths: bool = False,
             file_extensions: Sequence[str] | None = None,
             partitioning: Partitioning | None = _HIVE,
             partition_filter: PathPartitionFilter | None = None,
             arrow_open_stream_args: dict[str, Any] | None = None,
             **arrow_csv_args: Any) -> Dataset:
    """CSV files (a file, a folder's files, or a list; local paths or fsspec URLs such as
    ``s3://``), with a header row. ``**arrow_csv_args`` go to ``pyarrow.csv.read_csv``:
    ``parse_options=pyarrow.csv.ParseOptions(delimiter="\\t")`` for TSV, ``read_options=``,
    ``convert_options=``. Compressed files (``.csv.gz``...) are decompressed, as their
    extension says or as ``arrow_open_stream_args={"compression": "gzip"}`` does. The other
    arguments are ``read_parquet``'s.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> ember.data.from_items([{"name": "ada", "age": 36}]).write_csv(folder)
    >>> ember.data.read_csv(folder).take_all()
    [{'name': 'ada', 'age': 36}]
    >>> import shutil; shutil.rmtree(folder)
    """
    import pyarrow.csv as pacsv

    args = _arrow_args("read_csv", arrow_csv_args, pacsv.read_csv, {
        "read_options": pacsv.ReadOptions, "parse_options": pacsv.ParseOptions,
        "convert_options": pacsv.ConvertOptions})
    selection = _options.FileOptions.of(
        "read_csv", file_extensions, None, include_paths=include_paths,
        ignore_missing_paths=ignore_missing_paths, partitioning=partitioning,
        partition_filter=partition_filter, arrow_open_stream_args=arrow_open_stream_args)
    return _read_files("ReadCSV", paths, _read.csv_reader(args, selection.open_args), selection,
                       parallelism=parallelism, override_num_blocks=override_num_blocks,
                       filesystem=filesystem, ray_remote_args=ray_remote_args,
                       num_cpus=num_cpus, memory=memory, concurrency=concurrency, native=True)


def read_json(paths: Paths, *, parallelism: int = -1, include_paths: bool = False,
              override_num_blocks: int | None = None,
              filesystem: Any = None, ray_remote_args: dict[str, Any] | None = None,
              num_cpus: float | None = None, memory: float | None = None,
              concurrency: int | None = None, ignore_missing_paths: bool = False,
              file_extensions: Sequence[str] | None = _JSON_EXTENSIONS,
              partitioning: Partitioning | None = _HIVE,
              partition_filter: PathPartitionFilter | None = None,
              arrow_open_stream_args: dict[str, Any] | None = None,
              **arrow_json_args: Any) -> Dataset:
    """Newline-delimited JSON files (one object per line; ``.json``, ``.jsonl``, plain or
    compressed: ``.jsonl.gz``...). ``**arrow_json_args`` go to ``pyarrow.json.read_json``
    (``read_options=``, ``parse_options=``). The other arguments are ``read_csv``'s."""
    import pyarrow.json as pajson

    args = _arrow_args("read_json", arrow_json_args, pajson.read_json, {
        "read_options": pajson.ReadOptions, "parse_options": pajson.ParseOptions})
    selection = _options.FileOptions.of(
        "read_json", file_extensions, _JSON_EXTENSIONS, include_paths=include_paths,
        ignore_missing_paths=ignore_missing_paths, partitioning=partitioning,
        partition_filter=partition_filter, arrow_open_stream_args=arrow_open_stream_args)
    return _read_files("ReadJSON", paths, _read.json_reader(args, selection.open_args),
                       selection, parallelism=parallelism,
                       override_num_blocks=override_num_blocks, filesystem=filesystem,
                       ray_remote_args=ray_remote_args, num_cpus=num_cpus, memory=memory,
                       concurrency=concurrency, native=True)


def read_text(paths: Paths, *, encoding: str = "utf-8", drop_empty_lines: bool = True,
              parallelism: int = -1, include_paths: bool = False,
              override_num_blocks: int | None = None,
              filesystem: Any = None, ray_remote_args: dict[str, Any] | None = None,
              num_cpus: float | None = None, memory: float | None = None,
              concurrency: int | None = None, ignore_missing_paths: bool = False,
              file_extensions: Sequence[str] | None = None,
              partitioning: Partitioning | None = None,
              partition_filter: PathPartitionFilter | None = None,
              arrow_open_stream_args: dict[str, Any] | None = None) -> Dataset:
    """One row ``{"text": line}`` per line (compressed files decompressed, as in
    ``read_csv``)."""
    selection = _options.FileOptions.of(
        "read_text", file_extensions, None, include_paths=include_paths,
        ignore_missing_paths=ignore_missing_paths, partitioning=partitioning,
        partition_filter=partition_filter, arrow_open_stream_args=arrow_open_stream_args)
    return _read_files("ReadText", paths,
                       _read.text_reader(encoding, drop_empty_lines, selection.open_args),
                       selection, parallelism=parallelism,
                       override_num_blocks=override_num_blocks, filesystem=filesystem,
                       ray_remote_args=ray_remote_args, num_cpus=num_cpus, memory=memory,
                       concurrency=concurrency)


def read_binary_files(paths: Paths, *, include_paths: bool = False,
                      parallelism: int = -1, override_num_blocks: int | None = None,
                      filesystem: Any = None, ray_remote_args: dict[str, Any] | None = None,
                      num_cpus: float | None = None, memory: float | None = None,
                      concurrency: int | None = None, ignore_missing_paths: bool = False,
                      file_extensions: Sequence[str] | None = None,
                      partitioning: Partitioning | None = None,
                      partition_filter: PathPartitionFilter | None = None,
                      arrow_open_stream_args: dict[str, Any] | None = None) -> Dataset:
    """One row ``{"bytes": contents}`` per file (a compressed file's contents decompressed,
    as Ray does)."""
    selection = _options.FileOptions.of(
        "read_binary_files", file_extensions, None, include_paths=include_paths,
        ignore_missing_paths=ignore_missing_paths, partitioning=partitioning,
        partition_filter=partition_filter, arrow_open_stream_args=arrow_open_stream_args)
    return _read_files("ReadBinary", paths, _read.binary_reader(selection.open_args),
                       selection, parallelism=parallelism,
                       override_num_blocks=override_num_blocks, filesystem=filesystem,
                       ray_remote_args=ray_remote_args, num_cpus=num_cpus, memory=memory,
                       concurrency=concurrency)


def read_images(paths: Paths, *, size: tuple[int, int] | None = None, mode: str | None = None,
                include_paths: bool = False, parallelism: int = -1,
                override_num_blocks: int | None = None,
                filesystem: Any = None, ray_remote_args: dict[str, Any] | None = None,
                num_cpus: float | None = None, memory: float | None = None,
                concurrency: int | None = None, ignore_missing_paths: bool = False,
                file_extensions: Sequence[str] | None = _IMAGE_EXTENSIONS,
                partitioning: Partitioning | None = None,
                partition_filter: PathPartitionFilter | None = None) -> Dataset:
    """One row ``{"image": array}`` per image file (needs Pillow); ``partitioning`` such as
    ``Partitioning("dir", base_dir=root, field_names=["label"])`` labels each image with its
    folder."""
    selection = _options.FileOptions.of(
        "read_images", file_extensions, _IMAGE_EXTENSIONS, include_paths=include_paths,
        ignore_missing_paths=ignore_missing_paths, partitioning=partitioning,
        partition_filter=partition_filter)
    return _read_files("ReadImages", paths, _read.image_reader(size, mode), selection,
                       parallelism=parallelism, override_num_blocks=override_num_blocks,
                       filesystem=filesystem, ray_remote_args=ray_remote_args,
                       num_cpus=num_cpus, memory=memory, concurrency=concurrency)


def read_numpy(paths: Paths, *, parallelism: int = -1,
               override_num_blocks: int | None = None,
               filesystem: Any = None, ray_remote_args: dict[str, Any] | None = None,
               num_cpus: float | None = None, memory: float | None = None,
               concurrency: int | None = None, include_paths: bool = False,
               ignore_missing_paths: bool = False,
               file_extensions: Sequence[str] | None = _NUMPY_EXTENSIONS,
               partitioning: Partitioning | None = None,
               partition_filter: PathPartitionFilter | None = None,
               arrow_open_stream_args: dict[str, Any] | None = None,
               **numpy_load_args: Any) -> Dataset:
    """``.npy`` files; each array's rows become rows ``{"data": row}``. ``**numpy_load_args``
    go to ``numpy.load`` (``mmap_mode=`` for local files; pickled arrays are refused unless
    you pass ``allow_pickle=True`` for files you trust)."""
    import numpy as np

    args = _options.format_args(numpy_load_args, _options.parameters(np.load, "file"),
                                "read_numpy", "numpy.load")
    options = IOOptions(filesystem, ray_remote_args, num_cpus, memory, concurrency)
    if args.get("mmap_mode") is not None:
        first = paths if isinstance(paths, str) else next(iter(paths), "")
        fs, _ = _options.fs_and_path(first, _options.as_filesystem(filesystem))
        if not _read._is_local(fs):
            raise ValueError(f"read_numpy: mmap_mode={args['mmap_mode']!r} maps local files; "
                             f"{paths!r} is not on the local filesystem (leave mmap_mode out)")
    selection = _options.FileOptions.of(
        "read_numpy", file_extensions, _NUMPY_EXTENSIONS, include_paths=include_paths,
        ignore_missing_paths=ignore_missing_paths, partitioning=partitioning,
        partition_filter=partition_filter, arrow_open_stream_args=arrow_open_stream_args)
    return Dataset(_read.file_source("ReadNumpy", paths,
                                     _read.numpy_reader(args, selection.open_args),
                                     selection=selection,
                                     parallelism=_blocks(parallelism, override_num_blocks),
                                     options=options))


def read_datasource(datasource: Datasource, *, parallelism: int = -1,
                    override_num_blocks: int | None = None, num_cpus: float | None = None,
                    concurrency: int | None = None, memory: float | None = None,
                    ray_remote_args: dict[str, Any] | None = None, **read_args: Any) -> Dataset:
    """Read a custom ``Datasource``: its ``get_read_tasks(n)`` (``n`` from
    ``override_num_blocks``, else from its size estimate and the CPUs) gives the read tasks,
    each run as an ember task (``num_cpus`` and ``memory`` each, at most ``concurrency`` at
    once, started with ``ray_remote_args``). ``read_args`` go to ``get_read_tasks``."""
    return Dataset(_read.datasource_source(
        datasource, parallelism=_blocks(parallelism, override_num_blocks),
        options=IOOptions(None, ray_remote_args, num_cpus, memory, concurrency),
        read_args=read_args))


def read_sql(sql: str, connection_factory: Callable[[], Any], *, sql_params: Any = None,
             parallelism: int = -1, override_num_blocks: int | None = None,
             num_cpus: float | None = None, memory: float | None = None,
             concurrency: int | None = None,
             ray_remote_args: dict[str, Any] | None = None) -> Dataset:
    """The rows of the query ``sql``, read through a Python DB-API 2 connection that
    ``connection_factory()`` opens (it is called in each read task, so it must be
    picklable: a module-level function, not a connection). With more than one block, the
    query is counted first and each task reads a share with ``LIMIT``/``OFFSET``; a
    database that cannot do that is read by one task. ``sql_params`` go to
    ``cursor.execute``; the other arguments are ``read_datasource``'s.

    >>> import sqlite3, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "db.sqlite")
    >>> with sqlite3.connect(path) as db:
    ...     _ = db.execute("CREATE TABLE t (x INTEGER)")
    ...     _ = db.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    >>> ember.data.read_sql("SELECT x FROM t", lambda: sqlite3.connect(path)).take_all()
    [{'x': 1}, {'x': 2}]
    """
    from ember.data._sql import SQLDatasource

    if not isinstance(sql, str):
        raise TypeError(f"read_sql: sql={sql!r} must be a query string")
    if not callable(connection_factory) or hasattr(connection_factory, "cursor"):
        raise TypeError(f"read_sql: connection_factory={connection_factory!r} must be a "
                        "function that returns a DB-API 2 connection (such as "
                        "lambda: sqlite3.connect(path))")
    return read_datasource(SQLDatasource(sql, connection_factory, sql_params),
                           parallelism=parallelism, override_num_blocks=override_num_blocks,
                           num_cpus=num_cpus, memory=memory, concurrency=concurrency,
                           ray_remote_args=ray_remote_args)
