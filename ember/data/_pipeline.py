"""Ray 2.5's ``DatasetPipeline`` (``Dataset.window`` and ``Dataset.repeat``), as a thin layer
over Datasets: a window is a Dataset over a slice of the blocks (of the read tasks, for a plan
that starts with a read, so a window reads only its own files), and each epoch of ``repeat``
runs the plan again (or reuses a materialized dataset's blocks). Transformations of the
pipeline apply to each window as it comes.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ember.data import _iterator
from ember.data._block import Block
from ember.data._plan import InputBlocks, MapStage, Node, Read

if TYPE_CHECKING:
    from ember.data._dataset import Dataset

DEFAULT_BLOCKS_PER_WINDOW = 10  # Ray 2.5's default when neither size is given

Stage = Callable[["Dataset"], "Dataset"]


def _groups(sizes: list[int | None], blocks_per_window: int | None,
            bytes_per_window: int | None) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges of consecutive blocks: ``blocks_per_window`` each, or
    blocks up to ``bytes_per_window`` (at least one; a block of unknown size is a window)."""
    if blocks_per_window is not None:
        return [(a, min(a + blocks_per_window, len(sizes)))
                for a in range(0, len(sizes), blocks_per_window)]
    assert bytes_per_window is not None
    groups: list[tuple[int, int]] = []
    start, held = 0, 0
    for i, size in enumerate(sizes):
        if i > start and (size is None or held + size > bytes_per_window):
            groups.append((start, i))
            start, held = i, 0
        held += bytes_per_window if size is None else size
    if start < len(sizes):
        groups.append((start, len(sizes)))
    return groups


def _on(chain: list[MapStage], root: Node) -> Node:
    """The map stages of ``chain`` (outermost first) applied again over ``root``."""
    node = root
    for stage in reversed(chain):
        node = dataclasses.replace(stage, input=node)
    return node


def window_plans(dataset: Dataset, blocks_per_window: int | None,
                 bytes_per_window: int | None) -> list[Node]:
    """The plans of the windows of ``dataset``: its map stages over a slice of its read
    tasks or blocks; a plan with a barrier or a limit is materialized first (as Ray 2.5
    ran what came before ``window()`` in bulk)."""
    chain: list[MapStage] = []
    node = dataset._plan
    while isinstance(node, MapStage):
        chain.append(node)
        node = node.input
    if isinstance(node, Read):
        read = node
        sizes = [t.size_bytes for t in read.tasks]
        return [_on(chain, dataclasses.replace(read, tasks=read.tasks[a:b]))
                for a, b in _groups(sizes, blocks_per_window, bytes_per_window)]
    if not isinstance(node, InputBlocks):
        chain, node = [], dataset.materialize()._plan
    assert isinstance(node, InputBlocks)
    bundles = node.bundles
    sizes = [b.meta.size_bytes for b in bundles]
    return [_on(chain, InputBlocks(node.name, bundles[a:b], node.input_files))
            for a, b in _groups(list(sizes), blocks_per_window, bytes_per_window)]


