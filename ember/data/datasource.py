"""Custom sources under Ray's module name (``ray.data.datasource``): subclass ``Datasource``,
return ``ReadTask``s from ``get_read_tasks``, and read it with ``ember.data.read_datasource``::

    class Squares(Datasource):
        def __init__(self, n):
            self.n = n

        def estimate_inmemory_data_size(self):
            return 8 * self.n

        def get_read_tasks(self, parallelism, **kwargs):
            chunks = np.array_split(np.arange(self.n), parallelism)
            return [ReadTask(lambda c=c: [pa.table({"x": c ** 2})],
                             BlockMetadata(num_rows=len(c), size_bytes=8 * len(c)))
                    for c in chunks]

    ember.data.read_datasource(Squares(100), override_num_blocks=4).count()  # 100

Custom sinks: subclass ``Datasink`` (``write(blocks, ctx)`` in each write task, with
``on_write_start`` / ``on_write_complete`` / ``on_write_failed`` around them on the driver)
and pass it to ``Dataset.write_datasink``.

``Partitioning`` and ``PathPartitionFilter`` describe the values that the folders of a file's
path hold (``year=2024/month=05/part.parquet``), for the ``partitioning=`` and
``partition_filter=`` of every ``read_*`` of files.
"""

from __future__ import annotations

import posixpath
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ember.data.block import BlockMetadata

__all__ = ["Datasink", "Datasource", "Partitioning", "PathPartitionFilter", "ReadTask",
           "WriteResult"]

PARTITION_STYLES = ("hive", "dir")
PARTITION_TYPES = (str, int, float, bool)


class ReadTask:
    """One unit of a read: ``read_fn()`` returns the blocks (``pyarrow.Table``,
    ``pandas.DataFrame`` or dicts of NumPy arrays); ``metadata`` says what to expect. It runs
    inside an ember task, so ``read_fn`` must be picklable."""

    def __init__(self, read_fn: Callable[[], Iterable[Any]], metadata: BlockMetadata,
                 schema: Any = None, per_task_row_limit: int | None = None) -> None:
        self.read_fn = read_fn
        self.metadata = metadata
        self.schema = schema
        self.per_task_row_limit = per_task_row_limit

    def __call__(self) -> Iterable[Any]:
        return self.read_fn()


