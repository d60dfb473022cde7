"""``Dataset.groupby(key)``: aggregations and ``map_groups`` over range-partitioned blocks (every
key value lands in one block, so each block is reduced on its own)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ember.data import _block, _shuffle
from ember.data._block import Block
from ember.data._plan import AllToAll, MapStage
from ember.data._transforms import BlockFn, MapBatches, Transform, udf_name

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

    def map_groups(self, fn: Any, *, compute: Any = None,
                   batch_format: str | None = "default",
                   fn_args: tuple[Any, ...] = (), fn_kwargs: dict[str, Any] | None = None,
                   fn_constructor_args: tuple[Any, ...] = (),
                   fn_constructor_kwargs: dict[str, Any] | None = None,
                   num_cpus: float | None = None, num_gpus: float = 0.0,
                   concurrency: int | tuple[int, ...] | None = None,
                   **ray_remote_args: Any) -> Dataset:
        """Apply ``fn`` to each group as one batch; it returns a batch (with columns). As in
        ``map_batches``: a function runs in tasks, a callable class on an actor pool
        (``compute="actors"``, ``ActorPoolStrategy(...)`` or ``concurrency=``), built with
        ``fn_constructor_args``/``fn_constructor_kwargs``.

        >>> ds = ember.data.from_items([{"k": 1, "v": 2}, {"k": 1, "v": 3}])
        >>> ds.groupby("k").map_groups(lambda g: {"n": [len(g["v"])]}).take_all()
        [{'n': 2}]
        """
        from ember.data._dataset import Dataset

        compute = Dataset._compute(fn, compute, concurrency, "map_groups")
        Dataset._check_udf(fn, compute, "map_groups")
        inner = MapBatches(name="MapGroups", fn=fn, batch_size=None,
                           batch_format=_block.check_batch_format(batch_format),
                           fn_args=tuple(fn_args), fn_kwargs=dict(fn_kwargs or {}),
                           ctor=(tuple(fn_constructor_args), dict(fn_constructor_kwargs or {})))
        step = MapGroups(f"MapGroups({udf_name(fn)})", inner, self._key)
        return Dataset(self._partitioned())._map_stage(
            step.name, (step,), compute=compute, num_cpus=num_cpus, num_gpus=num_gpus,
            ray_remote_args=ray_remote_args)


@dataclass
class MapGroups(Transform):
    """``map_groups``: the UDF on each group of a range-partitioned block (rows of one key
    are next to each other after the partition's sort)."""

    inner: MapBatches = field(default_factory=lambda: MapBatches("MapGroups"))
    key: str | None = None

    def setup(self) -> None:
        self.inner.setup()

    def apply(self, block: Block) -> Block:
        if block.num_rows == 0:
            return block
        if self.key is None:
            return self.inner.apply(block)
        keys = _block.column_to_numpy(block.column(self.key))
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        ends = np.r_[starts[1:], len(keys)]
        return _block.concat([self.inner.apply(block.slice(a, b - a))
                              for a, b in zip(starts, ends, strict=True)])
