"""``Dataset.groupby(key)``: aggregations and ``map_groups`` over range-partitioned blocks (every
key value lands in one block, so each block is reduced on its own)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ember.data import _block, _shuffle
from ember.data._block import Block
from ember.data._plan import AllToAll, MapStage
from ember.data._transforms import BlockFn, MapBatches

if TYPE_CHECKING:
    from ember.data._dataset import Dataset


class GroupedData:
    """Rows grouped by ``key`` (``None``: one group of everything). Aggregations return a
    Dataset with one row per group, sorted by key, named like Ray's: ``count()``,
    ``sum(col)``, ``min(col)``, ``max(col)``, ``mean(col)``, ``std(col)``."""

    def __init__(self, dataset: Dataset, key: str | None) -> None:
        if key is not None and not isinstance(key, str):
            raise TypeError(
                f"groupby takes one column name (or None for a global group), got {key!r}"
            )
        self._dataset = dataset
        self._key = key

    def _partitioned(self) -> AllToAll:
        key = self._key
        return AllToAll((self._dataset._plan,), f"GroupBy({key})",
                        lambda inputs: _shuffle.group_partitions(inputs[0], key))

    def _aggregate(self, aggs: list[tuple[str, str, Any, str]]) -> Dataset:
        from ember.data._dataset import Dataset

        key = self._key

        def reduce(block: Block) -> Block:
            return _shuffle.aggregate_block(block, key, aggs)

        stage = MapStage(self._partitioned(), "Aggregate", (BlockFn("Aggregate", reduce),))
        return Dataset(stage)

    def _columns(self, on: str | list[str] | None) -> list[str]:
        if on is None:
            columns = self._dataset.columns()
            return [c for c in columns if c != self._key]
        return [on] if isinstance(on, str) else list(on)

    def count(self) -> Dataset:
        """The number of rows per group, in column ``count()``.

        >>> ds = ember.data.from_items([{"k": "a"}, {"k": "b"}, {"k": "a"}])
        >>> ds.groupby("k").count().sort("k").take_all()
        [{'k': 'a', 'count()': 2}, {'k': 'b', 'count()': 1}]
        """
        return self._aggregate([(self._key or "", "count", None, "count()")])

    def sum(self, on: str | list[str] | None = None) -> Dataset:
        """The sum per group of column(s) ``on`` (default: all but the key), in ``sum(x)``."""
        return self._aggregate([(c, "sum", None, f"sum({c})") for c in self._columns(on)])

    def min(self, on: str | list[str] | None = None) -> Dataset:
        """The smallest value per group of ``on`` (default: all but the key), in ``min(x)``."""
        return self._aggregate([(c, "min", None, f"min({c})") for c in self._columns(on)])

    def max(self, on: str | list[str] | None = None) -> Dataset:
        """The largest value per group of ``on`` (default: all but the key), in ``max(x)``."""
        return self._aggregate([(c, "max", None, f"max({c})") for c in self._columns(on)])

    def mean(self, on: str | list[str] | None = None) -> Dataset:
        """The mean per group of column(s) ``on`` (default: all but the key), in ``mean(x)``.

        >>> ds = ember.data.from_items([{"k": 1, "v": 2.0}, {"k": 1, "v": 4.0}])
        >>> ds.groupby("k").mean("v").take_all()
        [{'k': 1, 'mean(v)': 3.0}]
        """
        return self._aggregate([(c, "mean", None, f"mean({c})") for c in self._columns(on)])

    def std(self, on: str | list[str] | None = None, ddof: int = 1) -> Dataset:
        """The standard deviation per group of column(s) ``on`` (``ddof=1``: the sample's), in
        ``std(x)``.
        """
        # The options object is built in the worker: pyarrow's option objects do not pickle.
        return self._aggregate([(c, "stddev", ddof, f"std({c})") for c in self._columns(on)])

    def aggregate(self, *aggs: Any) -> Dataset:
        """One row per group: the key, then the value of each of ``aggs``
        (``ember.data.aggregate``: ``Count()``, ``Mean("x")``, ``Quantile("x", q=0.9)``...)."""
        from ember.data import _aggregate
        from ember.data._dataset import Dataset

        key = self._key
        fns = _aggregate.check(aggs, "GroupedData.aggregate()")

        def reduce(block: Block) -> Block:
            return _aggregate.per_group(block, key, fns)

        stage = MapStage(self._partitioned(), "Aggregate", (BlockFn("Aggregate", reduce),))
        return Dataset(stage)

    def map_groups(self, fn: Callable[..., Any], *, batch_format: str | None = "default",
                   fn_args: tuple[Any, ...] = (), fn_kwargs: dict[str, Any] | None = None
                   ) -> Dataset:
        """Apply ``fn`` to each group as one batch; it returns a batch (with columns)."""
        from ember.data._dataset import Dataset

        key = self._key
        inner = MapBatches(name="MapGroups", fn=fn, batch_size=None,
                           batch_format=_block.check_batch_format(batch_format),
                           fn_args=fn_args, fn_kwargs=fn_kwargs or {})

        def per_group(block: Block) -> Block:
            if block.num_rows == 0:
                return block
            if key is None:
                return inner.apply(block)
            keys = _block.column_to_numpy(block.column(key))
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
            ends = np.r_[starts[1:], len(keys)]
            return _block.concat([inner.apply(block.slice(a, b - a))
                                  for a, b in zip(starts, ends, strict=True)])

        stage = MapStage(self._partitioned(), "MapGroups", (BlockFn("MapGroups", per_group),))
        return Dataset(stage)

