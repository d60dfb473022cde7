"""Sources: ``range``, ``from_*`` (data already in this process) and ``read_*`` (files on local
paths or fsspec URLs). File reads become one read task per file, run by the executor."""

from __future__ import annotations

import builtins
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

import ember
from ember.data import _block, _transforms
from ember.data._block import Block
from ember.data._context import DataContext
from ember.data._options import FileOptions, IOOptions, as_filesystem, fs_and_path
from ember.data._plan import BlockMeta, Bundle, InputBlocks, Read, ReadTask


def default_parallelism(total_bytes: int | None, num_rows: int | None = None) -> int:
    """Blocks of at least ``target_min_block_bytes``, at least two per CPU, at most
    ``max_parallelism`` unless blocks would then be larger than ``target_max_block_size``,
    never more than rows."""
    ctx = DataContext.get_current()
    cpus = int(ember.cluster_resources().get("CPU", 1))
    by_size = (total_bytes or 0) // ctx.target_min_block_bytes
    parallelism = min(ctx.max_parallelism, max(2 * cpus, by_size))
    if total_bytes and ctx.target_max_block_size:
        parallelism = max(parallelism, -(-total_bytes // ctx.target_max_block_size))
    if num_rows is not None:
        parallelism = min(parallelism, max(num_rows, 1))
    return max(1, parallelism)


def _check_parallelism(parallelism: int) -> None:
    if isinstance(parallelism, bool) or not isinstance(parallelism, int) or (
        parallelism < 1 and parallelism != -1
    ):
        raise ValueError(f"parallelism={parallelism!r} must be an int >= 1 (or -1: automatic)")


def _splits(n: int, parts: int) -> list[tuple[int, int]]:
    parts = max(1, min(parts, n)) if n else 1
    edges = [n * i // parts for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts)]


# -- in-memory sources --------------------------------------------------------------------------
def _range_block(start: int, end: int, shape: tuple[int, ...] | None) -> list[Block]:
    ids = np.arange(start, end, dtype=np.int64)
    if shape is None:
        return [_block.batch_to_block({"id": ids})]
    data = np.broadcast_to(ids.reshape((-1,) + (1,) * len(shape)), (len(ids), *shape))
    return [_block.batch_to_block({"data": np.ascontiguousarray(data)})]


def range_source(n: int, *, parallelism: int = -1, shape: tuple[int, ...] | None = None) -> Read:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"range(n={n!r}): n must be an int >= 0")
    _check_parallelism(parallelism)
    row_bytes = 8 * (math.prod(shape) if shape else 1)
    parts = parallelism if parallelism > 0 else default_parallelism(n * row_bytes, n)
    tasks = tuple(
        ReadTask(functools.partial(_range_block, start, end, shape), end - start,
                 (end - start) * row_bytes)
        for start, end in _splits(n, parts)
    )
    return Read("Range" if shape is None else "RangeTensor", tasks)


def blocks_source(name: str, blocks: Sequence[Block]) -> InputBlocks:
    bundles = tuple(
        Bundle(ember.put(block), BlockMeta(block.num_rows, _block.size_bytes(block)), (i,))
        for i, block in enumerate(blocks)
    )
    return InputBlocks(name, bundles)


def _as_block(value: Any, kind: str) -> tuple[Block, dict[str, int]]:
    """Inside a task: an object of a ``from_*_refs`` call as a block, and its size."""
    if kind == "numpy":
        block = _block.batch_to_block({"data": np.asarray(value)})
    elif isinstance(value, pa.Table):
        block = value
    else:
        block = _block.batch_to_block(value, what=f"from_{kind}_refs")
    return block, {"rows": block.num_rows, "bytes": _block.size_bytes(block)}


def refs_source(name: str, refs: Any, kind: str) -> InputBlocks:
    """Blocks from ObjectRefs of tables, DataFrames or arrays: each is turned into a block by a
    task where it lives, so the data never passes through this process."""
    items = list(refs) if isinstance(refs, (list, tuple)) else [refs]
    if not all(isinstance(r, ember.ObjectRef) for r in items):
        raise TypeError(f"from_{kind}_refs takes ObjectRefs (ember.put(...)), got "
                        f"{[type(r).__name__ for r in items if not isinstance(r, ember.ObjectRef)]}")
    convert = ember.remote(_as_block).options(num_returns=2, num_cpus=0)
    pairs = [convert.remote(ref, kind) for ref in items]
    metas = ember.get([meta for _, meta in pairs])
    bundles = tuple(Bundle(block, BlockMeta(meta["rows"], meta["bytes"]), (i,))
                    for i, ((block, _), meta) in enumerate(zip(pairs, metas, strict=True)))
    return InputBlocks(name, bundles)


def _split_table(table: Block, parallelism: int) -> list[Block]:
    parts = parallelism if parallelism > 0 else default_parallelism(table.nbytes, table.num_rows)
    return [table.slice(a, b - a) for a, b in _splits(table.num_rows, parts)]


def from_items(items: Sequence[Any], *, parallelism: int = -1) -> InputBlocks:
    _check_parallelism(parallelism)
    items = list(items)
    if items and all(isinstance(i, dict) for i in items):
        rows = [_block.row_to_dict(i, what="from_items") for i in items]
    else:
        rows = [{"item": i} for i in items]
    parts = parallelism if parallelism > 0 else default_parallelism(None, len(items))
    blocks = [_block.rows_to_block(rows[a:b]) for a, b in _splits(len(rows), parts)]
    return blocks_source("FromItems", blocks)


def from_numpy(arrays: np.ndarray | Sequence[np.ndarray]) -> InputBlocks:
    if isinstance(arrays, np.ndarray):
        arrays = [arrays]
    blocks = [_block.batch_to_block({"data": np.asarray(a)}) for a in arrays]
    return blocks_source("FromNumpy", blocks)


def from_pandas(dfs: Any) -> InputBlocks:
    frames = dfs if isinstance(dfs, (list, tuple)) else [dfs]
    blocks = [_block.batch_to_block(df, what="from_pandas") for df in frames]
    return blocks_source("FromPandas", blocks)


def from_arrow(tables: pa.Table | Sequence[pa.Table]) -> InputBlocks:
    items = tables if isinstance(tables, (list, tuple)) else [tables]
    blocks = [t if isinstance(t, pa.Table) else pa.Table.from_batches([t]) for t in items]
    return blocks_source("FromArrow", blocks)


def from_huggingface(dataset: Any, *, parallelism: int = -1) -> InputBlocks:
    if getattr(dataset, "_indices", None) is not None:
        # After select/filter/shuffle/train_test_split a datasets.Dataset keeps its original
        # table plus an indices mapping; the rows the user sees are the mapped ones.
        dataset = dataset.flatten_indices()
    table = getattr(dataset, "data", None)
    table = getattr(table, "table", table)
    if not isinstance(table, pa.Table):
        raise TypeError(
            f"from_huggingface takes a datasets.Dataset (not an IterableDataset or DatasetDict), "
            f"got {type(dataset).__name__}; pick a split first, e.g. ds['train']"
        )
    return blocks_source("FromHuggingFace", _split_table(table, parallelism))


def from_torch(dataset: Any, *, parallelism: int = -1) -> InputBlocks:
    items = [dataset[i] for i in range(len(dataset))]
    return from_items(items, parallelism=parallelism)


# -- files --------------------------------------------------------------------------------------
def resolve_files(paths: str | Sequence[str], extensions: Sequence[str] | None,
                  filesystem: Any = None, selection: FileOptions | None = None
                  ) -> tuple[Any, list[str]]:
    """The filesystem and the files of ``paths`` (files as given, folders' files found
    recursively, hidden ``.``/``_`` names left out), as ``selection`` picks them: by extension
    (a ``file_extensions`` the user gave applies to every file, a reader's default only to
    what is found in folders), missing paths skipped with ``ignore_missing_paths``, and the
    ``partition_filter`` applied. ``extensions``: without ``selection``, its defaults."""
    if selection is None:
        selection = FileOptions(tuple(extensions) if extensions else None)
    path_list = [paths] if isinstance(paths, str) else list(paths)
    if not path_list:
        raise ValueError("no paths given: pass a file, a directory or a list of them")
    filesystem = as_filesystem(filesystem)
    fs, _ = fs_and_path(path_list[0], filesystem)
    wanted = selection.file_extensions
    files: list[str] = []
    for path in path_list:
        _, stripped = fs_and_path(path, filesystem)
        if fs.isdir(stripped):
            found = sorted(f for f in fs.find(stripped) if not _hidden(f))
            if wanted:
                found = [f for f in found if _has_extension(f, wanted)]
            files.extend(found)
        elif fs.exists(stripped):
            if not selection.extensions_given or _has_extension(stripped, wanted or ()):
                files.append(stripped)
        elif not selection.ignore_missing_paths:
            raise FileNotFoundError(f"no such file or directory: {path!r} (pass "
                                    "ignore_missing_paths=True to skip missing paths)")
    if selection.partition_filter is not None:
        keep = selection.partition_filter
        base = partition_base(fs, keep.partitioning)
        files = [f for f in files if keep.apply(f, base)]
    if not files:
        ending = f" ending in {', '.join(wanted)}" if wanted else ""
        kept = " that partition_filter keeps" if selection.partition_filter else ""
        raise FileNotFoundError(f"no files{ending}{kept} found under {paths!r}")
    return fs, files


def _has_extension(path: str, extensions: Sequence[str]) -> bool:
    return path.split("?", 1)[0].lower().endswith(tuple(extensions))


def _hidden(path: str) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.startswith((".", "_"))


# Partition values of a file, as it adds them to its blocks: (column, value, type) each.
Partitions = tuple[tuple[str, Any, pa.DataType], ...]
PARTITION_ARROW_TYPES = {str: pa.string(), int: pa.int64(), float: pa.float64(),
                         bool: pa.bool_()}


def partition_base(fs: Any, partitioning: Any) -> str:
    """``partitioning.base_dir`` as a path of ``fs`` (no ``scheme://``; local ones absolute)."""
    if not partitioning.base_dir:
        return ""
    if partitioning.filesystem is not None:
        fs = as_filesystem(partitioning.filesystem)
    _, stripped = fs_and_path(partitioning.base_dir, fs)
    return str(fs._strip_protocol(stripped))


def partition_values(fs: Any, files: Sequence[str], partitioning: Any
                     ) -> list[Partitions] | None:
    """Each file's partition columns (every column that any file has; ``None`` for a file
    without it), or ``None`` when no file is in a partition folder."""
    if partitioning is None:
        return None
    base = partition_base(fs, partitioning)
    parsed = [partitioning.parse(f, base) for f in files]
    names = list(dict.fromkeys(name for values in parsed for name in values))
    if not names:
        return None
    types = {name: PARTITION_ARROW_TYPES[(partitioning.field_types or {}).get(name, str)]
             for name in names}
    return [tuple((name, values.get(name), types[name]) for name in names)
            for values in parsed]


def add_partitions(block: Block, partitions: Partitions, path: str) -> Block:
    """``block`` with its file's partition columns: appended, or, where the file has the
    column already, checked to hold the same value (as Ray does) and set to it."""
    import pyarrow.compute as pc

    n = block.num_rows
    for name, value, kind in partitions:
        if value is None:
            column = pa.nulls(n, kind)
        else:
            column = pa.array([value], kind).take(pa.array(np.zeros(n, np.int32)))
        if name not in block.column_names:
            block = block.append_column(name, column)
            continue
        index = block.schema.get_field_index(name)
        existing = block.column(index)
        try:
            column = column.cast(existing.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise ValueError(f"{path}: partition value {name}={value!r} cannot be cast to the "
                             f"file's column {name!r} of type {existing.type}") from None
        if pc.all(pc.equal(column, existing)).as_py() is False:
            raise ValueError(f"{path}: the file's column {name!r} holds "
                             f"{existing.unique().to_pylist()[:5]}, not its partition value "
                             f"{value!r}; read it with partitioning=None")
        block = block.set_column(index, name, column)
    return block


# A reader turns (filesystem, path) into the file's block, or into its blocks piece by piece.
Reader = Callable[[Any, str], "Block | Iterable[Block]"]


def _read_files(fs: Any, files: Sequence[str], reader: Reader, include_paths: bool,
                partitions: Sequence[Partitions] | None = None) -> Iterable[Block]:
    for i, path in enumerate(files):
        try:
            read = reader(fs, path)
            for block in [read] if isinstance(read, pa.Table) else read:
                if partitions is not None:
                    block = add_partitions(block, partitions[i], path)
                if include_paths:
                    block = block.append_column("path", pa.array([path] * block.num_rows,
                                                                 pa.string()))
                yield block
        except Exception as exc:
            # Readers see file objects, so their errors rarely say which file was bad.
            _transforms.add_note(exc, f"ember.data: raised while reading {path}")
            raise


def file_source(
    name: str, paths: str | Sequence[str], reader: Reader, *,
    selection: FileOptions = FileOptions(), parallelism: int = -1,
    resolved: tuple[Any, list[str]] | None = None, native: bool = False,
    pieces: Reader | None = None, options: IOOptions = IOOptions(),
    partitions: list[Partitions] | bool | None = True,
) -> Read:
    """A read of ``paths`` (the files ``selection`` picks), each task reading some files with
    ``reader``. ``native``: the reader decodes in native code off the GIL (pyarrow), so reads
    of local files may run in threads of the consuming process (``Read.in_process``);
    ``pieces`` reads a file there in pieces of a few MiB. ``partitions``: each file's
    partition columns (``True``: from ``selection.partitioning``)."""
    _check_parallelism(parallelism)
    num_cpus, task_options = options.task_args(name)
    fs, files = resolved if resolved is not None else resolve_files(
        paths, None, options.filesystem, selection)
    if partitions is True:
        partitions = partition_values(fs, files, selection.partitioning)
    elif partitions is False:
        partitions = None
    include_paths = selection.include_paths
    sizes = []
    for f in files:
        try:
            sizes.append(int(fs.size(f)))
        except Exception:  # size is only a planning hint
            sizes.append(0)
    parts = parallelism if parallelism > 0 else min(len(files), DataContext.get_current().max_parallelism)
    tasks = []
    for a, b in _splits(len(files), parts):
        group = files[a:b]
        values = None if partitions is None else partitions[a:b]
        tasks.append(ReadTask(
            functools.partial(_read_files, fs, group, reader, include_paths, values), None,
            sum(sizes[a:b]), pieces=None if pieces is None else functools.partial(
                _read_files, fs, group, pieces, include_paths, values),
            input_files=tuple(group)))
    return Read(name, tuple(tasks), num_cpus=num_cpus, max_tasks=options.concurrency,
                in_process=native and _is_local(fs), remote_args=task_options)


def _is_local(fs: Any) -> bool:
    wrapped = getattr(fs, "fs", None)  # fsspec's wrapper of a pyarrow filesystem
    if wrapped is not None and getattr(wrapped, "type_name", None) == "local":
        return True
    return "file" in ([fs.protocol] if isinstance(fs.protocol, str) else fs.protocol)


def _open_native(fs: Any, path: str) -> Any:
    """``path`` open for pyarrow's readers: a local file is read by pyarrow itself (reads
    through a Python file object would allocate a fresh bytes object per read), anything else
    through ``fs``."""
    if _is_local(fs):
        return pa.OSFile(path, "rb")
    return fs.open(path, "rb")


def parquet_schema(fs: Any, files: Sequence[str], columns: list[str] | None,
                   schema: pa.Schema | None, partition_names: Sequence[str] = ()
                   ) -> pa.Schema:
    """The schema every block of ``files`` is given: ``schema`` when the caller forces one,
    else the files' own schemas unified as ``pyarrow.unify_schemas`` does (a column missing
    from some files becomes nullable; int32 and int64 become int64). Schemas that cannot be
    unified raise a ``ValueError`` naming two files that clash. Only footers are read."""
    import pyarrow.parquet as pq

    if schema is not None:
        if not isinstance(schema, pa.Schema):
            raise TypeError(f"read_parquet(schema=...) takes a pyarrow.Schema, got {schema!r}")
        unified = schema
    else:
        def footer(path: str) -> pa.Schema:
            try:
                return pq.read_schema(path, filesystem=fs)
            except Exception as exc:
                _transforms.add_note(exc, f"ember.data: raised while reading {path}")
                raise

        if len(files) == 1:
            schemas = [footer(files[0])]
        else:
            with ThreadPoolExecutor(min(16, len(files))) as pool:  # remote footers: at once
                schemas = list(pool.map(footer, files))
        unified = _unify(files, schemas)
    if columns is None:
        return unified
    missing = [c for c in columns if c not in unified.names and c not in partition_names]
    if missing:
        raise ValueError(f"read_parquet(columns={columns}): no file has the columns {missing}; "
                         f"the columns are {unified.names + list(partition_names)}")
    return pa.schema([unified.field(c) for c in columns if c in unified.names],
                     metadata=unified.metadata)


def _unify(files: Sequence[str], schemas: list[pa.Schema]) -> pa.Schema:
    if all(s.equals(schemas[0], check_metadata=False) for s in schemas[1:]):
        return schemas[0]
    stripped = [s.remove_metadata() for s in schemas]  # pandas metadata of one file misleads
    try:
        return pa.unify_schemas(stripped, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    for i in builtins.range(1, len(stripped)):  # the first file that clashes with an earlier one
        for j in builtins.range(i):
            try:
                pa.unify_schemas([stripped[j], stripped[i]], promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                clash = [f"{f.name!r} is {f.type} in the first and "
                         f"{stripped[i].field(f.name).type} in the second"
                         for f in stripped[j] if f.name in stripped[i].names
                         and f.type != stripped[i].field(f.name).type]
                raise ValueError(
                    f"parquet files {files[j]} and {files[i]} have schemas that cannot be "
                    f"unified ({'; '.join(clash) or 'incompatible types'}); read them as one "
                    "type with read_parquet(..., schema=pyarrow.schema([...])), or read them "
                    "apart") from None
    raise ValueError(f"the schemas of the parquet files under {files[0]} cannot be unified; "
                     "pass read_parquet(..., schema=pyarrow.schema([...]))")


# Rows per piece of a Parquet file read in the consuming process: about this many bytes.
PIECE_BYTES = 8 * 1024 * 1024


def _filtered_fragment(f: Any, partitions: Partitions | None) -> tuple[Any, pa.Schema]:
    """A Parquet file as a fragment to scan with a filter, and the schema the filter binds to:
    the file's columns, and its partition columns, which the fragment knows by their values
    (so a filter on them is decided without reading, and one that rules the file out skips
    it)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    fmt = pads.ParquetFileFormat()
    if not partitions:
        fragment = fmt.make_fragment(f)
        return fragment, fragment.physical_schema
    guarantee = None
    for name, value, kind in partitions:
        term = (pc.field(name).is_null() if value is None
                else pc.field(name) == pa.scalar(value, kind))
        guarantee = term if guarantee is None else guarantee & term
    fragment = fmt.make_fragment(f, partition_expression=guarantee)
    physical = fragment.physical_schema
    extra = [pa.field(name, kind) for name, _, kind in partitions if name not in physical.names]
    return fragment, pa.schema([*physical, *extra])


def parquet_reader(schema: pa.Schema, row_filter: Any = None,
                   partitions_of: Mapping[str, Partitions] | None = None
                   ) -> Callable[[Any, str], Block]:
    """Reads a file's columns of ``schema``, conformed to it: columns in its order, cast to its
    types, missing ones as nulls (the file is named if a value cannot be cast). ``row_filter``
    (a ``pyarrow.compute.Expression``, Ray's ``filter=``) keeps the rows it holds for; row
    groups whose statistics rule it out are not read. ``partitions_of`` (path -> the file's
    partition values, given with a filter): the filter may name partition columns too."""

    def read(fs: Any, path: str) -> Block:
        import pyarrow.parquet as pq

        with _open_native(fs, path) as f:
            if row_filter is not None:
                fragment, scan_schema = _filtered_fragment(f, (partitions_of or {}).get(path))
                present = [n for n in schema.names if n in fragment.physical_schema.names]
                table = fragment.to_table(schema=scan_schema, columns=present,
                                          filter=row_filter)
            else:
                file = pq.ParquetFile(f)
                present = [name for name in schema.names if name in file.schema_arrow.names]
                table = file.read(columns=present)
        return _conform(table, schema, path)

    return read


def parquet_pieces(schema: pa.Schema, piece_bytes: int = PIECE_BYTES, row_filter: Any = None,
                   partitions_of: Mapping[str, Partitions] | None = None
                   ) -> Callable[[Any, str], Iterable[Block]]:
    """``parquet_reader``, a file read in blocks of about ``piece_bytes`` (from its row
    groups' uncompressed sizes) rather than in one, for a read in the consuming process.

    The pieces live briefly (the loop takes them and moves on), so the memory they touch should
    be reused, not fresh: pages are read as they are decoded, through a small buffer
    (pre-buffering holds a whole row group: it is meant for object stores' latency), and the
    pieces come from ``piece_memory_pool``."""

    def read(fs: Any, path: str) -> Iterable[Block]:
        import pyarrow.dataset as pads

        with _open_native(fs, path) as f:
            fragment, scan_schema = _filtered_fragment(f, (partitions_of or {}).get(path))
            meta = fragment.metadata
            size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            rows = max(64, piece_bytes * meta.num_rows // max(1, size))
            present = [name for name in schema.names if name in fragment.physical_schema.names]
            # two pieces decoded ahead (pyarrow's default, 16, would hold 16 pieces a file)
            options = pads.ParquetFragmentScanOptions(
                pre_buffer=False, use_buffered_stream=True, buffer_size=1024 * 1024)
            for batch in fragment.to_batches(schema=scan_schema, columns=present,
                                             batch_size=rows, batch_readahead=2,
                                             filter=row_filter, fragment_scan_options=options,
                                             memory_pool=piece_memory_pool()):
                yield _conform(pa.Table.from_batches([batch]), schema, path)

    return read


@functools.cache
def piece_memory_pool() -> pa.MemoryPool:
    """The memory pool of the pieces read in the consuming process: pyarrow's jemalloc pool,
    keeping freed pages for 10 s (jemalloc's own default; pyarrow's is to return them at once),
    else the system allocator. Fresh pages cost a fault each, and far more on virtual machines
    that take freed memory back: measured on one (2 cores), a first pass over 1 GiB of Parquet
    took 1.1 s with the system allocator (137k faults), 1.1 s with jemalloc returning pages at
    once (165k), 0.9 s with it keeping them (80k; 2k on the next pass), and 1.8 s with
    pyarrow's default pool (mimalloc), whose transparent huge pages each cost a 2 MiB fault.
    The decay is set for pyarrow's jemalloc pool as a whole, which pyarrow uses only when asked."""
    try:
        pool = pa.jemalloc_memory_pool()
        pa.jemalloc_set_decay_ms(10_000)
    except NotImplementedError:  # a pyarrow built without jemalloc
        return pa.system_memory_pool()
    return pool


def _conform(table: Block, schema: pa.Schema, path: str) -> Block:
    """``table`` with ``schema``'s columns, in its order, cast to its types (nulls where the
    file has no such column)."""
    if table.schema.equals(schema, check_metadata=False):
        return table
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table.column(field.name)
        try:
            columns.append(column if column.type == field.type else column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(f"{path}: column {field.name!r} of type {column.type} cannot "
                             f"be read as {field.type}: {exc}") from exc
    return pa.Table.from_arrays(columns, schema=schema)


def codec_of(path: str, open_args: dict[str, Any] | None) -> str | None:
    """The compression of ``path``: ``open_args``' ``compression``, else what its extension
    says (``.gz``, ``.bz2``, ``.zst``, ``.lz4``, ``.br``), as pyarrow's ``open_input_stream``
    infers it; ``None`` for a plain file."""
    codec = (open_args or {}).get("compression")
    if codec is not None:
        return str(codec)
    try:
        return str(pa.Codec.detect(path).name)
    except (TypeError, ValueError):  # no codec's extension
        return None


def open_input(fs: Any, path: str, open_args: dict[str, Any] | None = None) -> Any:
    """``path`` open for reading from its start, decompressed (``codec_of``) and buffered as
    Ray's ``arrow_open_stream_args`` say; a plain file as ``_open_native`` opens it."""
    codec = codec_of(path, open_args)
    buffer_size = (open_args or {}).get("buffer_size")
    if codec is None and buffer_size is None:
        return _open_native(fs, path)
    return pa.input_stream(_open_native(fs, path), compression=codec, buffer_size=buffer_size)


def csv_reader(arrow_args: dict[str, Any] | None = None,
               open_args: dict[str, Any] | None = None) -> Callable[[Any, str], Block]:
    """Reads a CSV file with ``pyarrow.csv.read_csv(f, **arrow_args)`` (``read_options``,
    ``parse_options``, ``convert_options``)."""
    arrow_args = dict(arrow_args or {})

    def read(fs: Any, path: str) -> Block:
        import pyarrow.csv as pacsv

        with open_input(fs, path, open_args) as f:
            return pacsv.read_csv(f, **arrow_args)

    return read


def json_reader(arrow_args: dict[str, Any] | None = None,
                open_args: dict[str, Any] | None = None) -> Callable[[Any, str], Block]:
    """Reads a JSON-lines file with ``pyarrow.json.read_json(f, **arrow_args)``
    (``read_options``, ``parse_options``)."""
    arrow_args = dict(arrow_args or {})

    def read(fs: Any, path: str) -> Block:
        import pyarrow.json as pajson

        with open_input(fs, path, open_args) as f:
            return pajson.read_json(f, **arrow_args)

    return read


def text_reader(encoding: str, drop_empty_lines: bool,
                open_args: dict[str, Any] | None = None) -> Callable[[Any, str], Block]:
    def read(fs: Any, path: str) -> Block:
        with open_input(fs, path, open_args) as f:
            lines = f.read().decode(encoding).splitlines()
        if drop_empty_lines:
            lines = [line for line in lines if line.strip()]
        return pa.table({"text": pa.array(lines, pa.string())})

    return read


def binary_reader(open_args: dict[str, Any] | None = None) -> Callable[[Any, str], Block]:
    def read(fs: Any, path: str) -> Block:
        with open_input(fs, path, open_args) as f:
            return pa.table({"bytes": pa.array([f.read()], pa.binary())})

    return read


def numpy_reader(load_args: dict[str, Any] | None = None,
                 open_args: dict[str, Any] | None = None) -> Callable[[Any, str], Block]:
    """Reads a ``.npy`` file with ``numpy.load(f, **load_args)`` (pickles refused unless
    ``allow_pickle=True`` is given; ``mmap_mode`` maps a local file)."""
    load_args = {"allow_pickle": False, **(load_args or {})}

    def read(fs: Any, path: str) -> Block:
        import io

        if load_args.get("mmap_mode") is not None:  # numpy maps files it opens itself
            return _block.batch_to_block({"data": np.load(path, **load_args)})
        if codec_of(path, open_args) is None and not (open_args or {}).get("buffer_size"):
            with fs.open(path, "rb") as f:
                return _block.batch_to_block({"data": np.load(f, **load_args)})
        with open_input(fs, path, open_args) as f:  # np.load seeks: decompress to memory
            data = io.BytesIO(f.read())
        return _block.batch_to_block({"data": np.load(data, **load_args)})

    return read


def tensor_columns(reader: Callable[[Any, str], Any], tensors: dict[str, Any]
                   ) -> Callable[[Any, str], Any]:
    """``reader`` whose binary columns named in ``tensors`` (Ray's ``tensor_column_schema``:
    ``{column: (dtype, shape)}``) hold serialized arrays, read back as tensor columns."""

    def convert(block: Block, path: str) -> Block:
        for name, (dtype, shape) in tensors.items():
            if name not in block.column_names:
                continue
            values = block.column(name).to_pylist()
            try:
                arrays = np.stack([np.frombuffer(v, dtype=dtype).reshape(shape)
                                   for v in values]) if values else np.empty(
                    (0, *shape), dtype)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}: column {name!r} does not hold {dtype} arrays of "
                                 f"shape {tuple(shape)} (tensor_column_schema): {exc}") from None
            column = _block.batch_to_block({name: arrays}).column(0)
            block = block.set_column(block.schema.get_field_index(name), name, column)
        return block

    def read(fs: Any, path: str) -> Any:
        out = reader(fs, path)
        if isinstance(out, pa.Table):
            return convert(out, path)
        return (convert(block, path) for block in out)

    return read


def image_reader(size: tuple[int, int] | None, mode: str | None) -> Callable[[Any, str], Block]:
    def read(fs: Any, path: str) -> Block:
        try:
            from PIL import Image
        except ImportError as exc:
            raise ImportError("read_images needs Pillow: pip install pillow") from exc
        with fs.open(path, "rb") as f:
            image: Any = Image.open(f)
            if mode is not None:
                image = image.convert(mode)
            if size is not None:
                image = image.resize((size[1], size[0]))
            array = np.asarray(image)
        return _block.batch_to_block({"image": array[None, ...]})

    return read


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
# Ray's default file_extensions of read_json: JSON lines, plain or compressed.
JSON_EXTENSIONS = tuple(f".{kind}{codec}" for codec in ("", ".gz", ".br", ".zst", ".lz4")
                        for kind in ("json", "jsonl"))


# -- custom datasources -------------------------------------------------------------------------
def _run_read_task(task: Any) -> Iterable[Block]:
    for block in task():
        if isinstance(block, pa.Table):
            yield block
        elif isinstance(block, pa.RecordBatch):
            yield pa.Table.from_batches([block])
        else:  # pandas or a dict of arrays, as Ray's read tasks may return
            yield _block.batch_to_block(block, what="a ReadTask of read_datasource")


def datasource_source(datasource: Any, *, parallelism: int = -1,
                      options: IOOptions = IOOptions(),
                      read_args: dict[str, Any] | None = None) -> Read:
    _check_parallelism(parallelism)
    num_cpus, task_options = options.task_args("read_datasource")
    if not callable(getattr(datasource, "get_read_tasks", None)):
        raise TypeError(f"read_datasource takes a Datasource (with get_read_tasks), got "
                        f"{datasource!r}")
    if parallelism == -1:
        estimate = getattr(datasource, "estimate_inmemory_data_size", lambda: None)()
        parallelism = default_parallelism(estimate)
    tasks = datasource.get_read_tasks(parallelism, **(read_args or {}))
    converted = []
    for task in tasks:
        meta = getattr(task, "metadata", None)
        converted.append(ReadTask(functools.partial(_run_read_task, task),
                                  getattr(meta, "num_rows", None),
                                  getattr(meta, "size_bytes", None),
                                  input_files=tuple(getattr(meta, "input_files", None) or ())))
    name = datasource.get_name() if callable(getattr(datasource, "get_name", None)) else (
        type(datasource).__name__)
    return Read(f"Read{name}", tuple(converted), num_cpus=num_cpus,
                max_tasks=options.concurrency, remote_args=task_options)

