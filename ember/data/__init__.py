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

from collections.abc import Sequence
from typing import Any

from ember.data import _read
from ember.data import aggregate as aggregate
from ember.data import block as block
from ember.data import datasource as datasource
from ember.data._block import StrictModeError
from ember.data._context import DataContext
from ember.data._dataset import Dataset, MaterializedDataset
from ember.data._grouped import GroupedData
from ember.data._options import IOOptions
from ember.data._plan import ActorPoolStrategy, TaskPoolStrategy
from ember.data._split import DataIterator
from ember.data._stats import DatasetStats
from ember.data.block import BlockMetadata
from ember.data.datasource import Datasource, ReadTask

__all__ = [
    "ActorPoolStrategy",
    "BlockMetadata",
    "DataContext",
    "DataIterator",
    "Dataset",
    "Datasource",
    "DatasetStats",
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


def read_parquet(paths: Paths, *, columns: list[str] | None = None,
                 schema: Any = None, parallelism: int = -1,
                 override_num_blocks: int | None = None, filesystem: Any = None,
                 ray_remote_args: dict[str, Any] | None = None, num_cpus: float | None = None,
                 memory: float | None = None, concurrency: int | None = None,
                 filter: Any = None) -> Dataset:
    """Parquet files (a file, a folder, or a list). Files whose schemas differ are read as one
    schema, unified as ``pyarrow.unify_schemas`` does (columns missing from a file are null,
    numeric types widen); ``schema=`` forces a ``pyarrow.Schema``. Files whose schemas cannot
    be unified raise a ``ValueError`` naming two of them. ``filter`` (a
    ``pyarrow.compute.Expression`` such as ``pyarrow.dataset.field("x") > 5``, as in Ray) keeps
    only the rows it holds for, skipping row groups whose statistics rule it out; it may name
    columns that ``columns`` leaves out.

    Every ``read_*`` of files also takes Ray's ``filesystem=`` (a ``pyarrow.fs.FileSystem`` or
    an fsspec one such as ``s3fs.S3FileSystem(endpoint_url=...)``; paths may keep or drop their
    ``s3://``) and, for its read tasks, ``num_cpus=``, ``memory=``, ``concurrency=`` (at most
    that many at once) and ``ray_remote_args=`` (``scheduling_strategy``, ``runtime_env``,
    ``max_retries``...)."""
    options = IOOptions(filesystem, ray_remote_args, num_cpus, memory, concurrency)
    options.task_args("ReadParquet")  # bad options fail before any file is listed
    fs, files = _read.resolve_files(paths, [".parquet"], filesystem)
    target = _read.parquet_schema(fs, files, columns, schema)
    import pyarrow.compute as pc

    if filter is not None and not isinstance(filter, pc.Expression):
        raise TypeError(f"read_parquet: filter={filter!r} must be a pyarrow.compute.Expression, "
                        "e.g. pyarrow.dataset.field('x') > 5")
    return Dataset(_read.file_source(
        "ReadParquet", paths, _read.parquet_reader(target, filter), extensions=[".parquet"],
        parallelism=_blocks(parallelism, override_num_blocks), resolved=(fs, files),
        native=True, pieces=_read.parquet_pieces(target, row_filter=filter), options=options))


def read_csv(paths: Paths, *, parallelism: int = -1, include_paths: bool = False,
             override_num_blocks: int | None = None,
             filesystem: Any = None, ray_remote_args: dict[str, Any] | None = None,
             num_cpus: float | None = None, memory: float | None = None,
             concurrency: int | None = None) -> Dataset:
    """CSV files (a file, a folder, or a list; local paths or fsspec URLs such as ``s3://``),
    with a header row; ``include_paths=True`` adds a ``path`` column.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> ember.data.from_items([{"name": "ada", "age": 36}]).write_csv(folder)
    >>> ember.data.read_csv(folder).take_all()
    [{'name': 'ada', 'age': 36}]
    >>> import shutil; shutil.rmtree(folder)
    """
    return Dataset(_read.file_source("ReadCSV", paths, _read.csv_reader, extensions=[".csv"],
                                     include_paths=include_paths,
                                     parallelism=_blocks(parallelism, override_num_blocks),
                                     native=True,
                                     options=IOOptions(
                                         filesystem, ray_remote_args, num_cpus, memory,
                                         concurrency)))


def read_json(paths: Paths, *, parallelism: int = -1, include_paths: bool = False,
              override_num_blocks: int | None = None,
              filesystem: Any = None, ray_remote_args: dict[str, Any] | None = None,
              num_cpus: float | None = None, memory: float | None = None,
              concurrency: int | None = None) -> Dataset:
    """Newline-delimited JSON files (one object per line)."""
    return Dataset(_read.file_source("ReadJSON", paths, _read.json_reader,
                                     extensions=[".json", ".jsonl"],
                                     include_paths=include_paths,
                                     parallelism=_blocks(parallelism, override_num_blocks),
                                     native=True,
                                     options=IOOptions(
                                         filesystem, ray_remote_args, num_cpus, memory,
                                         concurrency)))


def read_text(paths: Paths, *, encoding: str = "utf-8", drop_empty_lines: bool = True,
              parallelism: int = -1, include_paths: bool = False,
              override_num_blocks: int | None = None,
              filesystem: Any = None, ray_remote_args: dict[str, Any] | None = None,
              num_cpus: float | None = None, memory: float | None = None,
              concurrency: int | None = None) -> Dataset:
    """One row ``{"text": line}`` per line."""
    return Dataset(_read.file_source("ReadText", paths,
                                     _read.text_reader(encoding, drop_empty_lines),
                                     include_paths=include_paths,
                                     parallelism=_blocks(parallelism, override_num_blocks),
                                     options=IOOptions(
                                         filesystem, ray_remote_args, num_cpus, memory,
                                         concurrency)))


def read_binary_files(paths: Paths, *, include_paths: bool = False,
                      parallelism: int = -1, override_num_blocks: int | None = None,
                      filesystem: Any = None, ray_remote_args: dict[str, Any] | None = None,
                      num_cpus: float | None = None, memory: float | None = None,
                      concurrency: int | None = None) -> Dataset:
    """One row ``{"bytes": contents}`` per file."""
    return Dataset(_read.file_source("ReadBinary", paths, _read.binary_reader,
                                     include_paths=include_paths,
                                     parallelism=_blocks(parallelism, override_num_blocks),
                                     options=IOOptions(
                                         filesystem, ray_remote_args, num_cpus, memory,
                                         concurrency)))


def read_images(paths: Paths, *, size: tuple[int, int] | None = None, mode: str | None = None,
                include_paths: bool = False, parallelism: int = -1,
                override_num_blocks: int | None = None,
                filesystem: Any = None, ray_remote_args: dict[str, Any] | None = None,
                num_cpus: float | None = None, memory: float | None = None,
                concurrency: int | None = None) -> Dataset:
    """One row ``{"image": array}`` per image file (needs Pillow)."""
    return Dataset(_read.file_source("ReadImages", paths, _read.image_reader(size, mode),
                                     extensions=list(_read.IMAGE_EXTENSIONS),
                                     include_paths=include_paths,
                                     parallelism=_blocks(parallelism, override_num_blocks),
                                     options=IOOptions(
                                         filesystem, ray_remote_args, num_cpus, memory,
                                         concurrency)))


def read_numpy(paths: Paths, *, parallelism: int = -1,
               override_num_blocks: int | None = None,
               filesystem: Any = None, ray_remote_args: dict[str, Any] | None = None,
               num_cpus: float | None = None, memory: float | None = None,
               concurrency: int | None = None) -> Dataset:
    """``.npy`` files; each array's rows become rows ``{"data": row}``."""
    return Dataset(_read.file_source("ReadNumpy", paths, _read.numpy_reader,
                                     extensions=[".npy"],
                                     parallelism=_blocks(parallelism, override_num_blocks),
                                     options=IOOptions(
                                         filesystem, ray_remote_args, num_cpus, memory,
                                         concurrency)))


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