class Datasource:
    """A custom source: implement ``get_read_tasks(parallelism, **kwargs)`` (about
    ``parallelism`` read tasks) and, if it is known, ``estimate_inmemory_data_size()``."""

    def get_read_tasks(self, parallelism: int, **kwargs: Any) -> list[ReadTask]:
        """About ``parallelism`` ``ReadTask`` s that together read the whole source; each, when
        called in a worker, returns blocks (``pyarrow.Table``, ``pandas.DataFrame`` or a dict of
        arrays). Subclasses must implement it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement get_read_tasks(parallelism) returning a list "
            "of ReadTask"
        )

    def estimate_inmemory_data_size(self) -> int | None:
        """Bytes the data takes in memory, or ``None`` when unknown (used to pick the number
        of blocks)."""
        return None

    def get_name(self) -> str:
        """The name of the read operator (progress bars, ``stats()``)."""
        name = type(self).__name__
        return name[: -len("Datasource")] if name.endswith("Datasource") and len(
            name) > len("Datasource") else name

    @property
    def supports_distributed_reads(self) -> bool:
        """Whether read tasks may run in any worker (``False``: read where the driver is)."""
        return True


@dataclass(frozen=True)
class TaskContext:
    """What a write task knows of itself: ``task_idx`` (0, 1, ... within the write) and the
    name of the write operator (``op_name``)."""

    task_idx: int
    op_name: str


@dataclass
class WriteResult:
    """What ``Datasink.on_write_complete`` gets: the rows and bytes written and the value each
    ``write`` returned (``write_returns``, in task order)."""

    num_rows: int
    size_bytes: int
    write_returns: list[Any]


class Datasink:
    """A custom destination (Ray's ``Datasink``) for ``Dataset.write_datasink``: ``write``
    runs in each write task on its blocks; the callbacks run on the driver.

    >>> class Collect(Datasink):
    ...     def write(self, blocks, ctx):
    ...         return sum(block.num_rows for block in blocks)
    ...     def on_write_complete(self, result):
    ...         print(result.num_rows, sum(result.write_returns))
    >>> ember.data.range(10).write_datasink(Collect())
    10 10
    """

    def on_write_start(self, schema: Any = None) -> None:
        """Called on the driver before any write task starts, with the dataset's
        ``pyarrow.Schema`` when this method takes a ``schema`` parameter."""

    def write(self, blocks: Iterable[Any], ctx: TaskContext) -> Any:
        """Write ``blocks`` (``pyarrow.Table`` s) in a write task; what it returns reaches
        ``on_write_complete`` in ``WriteResult.write_returns``. Subclasses must implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement write(blocks, ctx)")

    def on_write_complete(self, write_result: WriteResult) -> None:
        """Called on the driver once every write task succeeded."""

    def on_write_failed(self, error: Exception) -> None:
        """Called on the driver with the first error of a failed write (before it is raised)."""

    def get_name(self) -> str:
        """The name of the write operator (``Write`` + this name without ``Datasink``)."""
        name = type(self).__name__.lstrip("_")
        return name[: -len("Datasink")] if name.endswith("Datasink") and len(
            name) > len("Datasink") else name

    @property
    def supports_distributed_writes(self) -> bool:
        """Whether write tasks may run in any worker (every worker is on this machine)."""
        return True

    @property
    def min_rows_per_write(self) -> int | None:
        """At least this many rows per ``write`` call where there are (``None``: a block)."""
        return None


@dataclass(frozen=True)
class Partitioning:
    """How the folders of a file's path hold partition values (Ray's ``Partitioning``).

    ``style="hive"``: folders named ``key=value`` (``year=2024/month=05/part.csv`` gives
    ``{"year": "2024", "month": "05"}``), other folders are ignored; ``style="dir"``: the
    folders below ``base_dir`` are the values of ``field_names``, in order
    (``2024/05/part.csv``). ``base_dir``: only the folders below it count (default: every
    folder of the path). ``field_types`` maps a field to ``int``, ``float`` or ``bool``
    (default ``str``). A read adds the values as columns of every row of the file (a column
    the file already has is checked to hold the same value, then kept).

    >>> Partitioning("hive").parse("/data/year=2024/month=05/part.csv")
    {'year': '2024', 'month': '05'}
    >>> Partitioning("dir", base_dir="/data", field_names=["year"],
    ...              field_types={"year": int}).parse("/data/2024/part.csv")
    {'year': 2024}
    """

    style: str
    base_dir: str | None = None
    field_names: list[str] | None = None
    field_types: dict[str, type] | None = None
    filesystem: Any = None

    def __post_init__(self) -> None:
        style = self.style.value if isinstance(self.style, Enum) else self.style
        if style not in PARTITION_STYLES:
            raise ValueError(f"Partitioning(style={self.style!r}): the styles are "
                             f"{', '.join(map(repr, PARTITION_STYLES))}")
        object.__setattr__(self, "style", style)
        if style == "dir" and not self.field_names:
            raise ValueError("Partitioning(style='dir') needs field_names=[...], one name per "
                             "folder level below base_dir")
        for name, kind in (self.field_types or {}).items():
            if kind not in PARTITION_TYPES:
                raise TypeError(f"Partitioning(field_types={{{name!r}: {kind!r}}}): a type must "
                                "be one of str, int, float, bool")

    def parse(self, path: str, base_dir: str | None = None) -> dict[str, Any]:
        """The partition values in the folders of ``path`` (``{}`` for a file outside
        ``base_dir`` or in no partition folder). ``base_dir`` overrides this one's, as the
        read normalizes it for its filesystem."""
        base = self.base_dir if base_dir is None else base_dir
        base = base.rstrip("/") + "/" if base else ""
        if not path.startswith(base):
            return {}
        folders = [d for d in posixpath.dirname(path[len(base):]).split("/") if d]
        if self.style == "hive":
            pairs = [d.split("=") for d in folders if d.count("=") == 1]
            values = {key: urllib.parse.unquote(value) for key, value in pairs}
            if self.field_names and values and list(values) != list(self.field_names):
                raise ValueError(f"{path}: partition keys {list(values)} are not the "
                                 f"field_names {self.field_names} of the Partitioning")
        else:
            names = self.field_names or []
            if folders and len(folders) != len(names):
                raise ValueError(f"{path}: {len(folders)} folder(s) below {base or '/'} but "
                                 f"{len(names)} field_names {names} in the Partitioning")
            values = dict(zip(names, folders, strict=False))
        for name, kind in (self.field_types or {}).items():
            if name in values:
                values[name] = _cast(values[name], kind, name, path)
        return values


def _cast(value: str, kind: type, name: str, path: str) -> Any:
    if kind is bool:
        return value.lower() == "true"
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{path}: partition value {name}={value!r} is not a "
                         f"{kind.__name__} (field_types)") from None


class PathPartitionFilter:
    """Keeps the files whose partition values (``Partitioning.parse`` of the path) a
    function accepts; given as ``partition_filter=`` to a ``read_*``, it drops files before
    any is read. Unpartitioned files are passed ``{}``.

    >>> keep = PathPartitionFilter.of(lambda d: d.get("year") == "2024")
    >>> keep(["/data/year=2023/a.csv", "/data/year=2024/b.csv"])
    ['/data/year=2024/b.csv']
    """

    def __init__(self, partitioning: Partitioning,
                 filter_fn: Callable[[dict[str, Any]], bool]) -> None:
        if not callable(filter_fn):
            raise TypeError(f"PathPartitionFilter: filter_fn={filter_fn!r} must be a function "
                            "of a dict of partition values returning a bool")
        self.partitioning = partitioning
        self.filter_fn = filter_fn

    @staticmethod
    def of(filter_fn: Callable[[dict[str, Any]], bool], style: str = "hive",
           base_dir: str | None = None, field_names: list[str] | None = None,
           field_types: dict[str, type] | None = None,
           filesystem: Any = None) -> PathPartitionFilter:
        """A filter of ``filter_fn`` over the values of ``Partitioning(style, base_dir,
        field_names, field_types)``."""
        return PathPartitionFilter(
            Partitioning(style, base_dir, field_names, field_types, filesystem), filter_fn)

    def apply(self, path: str, base_dir: str | None = None) -> bool:
        """Whether ``path`` is kept (``base_dir``: as in ``Partitioning.parse``)."""
        return bool(self.filter_fn(self.partitioning.parse(path, base_dir)))

    def __call__(self, paths: list[str]) -> list[str]:
        """The ``paths`` that are kept."""
        return [path for path in paths if self.apply(path)]
