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
from ember.data._block import StrictModeError
from ember.data._context import DataContext
from ember.data._dataset import Dataset, MaterializedDataset
from ember.data._grouped import GroupedData
from ember.data._plan import ActorPoolStrategy, TaskPoolStrategy
from ember.data._split import DataIterator
from ember.data._stats import DatasetStats

__all__ = [
    "ActorPoolStrategy",
    "DataContext",
    "DataIterator",
    "Dataset",
    "DatasetStats",
    "GroupedData",
    "MaterializedDataset",
    "StrictModeError",
    "TaskPoolStrategy",
    "from_arrow",
    "from_huggingface",
    "from_items",
    "from_numpy",
    "from_pandas",
    "from_torch",
    "range",
    "range_tensor",
    "read_binary_files",
    "read_csv",
    "read_images",
    "read_json",
    "read_numpy",
    "read_parquet",
    "read_text",
]

Paths = str | Sequence[str]


def range(n: int, *, parallelism: int = -1) -> Dataset:
    """Rows ``{"id": 0}`` ... ``{"id": n - 1}``."""
    return Dataset(_read.range_source(n, parallelism=parallelism))


def range_tensor(n: int, *, shape: tuple[int, ...] = (1,), parallelism: int = -1) -> Dataset:
    """Rows ``{"data": array}`` where row i's array of ``shape`` is filled with i."""
    return Dataset(_read.range_source(n, parallelism=parallelism, shape=tuple(shape)))


def from_items(items: Sequence[Any], *, parallelism: int = -1) -> MaterializedDataset:
    """Rows from a list: dicts become rows, anything else becomes ``{"item": value}``."""
    return MaterializedDataset(_read.from_items(items, parallelism=parallelism))


def from_numpy(ndarrays: Any) -> MaterializedDataset:
    """One block per array, in column ``data`` (extra dimensions become tensor columns)."""
    return MaterializedDataset(_read.from_numpy(ndarrays))


def from_pandas(dfs: Any) -> MaterializedDataset:
    return MaterializedDataset(_read.from_pandas(dfs))


def from_arrow(tables: Any) -> MaterializedDataset:
    return MaterializedDataset(_read.from_arrow(tables))


def from_huggingface(dataset: Any, *, parallelism: int = -1) -> MaterializedDataset:
    """From a ``datasets.Dataset`` (its Arrow table, without copying row by row)."""
    return MaterializedDataset(_read.from_huggingface(dataset, parallelism=parallelism))


def from_torch(dataset: Any, *, parallelism: int = -1) -> MaterializedDataset:
    """From a map-style ``torch.utils.data.Dataset``: each item becomes a row ``{"item": x}``."""
    return MaterializedDataset(_read.from_torch(dataset, parallelism=parallelism))


def read_parquet(paths: Paths, *, columns: list[str] | None = None,
                 parallelism: int = -1) -> Dataset:
    return Dataset(_read.file_source("ReadParquet", paths, _read.parquet_reader(columns),
                                     extensions=[".parquet"], parallelism=parallelism))


def read_csv(paths: Paths, *, parallelism: int = -1, include_paths: bool = False) -> Dataset:
    return Dataset(_read.file_source("ReadCSV", paths, _read.csv_reader, extensions=[".csv"],
                                     include_paths=include_paths, parallelism=parallelism))


def read_json(paths: Paths, *, parallelism: int = -1, include_paths: bool = False) -> Dataset:
    """Newline-delimited JSON files (one object per line)."""
    return Dataset(_read.file_source("ReadJSON", paths, _read.json_reader,
                                     extensions=[".json", ".jsonl"],
                                     include_paths=include_paths, parallelism=parallelism))


def read_text(paths: Paths, *, encoding: str = "utf-8", drop_empty_lines: bool = True,
              parallelism: int = -1, include_paths: bool = False) -> Dataset:
    """One row ``{"text": line}`` per line."""
    return Dataset(_read.file_source("ReadText", paths,
                                     _read.text_reader(encoding, drop_empty_lines),
                                     include_paths=include_paths, parallelism=parallelism))


def read_binary_files(paths: Paths, *, include_paths: bool = False,
                      parallelism: int = -1) -> Dataset:
    """One row ``{"bytes": contents}`` per file."""
    return Dataset(_read.file_source("ReadBinary", paths, _read.binary_reader,
                                     include_paths=include_paths, parallelism=parallelism))


def read_images(paths: Paths, *, size: tuple[int, int] | None = None, mode: str | None = None,
                include_paths: bool = False, parallelism: int = -1) -> Dataset:
    """One row ``{"image": array}`` per image file (needs Pillow)."""
    return Dataset(_read.file_source("ReadImages", paths, _read.image_reader(size, mode),
                                     extensions=list(_read.IMAGE_EXTENSIONS),
                                     include_paths=include_paths, parallelism=parallelism))


def read_numpy(paths: Paths, *, parallelism: int = -1) -> Dataset:
    """``.npy`` files; each array's rows become rows ``{"data": row}``."""
    return Dataset(_read.file_source("ReadNumpy", paths, _read.numpy_reader,
                                     extensions=[".npy"], parallelism=parallelism))