class DatasetPipeline(_iterator.BatchIteration):
    """Windows of a dataset, repeated for epochs (Ray 2.5's ``DatasetPipeline``), made by
    ``Dataset.window`` or ``Dataset.repeat``. Transformations (``map_batches``, ``map``,
    ``filter``, ``foreach_window``...) apply to each window as it is consumed;
    ``iter_batches``, ``iter_rows``, ``iter_torch_batches`` and ``to_torch`` go through every
    window of every epoch (batches may span windows); ``iter_epochs`` and
    ``iter_datasets`` give the epochs and the windows.

    >>> pipe = ember.data.range(6, parallelism=3).window(blocks_per_window=1).repeat(2)
    >>> pipe.map(lambda row: {"id": row["id"] * 10}).count()
    12
    """

    def __init__(self, windows: Callable[[], Iterator[Dataset]], times: int | None = 1,
                 stages: tuple[Stage, ...] = (), num_windows: int | None = None) -> None:
        self._windows = windows  # the windows of one pass over the base dataset
        self._times = times  # epochs; None: without end
        self._stages = stages
        self._num_windows = num_windows

    def __repr__(self) -> str:
        epochs = "forever" if self._times is None else self._times
        return (f"DatasetPipeline(num_windows={self._num_windows}, epochs={epochs}, "
                f"num_stages={len(self._stages)})")

    # -- building -------------------------------------------------------------------------------
    def _with(self, stage: Stage) -> DatasetPipeline:
        return DatasetPipeline(self._windows, self._times, (*self._stages, stage),
                               self._num_windows)

    def foreach_window(self, fn: Callable[[Dataset], Dataset]) -> DatasetPipeline:
        """Apply ``fn`` (a Dataset in, a Dataset out) to each window."""
        if not callable(fn):
            raise TypeError(f"foreach_window takes a function of a Dataset, got {fn!r}")
        return self._with(fn)

    def map(self, fn: Any, **kwargs: Any) -> DatasetPipeline:
        """``Dataset.map`` on each window."""
        return self._with(lambda ds: ds.map(fn, **kwargs))

    def map_batches(self, fn: Any, **kwargs: Any) -> DatasetPipeline:
        """``Dataset.map_batches`` on each window (same arguments)."""
        return self._with(lambda ds: ds.map_batches(fn, **kwargs))

    def flat_map(self, fn: Any, **kwargs: Any) -> DatasetPipeline:
        """``Dataset.flat_map`` on each window."""
        return self._with(lambda ds: ds.flat_map(fn, **kwargs))

    def filter(self, fn: Any, **kwargs: Any) -> DatasetPipeline:
        """``Dataset.filter`` on each window."""
        return self._with(lambda ds: ds.filter(fn, **kwargs))

    def add_column(self, col: str, fn: Any, **kwargs: Any) -> DatasetPipeline:
        """``Dataset.add_column`` on each window."""
        return self._with(lambda ds: ds.add_column(col, fn, **kwargs))

    def drop_columns(self, cols: list[str]) -> DatasetPipeline:
        """``Dataset.drop_columns`` on each window."""
        return self._with(lambda ds: ds.drop_columns(cols))

    def select_columns(self, cols: list[str]) -> DatasetPipeline:
        """``Dataset.select_columns`` on each window."""
        return self._with(lambda ds: ds.select_columns(cols))

    def random_shuffle_each_window(self, *, seed: int | None = None) -> DatasetPipeline:
        """Shuffle the rows within each window."""
        return self._with(lambda ds: ds.random_shuffle(seed=seed))

    def repartition_each_window(self, num_blocks: int, *, shuffle: bool = False
                                ) -> DatasetPipeline:
        """``Dataset.repartition`` of each window."""
        return self._with(lambda ds: ds.repartition(num_blocks, shuffle=shuffle))

    def sort_each_window(self, key: str, descending: bool = False) -> DatasetPipeline:
        """Sort the rows within each window."""
        return self._with(lambda ds: ds.sort(key, descending))

    def repeat(self, times: int | None = None) -> DatasetPipeline:
        """Every window again, ``times`` times (``None``: without end); each pass is an
        epoch of ``iter_epochs``."""
        check_times(times)
        if self._times != 1:
            raise ValueError("repeat() of a pipeline that already repeats: call repeat() once "
                             "(window(...).repeat(n), or repeat(n) alone)")
        return DatasetPipeline(self._windows, times, self._stages, self._num_windows)

    # -- consuming -------------------------------------------------------------------------------
    def _epoch(self) -> Iterator[Dataset]:
        for window in self._windows():
            for stage in self._stages:
                window = stage(window)
            yield window

    def iter_datasets(self) -> Iterator[Dataset]:
        """Each window of each epoch, as a Dataset with the pipeline's transformations."""
        epochs = itertools.count() if self._times is None else range(self._times)
        for _ in epochs:
            yield from self._epoch()

    def iter_epochs(self, max_epoch: int = -1) -> Iterator[DatasetPipeline]:
        """A pipeline per epoch (its windows, once), up to ``max_epoch`` of them (-1: all)."""
        epochs = itertools.count() if self._times is None else range(self._times)
        for i in epochs:
            if max_epoch != -1 and i >= max_epoch:
                return
            yield DatasetPipeline(self._windows, 1, self._stages, self._num_windows)

    def _blocks(self, prefetch_blocks: int) -> Iterator[Block]:
        for window in self.iter_datasets():
            yield from window._blocks(prefetch_blocks)

    def _owned_blocks(self, prefetch_blocks: int) -> Iterator[tuple[Block, bool]]:
        for window in self.iter_datasets():
            yield from window._owned_blocks(prefetch_blocks)

    def _finite(self, what: str) -> None:
        if self._times is None:
            raise ValueError(f"{what} of a pipeline that repeats without end would never "
                             "return: pass repeat(times=n), or use iter_epochs()/take()")

    def take(self, limit: int = 20) -> list[dict[str, Any]]:
        """The first ``limit`` rows, in order (runs only the windows needed)."""
        rows: list[dict[str, Any]] = []
        if limit <= 0:
            return rows
        for window in self.iter_datasets():
            rows.extend(window.take(limit - len(rows)))
            if len(rows) >= limit:
                break
        return rows

    def take_all(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Every row of every window and epoch (``limit``: a ``ValueError`` if more)."""
        self._finite("take_all()")
        rows = [row for window in self.iter_datasets() for row in window.take_all()]
        if limit is not None and len(rows) > limit:
            raise ValueError(f"the pipeline has more than {limit} rows (limit={limit})")
        return rows

    def show(self, limit: int = 20) -> None:
        """Print up to ``limit`` rows, one per line."""
        for row in self.take(limit):
            print(row)

    def count(self) -> int:
        """The number of rows over every window and epoch."""
        self._finite("count()")
        return sum(window.count() for window in self.iter_datasets())

    def schema(self) -> Any:
        """The schema of the first window."""
        for window in self.iter_datasets():
            return window.schema()
        return None


def check_times(times: int | None) -> None:
    if times is not None and (isinstance(times, bool) or not isinstance(times, int)
                              or times < 1):
        raise ValueError(f"repeat(times={times!r}): times must be an int >= 1, or None to "
                         "repeat without end")


def window(dataset: Dataset, blocks_per_window: int | None, bytes_per_window: int | None
           ) -> DatasetPipeline:
    for name, value in (("blocks_per_window", blocks_per_window),
                        ("bytes_per_window", bytes_per_window)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"window({name}={value!r}): it must be an int >= 1")
    if blocks_per_window is not None and bytes_per_window is not None:
        raise ValueError("window() takes blocks_per_window= or bytes_per_window=, not both")
    if blocks_per_window is None and bytes_per_window is None:
        blocks_per_window = DEFAULT_BLOCKS_PER_WINDOW
    from ember.data._dataset import Dataset

    plans = window_plans(dataset, blocks_per_window, bytes_per_window)
    return DatasetPipeline(lambda: (Dataset(plan) for plan in plans), 1,
                           num_windows=len(plans))


def repeat(dataset: Dataset, times: int | None) -> DatasetPipeline:
    check_times(times)
    return DatasetPipeline(lambda: iter([dataset]), times, num_windows=1)
