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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ember.data.block import BlockMetadata

__all__ = ["Datasource", "ReadTask"]


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
