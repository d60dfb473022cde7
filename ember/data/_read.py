"""Sources: ``range``, ``from_*`` (data already in this process) and ``read_*`` (files on local
paths or fsspec URLs). File reads become one read task per file, run by the executor."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

import ember
from ember.data import _block, _transforms
from ember.data._block import Block
from ember.data._context import DataContext
from ember.data._plan import BlockMeta, Bundle, InputBlocks, Read, ReadTask


def default_parallelism(total_bytes: int | None, num_rows: int | None = None) -> int:
    """Blocks of at least ``target_min_block_bytes``, at least two per CPU, at most
    ``max_parallelism``, never more than rows."""
    ctx = DataContext.get_current()
    cpus = int(ember.cluster_resources().get("CPU", 1))
    by_size = (total_bytes or 0) // ctx.target_min_block_bytes
    parallelism = min(ctx.max_parallelism, max(2 * cpus, by_size))
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
        return [pa.table({"id": ids})]
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
def resolve_files(paths: str | Sequence[str], extensions: Sequence[str] | None) -> tuple[Any, list[str]]:
    import fsspec

    path_list = [paths] if isinstance(paths, str) else list(paths)
    if not path_list:
        raise ValueError("no paths given: pass a file, a directory or a list of them")
    fs, _ = fsspec.core.url_to_fs(path_list[0])
    files: list[str] = []
    for path in path_list:
        _, stripped = fsspec.core.url_to_fs(path)
        if fs.isdir(stripped):
            found = sorted(f for f in fs.find(stripped) if not _hidden(f))
            if extensions:
                found = [f for f in found if f.lower().endswith(tuple(extensions))]
            files.extend(found)
        elif fs.exists(stripped):
            files.append(stripped)
        else:
            raise FileNotFoundError(f"no such file or directory: {path!r}")
    if not files:
        wanted = f" ending in {', '.join(extensions)}" if extensions else ""
        raise FileNotFoundError(f"no files{wanted} found under {paths!r}")
    return fs, files


def _hidden(path: str) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.startswith((".", "_"))


def _read_files(
    fs: Any, files: Sequence[str], reader: Callable[[Any, str], Block], include_paths: bool
) -> Iterable[Block]:
    for path in files:
        try:
            block = reader(fs, path)
        except Exception as exc:
            # Readers see file objects, so their errors rarely say which file was bad.
            _transforms.add_note(exc, f"ember.data: raised while reading {path}")
            raise
        if include_paths:
            block = block.append_column("path", pa.array([path] * block.num_rows, pa.string()))
        yield block


def file_source(
    name: str, paths: str | Sequence[str], reader: Callable[[Any, str], Block], *,
    extensions: Sequence[str] | None = None, include_paths: bool = False, parallelism: int = -1,
) -> Read:
    _check_parallelism(parallelism)
    fs, files = resolve_files(paths, extensions)
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
        tasks.append(ReadTask(functools.partial(_read_files, fs, group, reader, include_paths),
                              None, sum(sizes[a:b])))
    return Read(name, tuple(tasks))


def parquet_reader(columns: list[str] | None) -> Callable[[Any, str], Block]:
    def read(fs: Any, path: str) -> Block:
        import pyarrow.parquet as pq

        return pq.read_table(path, filesystem=fs, columns=columns)

    return read


def csv_reader(fs: Any, path: str) -> Block:
    import pyarrow.csv as pacsv

    with fs.open(path, "rb") as f:
        return pacsv.read_csv(f)


def json_reader(fs: Any, path: str) -> Block:
    import pyarrow.json as pajson

    with fs.open(path, "rb") as f:
        return pajson.read_json(f)


def text_reader(encoding: str, drop_empty_lines: bool) -> Callable[[Any, str], Block]:
    def read(fs: Any, path: str) -> Block:
        with fs.open(path, "rb") as f:
            lines = f.read().decode(encoding).splitlines()
        if drop_empty_lines:
            lines = [line for line in lines if line.strip()]
        return pa.table({"text": pa.array(lines, pa.string())})

    return read


def binary_reader(fs: Any, path: str) -> Block:
    with fs.open(path, "rb") as f:
        return pa.table({"bytes": pa.array([f.read()], pa.binary())})


def numpy_reader(fs: Any, path: str) -> Block:
    with fs.open(path, "rb") as f:
        return _block.batch_to_block({"data": np.load(f, allow_pickle=False)})


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
