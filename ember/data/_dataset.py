"""``Dataset``: a lazy plan over Arrow blocks; transformations add to the plan, consumption runs
it on the streaming executor."""

from __future__ import annotations

import builtins
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from ember.data import _block, _iterator, _shuffle, _split, _write
from ember.data._block import Block
from ember.data._context import DataContext
from ember.data._executor import execute
from ember.data._export import Exports
from ember.data._grouped import GroupedData
from ember.data._options import IOOptions, open_stream_args, remote_args
from ember.data._plan import (
    ActorPoolStrategy,
    AllToAll,
    Bundle,
    InputBlocks,
    Limit,
    MapStage,
    Node,
    TaskPoolStrategy,
    Union,
    describe,
    fetch,
    input_files,
    strategy,
)
from ember.data._ray25 import Ray25Names
from ember.data._split import DataIterator
from ember.data._stats import DatasetStats
from ember.data._transforms import BlockFn, MapBatches, MapRows, Transform, is_class_udf, udf_name


class Dataset(Exports, Ray25Names, _iterator.BatchIteration):
    """A lazy, streaming dataset of rows with named columns, stored as Arrow blocks.

    >>> ds = ember.data.range(1000).map_batches(lambda b: {"id": b["id"] * 2})
    >>> sorted(ds.take_all(), key=lambda row: row["id"])[:2]  # rows come unordered
    [{'id': 0}, {'id': 2}]
    """

    def __init__(self, plan: Node) -> None:
        self._plan = plan
        self._stats = DatasetStats()

    def __repr__(self) -> str:
        return f"Dataset(plan={describe(self._plan)})"

    # -- execution ------------------------------------------------------------------------------
    def _bundles(self, *, ordered: bool = False, in_process: bool = False) -> Iterator[Bundle]:
        ctx = DataContext.get_current()
        if ordered and not ctx.preserve_order:
            ctx = dataclasses.replace(ctx, preserve_order=True)
        bundles, stats = execute(self._plan, ctx, in_process=in_process)
        self._stats = stats
        return bundles

    def iter_internal_refs(self) -> Iterator[Any]:
        """The ObjectRefs of the blocks, as they are produced."""
        for bundle in self._bundles():
            yield bundle.ref

    def _blocks(self, prefetch_blocks: int = 0) -> Iterator[Block]:
        # The blocks are wanted here: reads of local files may run here (see Read.in_process).
        return _iterator.blocks_of(self._bundles(in_process=True), prefetch_blocks)

    def _blocks_in_order(self) -> list[Block]:
        """Every block, in the plan's order: gathered as they finish and put in order at the
        end, so the execution never waits on a slow block (as ``preserve_order`` makes it)."""
        placed = list(_iterator.blocks_of(self._bundles(in_process=True), 0,
                                          lambda bundle: (bundle.seq, fetch(bundle.ref))))
        placed.sort(key=lambda pair: pair[0])  # stable: a task's blocks keep their order
        return [block for _, block in placed]

    def _owned_blocks(self, prefetch_blocks: int) -> Iterator[tuple[Block, bool]]:
        return _iterator.blocks_of(self._bundles(in_process=True), prefetch_blocks,
                                   _iterator.fetch_owned)

    def stats(self) -> DatasetStats:
        """Per-operator wall and CPU time, rows, bytes and peak memory of the last execution."""
        return self._stats

    # -- transformations --------------------------------------------------------------------------
    def _map_stage(self, name: str, transforms: tuple[Transform, ...], *,
                   compute: Any = None, num_cpus: float | None = None, num_gpus: float = 0.0,
                   resources: dict[str, float] | None = None,
                   ray_remote_args: dict[str, Any] | None = None) -> Dataset:
        compute = strategy(compute)
        pool = compute if isinstance(compute, ActorPoolStrategy) else None
        # num_cpus and num_gpus are parameters of their own, so only resources can come here.
        own, options = remote_args(ray_remote_args, actors=pool is not None, what=name)
        if "resources" in own:  # Ray passes them among the ray_remote_args
            resources = {**own["resources"], **(resources or {})}
        max_tasks = compute.size if isinstance(compute, TaskPoolStrategy) else None
        return Dataset(MapStage(self._plan, name, transforms, pool, num_cpus,
                                num_gpus or 0.0, resources, max_tasks=max_tasks,
                                remote_args=options or None))

    @staticmethod
    def _compute(fn: Any, compute: Any, concurrency: Any, what: str) -> Any:
        """The compute strategy for ``fn``: ``compute=`` as given, or Ray's ``concurrency=``:
        for a class, ``n`` (a pool of n actors), ``(min, max)`` or ``(min, max, initial)``
        (an autoscaling pool); for a function, ``n`` (at most n tasks at once)."""
        compute = strategy(compute)
        if concurrency is None:
            return compute
        if compute is not None:
            raise ValueError(f"{what}: pass concurrency= or compute=, not both (concurrency= "
                             "is Ray's current way to ask for the same)")
        if isinstance(concurrency, bool) or not isinstance(concurrency, (int, tuple)):
            raise TypeError(f"{what}: concurrency={concurrency!r} must be an int, or a "
                            "(min, max) or (min, max, initial) tuple for a class")
        if isinstance(concurrency, int):
            if concurrency < 1:
                raise ValueError(f"{what}: concurrency={concurrency} must be >= 1")
            if is_class_udf(fn):
                return ActorPoolStrategy(size=concurrency)
            return TaskPoolStrategy(size=concurrency)
        if not is_class_udf(fn):
            raise ValueError(
                f"{what}: concurrency={concurrency} (a tuple) asks for an autoscaling actor "
                "pool, which runs a callable class; for a function pass concurrency=n (at "
                "most n tasks at once)")
        if len(concurrency) not in (2, 3) or not all(
                isinstance(c, int) and not isinstance(c, bool) for c in concurrency):
            raise ValueError(f"{what}: concurrency={concurrency!r} must be (min, max) or "
                             "(min, max, initial), each an int")
        return ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1],
                                 initial_size=concurrency[2] if len(concurrency) == 3 else None)

    @staticmethod
    def _check_udf(fn: Any, compute: Any, what: str) -> None:
        if not callable(fn):
            raise TypeError(f"{what} takes a function or a callable class, got {fn!r}")
        if is_class_udf(fn) and not isinstance(compute, ActorPoolStrategy):
            raise ValueError(
                f"{what} got the class {fn.__name__}: classes run on an actor pool, so pass "
                "concurrency=n (or (min, max)), compute=\"actors\", or "
                "compute=ember.data.ActorPoolStrategy(size=n)"
            )

    def map(self, fn: Callable[[dict[str, Any]], dict[str, Any]], *, compute: Any = None,
            num_cpus: float | None = None, num_gpus: float = 0.0,
            fn_args: tuple[Any, ...] = (), fn_kwargs: dict[str, Any] | None = None,
            fn_constructor_args: tuple[Any, ...] = (),
            fn_constructor_kwargs: dict[str, Any] | None = None,
            concurrency: int | tuple[int, ...] | None = None,
            **ray_remote_args: Any) -> Dataset:
        """Apply ``fn`` to each row (a dict); it returns a dict. ``ray_remote_args`` (Ray's:
        ``memory``, ``scheduling_strategy``, ``runtime_env``, ``max_retries``...) go to its
        tasks or its pool's actors."""
        compute = self._compute(fn, compute, concurrency, "map")
        self._check_udf(fn, compute, "map")
        step = MapRows(f"Map({udf_name(fn)})", fn, fn_args, fn_kwargs or {},
                       (fn_constructor_args, fn_constructor_kwargs or {}), "map")
        return self._map_stage(step.name, (step,), compute=compute, num_cpus=num_cpus,
                               num_gpus=num_gpus, ray_remote_args=ray_remote_args)

    def flat_map(self, fn: Callable[[dict[str, Any]], list[dict[str, Any]]], *,
                 compute: Any = None, num_cpus: float | None = None, num_gpus: float = 0.0,
                 fn_args: tuple[Any, ...] = (), fn_kwargs: dict[str, Any] | None = None,
                 fn_constructor_args: tuple[Any, ...] = (),
                 fn_constructor_kwargs: dict[str, Any] | None = None,
                 concurrency: int | tuple[int, ...] | None = None,
                 **ray_remote_args: Any) -> Dataset:
        """Apply ``fn`` to each row; it returns a list of rows (``ray_remote_args``: as for
        ``map``)."""
        compute = self._compute(fn, compute, concurrency, "flat_map")
        self._check_udf(fn, compute, "flat_map")
        step = MapRows(f"FlatMap({udf_name(fn)})", fn, fn_args, fn_kwargs or {},
                       (fn_constructor_args, fn_constructor_kwargs or {}), "flat_map")
        return self._map_stage(step.name, (step,), compute=compute, num_cpus=num_cpus,
                               num_gpus=num_gpus, ray_remote_args=ray_remote_args)

    def filter(self, fn: Callable[[dict[str, Any]], bool], *, compute: Any = None,
               num_cpus: float | None = None, num_gpus: float = 0.0,
               fn_args: tuple[Any, ...] = (), fn_kwargs: dict[str, Any] | None = None,
               fn_constructor_args: tuple[Any, ...] = (),
               fn_constructor_kwargs: dict[str, Any] | None = None,
               concurrency: int | tuple[int, ...] | None = None,
               **ray_remote_args: Any) -> Dataset:
        """Keep the rows for which ``fn(row, *fn_args, **fn_kwargs)`` is true (a class is
        built once per actor with ``fn_constructor_args``/``fn_constructor_kwargs``;
        ``ray_remote_args``: as for ``map``)."""
        compute = self._compute(fn, compute, concurrency, "filter")
        self._check_udf(fn, compute, "filter")
        step = MapRows(f"Filter({udf_name(fn)})", fn, tuple(fn_args), dict(fn_kwargs or {}),
                       (tuple(fn_constructor_args), dict(fn_constructor_kwargs or {})),
                       "filter")
        return self._map_stage(step.name, (step,), compute=compute, num_cpus=num_cpus,
                               num_gpus=num_gpus, ray_remote_args=ray_remote_args)

    def map_batches(
        self, fn: Any, *, batch_size: int | str | None = "default", compute: Any = None,
        batch_format: str | None = "default", zero_copy_batch: bool = False,
        num_cpus: float | None = None, num_gpus: float = 0.0,
        fn_args: tuple[Any, ...] = (), fn_kwargs: dict[str, Any] | None = None,
        fn_constructor_args: tuple[Any, ...] = (),
        fn_constructor_kwargs: dict[str, Any] | None = None,
        resources: dict[str, float] | None = None,
        concurrency: int | tuple[int, ...] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Apply ``fn`` to batches (``dict[str, np.ndarray]`` by default) of at most
        ``batch_size`` rows (1024 by default; ``None``: whole blocks). A function runs as core
        tasks; a class runs on an actor pool, built once per actor with
        ``fn_constructor_args``/``fn_constructor_kwargs``.

        ``concurrency`` (Ray's current way to size the work): for a class, ``n`` actors, or
        ``(min, max)`` / ``(min, max, initial)`` for a pool that grows while every actor is
        busy; for a function, at most ``n`` tasks at once. ``compute=ActorPoolStrategy(...)``
        (or ``TaskPoolStrategy(size=n)``) says the same the older way, as do Ray 2.5's
        ``compute="actors"`` (an autoscaling pool) and ``compute="tasks"``; a function given
        an actor pool runs in the pool's actors. ``ray_remote_args``
        (Ray's: ``memory``, ``scheduling_strategy``, ``runtime_env``, ``max_retries`` for
        tasks, ``max_restarts``/``max_task_retries`` for actors) go to its tasks or actors."""
        compute = self._compute(fn, compute, concurrency, "map_batches")
        self._check_udf(fn, compute, "map_batches")
        if batch_size == "default":
            batch_size = 1024
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size={batch_size!r} must be an int >= 1, or None")
        step = MapBatches(
            f"MapBatches({udf_name(fn)})", fn, batch_size, _block.check_batch_format(batch_format),
            zero_copy_batch, tuple(fn_args), dict(fn_kwargs or {}),
            (tuple(fn_constructor_args), dict(fn_constructor_kwargs or {})),
        )
        return self._map_stage(step.name, (step,), compute=compute, num_cpus=num_cpus,
                               num_gpus=num_gpus, resources=resources,
                               ray_remote_args=ray_remote_args)

    def _block_fn(self, name: str, fn: Callable[[Block], Block]) -> Dataset:
        return Dataset(MapStage(self._plan, name, (BlockFn(name, fn),)))

    def add_column(self, col: str, fn: Callable[[Any], Any], *,
                   batch_format: str | None = "pandas") -> Dataset:
        """Add column ``col`` computed by ``fn(batch)`` (a pandas DataFrame by default)."""
        fmt = _block.check_batch_format(batch_format)

        def add(block: Block) -> Block:
            values = fn(_block.block_to_batch(block, fmt))
            column = _block.batch_to_block({col: values}).column(col)
            if col in block.column_names:
                return block.set_column(block.column_names.index(col), col, column)
            return block.append_column(col, column)

        return self._block_fn(f"AddColumn({col})", add)

    def drop_columns(self, cols: list[str]) -> Dataset:
        """The rows without the columns ``cols`` (a ``ValueError`` names any that do not exist).

        >>> ember.data.from_items([{"a": 1, "b": 2}]).drop_columns(["b"]).take_all()
        [{'a': 1}]
        """
        cols = list(cols)
        return self._block_fn("DropColumns", lambda b: b.drop_columns(_present(b, cols)))

    def select_columns(self, cols: list[str]) -> Dataset:
        """The rows with only the columns ``cols`` (a name or a list), in that order.

        >>> ember.data.from_items([{"a": 1, "b": 2}]).select_columns(["b"]).take_all()
        [{'b': 2}]
        """
        cols = [cols] if isinstance(cols, str) else list(cols)
        return self._block_fn("SelectColumns", lambda b: b.select(_present(b, cols)))

    def rename_columns(self, names: dict[str, str]) -> Dataset:
        """The rows with columns renamed by ``names`` (``{old: new}``); other columns keep theirs.

        >>> ember.data.from_items([{"a": 1, "b": 2}]).rename_columns({"a": "x"}).take_all()
        [{'x': 1, 'b': 2}]
        """
        mapping = dict(names)

        def rename(block: Block) -> Block:
            _present(block, list(mapping))
            return block.rename_columns([mapping.get(c, c) for c in block.column_names])

        return self._block_fn("RenameColumns", rename)

    def random_sample(self, fraction: float, *, seed: int | None = None) -> Dataset:
        """About ``fraction`` of the rows, each kept independently with that probability (``seed``
        makes it repeatable).

        >>> 300 < ember.data.range(1000).random_sample(0.5, seed=0).count() < 700
        True
        """
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction={fraction} must be between 0 and 1")

        def sample(block: Block) -> Block:
            rng = np.random.default_rng(None if seed is None else seed + block.num_rows)
            return block.filter(pa.array(rng.random(block.num_rows) < fraction))

        return self._block_fn("RandomSample", sample)

    def limit(self, limit: int) -> Dataset:
        """The first ``limit`` rows; upstream work stops once they are produced.

        >>> ember.data.range(1_000_000).limit(3).count()
        3
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit={limit!r} must be an int >= 0")
        return Dataset(Limit(self._plan, limit))

    # -- barriers -----------------------------------------------------------------------------
    def _barrier(self, name: str, fn: Callable[[list[list[Bundle]]], list[Bundle]],
                 *others: Dataset) -> Dataset:
        return Dataset(AllToAll((self._plan, *(o._plan for o in others)), name, fn))

    def repartition(self, num_blocks: int, *, shuffle: bool = False) -> Dataset:
        """The same rows in ``num_blocks`` blocks of about equal size (in order; ``shuffle=True``
        spreads rows randomly instead).

        >>> ember.data.range(100).repartition(4).num_blocks()
        4
        """
        if not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks={num_blocks!r} must be an int >= 1")
        if shuffle:
            return self._barrier("Repartition", lambda i: _shuffle.random_shuffle(
                i[0], None, num_blocks))
        return self._barrier("Repartition", lambda i: _shuffle.repartition(i[0], num_blocks))

    def random_shuffle(self, *, seed: int | None = None, num_blocks: int | None = None
                       ) -> Dataset:
        """The rows in random order (all of them move: a barrier, not a local shuffle; ``seed``
        makes it repeatable).

        >>> sorted(r["id"] for r in ember.data.range(5).random_shuffle(seed=1).take_all())
        [0, 1, 2, 3, 4]
        """
        return self._barrier("RandomShuffle",
                             lambda i: _shuffle.random_shuffle(i[0], seed, num_blocks))

    def sort(self, key: str, descending: bool = False) -> Dataset:
        """The rows sorted by the column ``key`` (``descending=True`` for largest first).

        >>> ember.data.from_items([{"x": 3}, {"x": 1}, {"x": 2}]).sort("x").take_all()
        [{'x': 1}, {'x': 2}, {'x': 3}]
        """
        if not isinstance(key, str):
            raise TypeError(f"sort takes one column name, got {key!r}")
        return self._barrier(f"Sort({key})", lambda i: _shuffle.sort(i[0], key, descending))

    def groupby(self, key: str | None) -> GroupedData:
        """Group rows by the column ``key`` (``None``: one group of every row) for an aggregate
        (``count``, ``sum``, ``min``, ``max``, ``mean``, ``std``) or ``map_groups``.

        >>> ds = ember.data.from_items([{"k": "a", "v": 1}, {"k": "b", "v": 5}, {"k": "a", "v": 3}])
        >>> ds.groupby("k").sum("v").sort("k").take_all()
        [{'k': 'a', 'sum(v)': 4}, {'k': 'b', 'sum(v)': 5}]
        """
        return GroupedData(self, key)

    def union(self, *others: Dataset) -> Dataset:
        """The rows of this dataset followed by those of ``others`` (unordered unless the
        execution preserves order).

        >>> ember.data.range(2).union(ember.data.range(3)).count()
        5
        """
        return Dataset(Union((self._plan, *(o._plan for o in others))))

    def zip(self, other: Dataset) -> Dataset:
        """Columns of both datasets side by side (same row count; clashing names get ``_1``)."""
        return self._barrier("Zip", lambda i: _shuffle.zip_datasets(i[0], i[1]), other)

    def materialize(self) -> MaterializedDataset:
        """Run the plan and keep every block in the object store, in the plan's order."""
        bundles = sorted(self._bundles(), key=lambda bundle: bundle.seq)
        out = MaterializedDataset(InputBlocks("Materialized", tuple(bundles),
                                              tuple(input_files(self._plan))))
        out._stats = self._stats
        return out

    def randomize_block_order(self, *, seed: int | None = None) -> Dataset:
        """The same blocks in a random order (no row moves between blocks: cheaper than
        ``random_shuffle``; ``seed`` makes the order repeatable)."""
        def permute(inputs: list[list[Bundle]]) -> list[Bundle]:
            bundles = inputs[0]
            order = np.random.default_rng(seed).permutation(len(bundles))
            return [bundles[i] for i in order]

        return self._barrier("RandomizeBlockOrder", permute)

    def split_proportionately(self, proportions: list[float]) -> list[MaterializedDataset]:
        """``len(proportions) + 1`` materialized pieces, in order: piece i holds about
        ``proportions[i]`` of the rows, the last one the rest (each piece non-empty).

        >>> [p.count() for p in ember.data.range(10).split_proportionately([0.5, 0.2])]
        [5, 2, 3]
        """
        if not proportions or any(
                isinstance(p, bool) or not isinstance(p, (int, float)) or p <= 0
                for p in proportions) or sum(proportions) >= 1:
            raise ValueError(f"split_proportionately({proportions!r}): give at least one "
                             "proportion, each > 0, summing to less than 1 (the last piece "
                             "gets the rest)")
        total = self.count()
        cuts = [int(total * c) for c in itertools.accumulate(proportions)]
        # Move cuts down so that no piece is empty (the last piece keeps at least one row).
        for i in builtins.range(len(cuts) - 1, -1, -1):
            upper = total if i == len(cuts) - 1 else cuts[i + 1]
            cuts[i] = builtins.min(cuts[i], upper - 1)
        if cuts[0] <= 0:
            raise ValueError(f"split_proportionately({proportions!r}): {total} rows cannot "
                             f"make {len(proportions) + 1} non-empty pieces")
        return self.split_at_indices(cuts)

    def iterator(self) -> DataIterator:
        """A ``DataIterator`` over this dataset: each ``iter_*`` call on it runs the dataset
        once (what a train worker gets from ``get_dataset_shard``)."""
        return _split.WholeDatasetIterator(self)

    def split(self, n: int, *, equal: bool = False,
              locality_hints: list[Any] | None = None) -> list[MaterializedDataset]:
        """``n`` materialized datasets (by blocks; ``equal=True``: the same number of rows).

        ``locality_hints`` (Ray's: one actor per split, the consumer of that split) is checked
        and otherwise has no effect: every block is in this machine's object store."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"split(n={n!r}) needs an int >= 1")
        if locality_hints is not None and len(locality_hints) != n:
            raise ValueError(f"split: locality_hints has {len(locality_hints)} entries; it "
                             f"needs one per split (n={n}), or leave it out")
        bundles = list(self._bundles(ordered=True))
        if equal:
            total = sum(b.meta.num_rows for b in bundles)
            per = total // n
            pieces = _shuffle.resize(bundles, [per] * n)
            return [MaterializedDataset(InputBlocks("Split", (p,))) for p in pieces]
        parts: list[list[Bundle]] = [[] for _ in range(n)]
        rows = [0] * n
        for bundle in sorted(bundles, key=lambda b: -b.meta.num_rows):
            i = rows.index(builtins.min(rows))
            parts[i].append(bundle)
            rows[i] += bundle.meta.num_rows
        return [MaterializedDataset(InputBlocks("Split", tuple(p))) for p in parts]

    def split_at_indices(self, indices: list[int]) -> list[MaterializedDataset]:
        """Materialized pieces cut at the row ``indices`` (sorted): ``[0, i0)``, ``[i0, i1)``, ...

        >>> [part.count() for part in ember.data.range(10).split_at_indices([2, 5])]
        [2, 3, 5]
        """
        bundles = list(self._bundles(ordered=True))
        total = sum(b.meta.num_rows for b in bundles)
        edges = [0, *(builtins.min(i, total) for i in indices), total]
        if any(b < a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"indices {indices} must be sorted and >= 0")
        sizes = [b - a for a, b in itertools.pairwise(edges)]
        pieces = _shuffle.resize(bundles, sizes)
        return [MaterializedDataset(InputBlocks("Split", (p,))) for p in pieces]

    def train_test_split(self, test_size: float | int, *, shuffle: bool = False,
                         seed: int | None = None) -> tuple[MaterializedDataset,
                                                           MaterializedDataset]:
        """``(train, test)``: the last ``test_size`` rows (a fraction, or a number of rows) become
        ``test``; ``shuffle=True`` (with ``seed``) shuffles first.

        >>> train, test = ember.data.range(10).train_test_split(0.2)
        >>> train.count(), test.take_all()
        (8, [{'id': 8}, {'id': 9}])
        """
        ds = self.random_shuffle(seed=seed) if shuffle else self
        bundles = list(ds._bundles(ordered=True))
        total = sum(b.meta.num_rows for b in bundles)
        if isinstance(test_size, float):
            if not 0 < test_size < 1:
                raise ValueError(f"test_size={test_size} as a fraction must be in (0, 1)")
            n_test = math.ceil(total * test_size)
        else:
            if not 0 <= test_size <= total:
                raise ValueError(f"test_size={test_size} rows must be in [0, {total}]")
            n_test = test_size
        train, test = _shuffle.resize(bundles, [total - n_test, n_test])
        return (MaterializedDataset(InputBlocks("Train", (train,))),
                MaterializedDataset(InputBlocks("Test", (test,))))

    def streaming_split(self, n: int, *, equal: bool = False,
                        locality_hints: list[Any] | None = None) -> list[DataIterator]:
        """``n`` iterators that share ONE streaming execution: each block goes to exactly one
        of them (``equal=True``: each gets the same number of rows, the remainder dropped).
        Send each to a different worker; every ``iter_*`` call on all ``n`` is one epoch.

        >>> a, b = ember.data.range(100).streaming_split(2, equal=True)
        >>> # worker 1: for batch in a.iter_batches(): ...    worker 2: the same with b
        """
        return _split.streaming_split(self._plan, n, equal, locality_hints)

    # -- consumption ----------------------------------------------------------------------------
    def _first_blocks(self, limit: int) -> Iterator[Block]:
        # The first rows of the dataset, in its order (as Ray's take() gives them): the
        # blocks after the limit come out in plan order, not as their tasks finish.
        return _iterator.blocks_of(self.limit(limit)._bundles(ordered=True), 0)

    def take(self, limit: int = 20) -> list[dict[str, Any]]:
        """The first ``limit`` rows as a list of dicts, in the dataset's order (runs only as much
        of the plan as needed).

        >>> ember.data.from_items([{"name": "ada", "age": 36}]).take()
        [{'name': 'ada', 'age': 36}]
        >>> len(ember.data.range(100).take(5))
        5
        """
        rows: list[dict[str, Any]] = []
        if limit <= 0:
            return rows
        for block in self._first_blocks(limit):
            rows.extend(_block.iter_rows(block))
        return rows[:limit]

    def take_all(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Every row as a list of dicts, in the dataset's order; with ``limit``, a
        ``ValueError`` if there are more."""
        rows = [row for block in self._blocks_in_order() for row in _block.iter_rows(block)]
        if limit is not None and len(rows) > limit:
            raise ValueError(f"the dataset has more than {limit} rows (limit={limit})")
        return rows

    def take_batch(self, batch_size: int = 20, *, batch_format: str | None = "default") -> Any:
        """Up to ``batch_size`` rows as one batch (``dict`` of NumPy arrays by default;
        ``batch_format="pandas"`` or ``"pyarrow"`` on request).

        >>> ember.data.from_items([{"x": 1}]).take_batch()
        {'x': array([1])}
        """
        fmt = _block.check_batch_format(batch_format)
        block = _block.concat(list(self._first_blocks(batch_size)))
        return _block.block_to_batch(block, fmt)

    def show(self, limit: int = 20) -> None:
        """Print up to ``limit`` rows, one per line.

        >>> ember.data.from_items(["b", "a"]).sort("item").show()
        {'item': 'a'}
        {'item': 'b'}
        """
        for row in self.take(limit):
            print(row)

    def count(self) -> int:
        """The number of rows (from block metadata: blocks are not fetched)."""
        plan = self._plan
        if isinstance(plan, InputBlocks):
            return sum(b.meta.num_rows for b in plan.bundles)
        return sum(b.meta.num_rows for b in self._bundles())

    # -- aggregations ---------------------------------------------------------------------------
    def aggregate(self, *aggs: Any) -> dict[str, Any]:
        """The values of ``aggs`` (``ember.data.aggregate``: ``Count()``, ``Mean("x")``...)
        over the whole dataset, as ``{name: value}``. Each block is reduced where it is;
        only the partial results come back."""
        from ember.data import _aggregate

        return _aggregate.over_dataset(self, aggs)

    def _per_column(self, make: Callable[[str], Any], on: str | list[str] | None) -> Any:
        columns = self.columns() if on is None else [on] if isinstance(on, str) else list(on)
        aggs = [make(column) for column in columns]
        result = self.aggregate(*aggs)
        return result[aggs[0].name] if isinstance(on, str) else result

    def sum(self, on: str | list[str] | None = None, ignore_nulls: bool = True) -> Any:
        """The sum of column ``on`` (a dict per column for a list, or for ``None``: all);
        ``None`` over no values, or with a null and ``ignore_nulls=False``."""
        from ember.data.aggregate import Sum

        return self._per_column(lambda c: Sum(c, ignore_nulls=ignore_nulls), on)

    def min(self, on: str | list[str] | None = None, ignore_nulls: bool = True) -> Any:
        """The smallest value of column ``on`` (see ``sum`` for ``on`` and nulls)."""
        from ember.data.aggregate import Min

        return self._per_column(lambda c: Min(c, ignore_nulls=ignore_nulls), on)

    def max(self, on: str | list[str] | None = None, ignore_nulls: bool = True) -> Any:
        """The largest value of column ``on`` (see ``sum`` for ``on`` and nulls)."""
        from ember.data.aggregate import Max

        return self._per_column(lambda c: Max(c, ignore_nulls=ignore_nulls), on)

    def mean(self, on: str | list[str] | None = None, ignore_nulls: bool = True) -> Any:
        """The mean of column ``on`` (see ``sum`` for ``on`` and nulls)."""
        from ember.data.aggregate import Mean

        return self._per_column(lambda c: Mean(c, ignore_nulls=ignore_nulls), on)

    def std(self, on: str | list[str] | None = None, ddof: int = 1,
            ignore_nulls: bool = True) -> Any:
        """The standard deviation of column ``on`` (``ddof=1``: the sample's; NaN for fewer
        than ``ddof + 1`` values; see ``sum`` for ``on`` and nulls)."""
        from ember.data.aggregate import Std

        return self._per_column(lambda c: Std(c, ddof=ddof, ignore_nulls=ignore_nulls), on)

    def unique(self, column: str, ignore_nulls: bool = False) -> list[Any]:
        """The distinct values of ``column`` (``None`` among them for nulls unless
        ``ignore_nulls=True``), in no particular order."""
        from ember.data.aggregate import Unique

        agg = Unique(column, ignore_nulls=ignore_nulls)
        return list(self.aggregate(agg)[agg.name])

    def schema(self) -> pa.Schema | None:
        """The Arrow schema (runs the plan until a block with columns appears)."""
        for block in self._blocks():
            if block.num_columns:
                return block.schema
        return None

    def columns(self) -> list[str]:
        """The column names (from the schema; see ``schema()``).

        >>> ember.data.from_items([{"a": 1, "b": 2}]).columns()
        ['a', 'b']
        """
        schema = self.schema()
        return list(schema.names) if schema is not None else []

    def to_pandas(self, limit: int | None = None) -> Any:
        """Every row in one ``pandas.DataFrame``, in the dataset's order (``limit``: a
        ``ValueError`` if there are more).

        >>> ember.data.from_items([{"name": "ada", "age": 36}]).to_pandas()
          name  age
        0  ada   36
        """
        import pandas as pd

        block = _block.concat(self._blocks_in_order())
        if limit is not None and block.num_rows > limit:
            raise ValueError(f"the dataset has {block.num_rows} rows, over limit={limit}")
        return block.to_pandas() if block.num_columns else pd.DataFrame()

    def to_arrow_refs(self) -> list[Any]:
        """The ``ObjectRef`` of every block (a ``pyarrow.Table`` each), for code that reads blocks
        itself.
        """
        return list(self.iter_internal_refs())

    def num_blocks(self) -> int:
        """The number of blocks (runs the plan unless the dataset is materialized)."""
        if isinstance(self._plan, InputBlocks):
            return len(self._plan.bundles)
        return sum(1 for _ in self._bundles())

    # -- writes -------------------------------------------------------------------------------
    def _write(self, path: str, fmt: str, column: str | None = None, *,
               min_rows_per_file: int | None = None,
               num_rows_per_file: int | None = None, filesystem: Any = None,
               try_create_dir: bool = True, ray_remote_args: dict[str, Any] | None = None,
               concurrency: int | None = None,
               arrow_open_stream_args: dict[str, Any] | None = None,
               args_fn: Callable[[], dict[str, Any]] | None = None,
               partition_cols: list[str] | None = None, **format_args: Any) -> None:
        what = f"write_{fmt}"
        if num_rows_per_file is not None:  # Ray's older name for the same hint
            if min_rows_per_file is not None and min_rows_per_file != num_rows_per_file:
                raise ValueError("pass min_rows_per_file= (or its older name "
                                 "num_rows_per_file=), not both")
            min_rows_per_file = num_rows_per_file
        if min_rows_per_file is not None and (isinstance(min_rows_per_file, bool) or not
                                              isinstance(min_rows_per_file, int) or
                                              min_rows_per_file < 1):
            raise ValueError(f"min_rows_per_file={min_rows_per_file!r} must be an int >= 1")
        args = _write.checked_format_args(fmt, format_args, what)
        open_args = open_stream_args(arrow_open_stream_args, what) or None
        if fmt == "parquet" and open_args and open_args.get("compression"):
            raise ValueError("write_parquet: a Parquet file compresses its own pages; pass "
                             f"compression={open_args['compression']!r} rather than "
                             "arrow_open_stream_args={'compression': ...}")
        if partition_cols is not None and (isinstance(partition_cols, str) or not all(
                isinstance(c, str) for c in partition_cols)):
            raise TypeError(f"write_parquet: partition_cols={partition_cols!r} must be a list "
                            "of column names")
        step = _write.write_transform(path, fmt, column, filesystem=filesystem,
                                      create_dir=try_create_dir, format_args=args,
                                      format_args_fn=args_fn, open_args=open_args,
                                      partition_cols=partition_cols or ())
        num_cpus, options = IOOptions(ray_remote_args=ray_remote_args,
                                              concurrency=concurrency).task_args(step.name)
        # With a minimum, the write is a stage of its own whose tasks join blocks up to it, so
        # each file but the last has at least that many rows (a larger block is not split).
        writer = Dataset(MapStage(self._plan, step.name, (step,), num_cpus=num_cpus,
                                  max_tasks=concurrency, min_rows=min_rows_per_file or 0,
                                  remote_args=options))
        for _ in writer._bundles():
            pass
        self._stats = writer._stats

    def write_parquet(self, path: str, *, partition_cols: list[str] | None = None,
                      min_rows_per_file: int | None = None,
                      num_rows_per_file: int | None = None, filesystem: Any = None,
                      try_create_dir: bool = True,
                      ray_remote_args: dict[str, Any] | None = None,
                      concurrency: int | None = None,
                      arrow_open_stream_args: dict[str, Any] | None = None,
                      arrow_parquet_args_fn: Callable[[], dict[str, Any]] | None = None,
                      **arrow_parquet_args: Any) -> None:
        """One Parquet file per block, written by the task that made it (``min_rows_per_file``:
        blocks are joined so that each file but the last has at least that many rows).
        ``**arrow_parquet_args`` (``compression="gzip"``, ``row_group_size=``...) go to
        ``pyarrow.parquet.write_table`` (``schema=``: blocks are cast to it first);
        ``arrow_parquet_args_fn`` returns more of them, called in each write task.
        ``partition_cols=["year"]`` writes each block's rows in hive folders
        ``year=2024/`` (the files leave those columns out; ``read_parquet`` of the folder
        gives them back, as strings).

        Every ``write_*`` also takes Ray's ``filesystem=`` (a ``pyarrow.fs.FileSystem`` or an
        fsspec one), ``try_create_dir=``, ``arrow_open_stream_args=`` (``{"compression":
        "gzip"}``: compressed files, named ``*.csv.gz`` and so on, so reads decompress them)
        and, for its write tasks, ``ray_remote_args=`` and ``concurrency=`` (at most that
        many at once). Arguments a format's writer does not take are a ``TypeError`` here,
        before anything runs."""
        self._write(path, "parquet", min_rows_per_file=min_rows_per_file,
                    num_rows_per_file=num_rows_per_file, filesystem=filesystem,
                    try_create_dir=try_create_dir, ray_remote_args=ray_remote_args,
                    concurrency=concurrency, arrow_open_stream_args=arrow_open_stream_args,
                    args_fn=arrow_parquet_args_fn, partition_cols=partition_cols,
                    **arrow_parquet_args)

    def write_csv(self, path: str, *, min_rows_per_file: int | None = None,
                  num_rows_per_file: int | None = None, filesystem: Any = None,
                  try_create_dir: bool = True, ray_remote_args: dict[str, Any] | None = None,
                  concurrency: int | None = None,
                  arrow_open_stream_args: dict[str, Any] | None = None,
                  arrow_csv_args_fn: Callable[[], dict[str, Any]] | None = None,
                  **arrow_csv_args: Any) -> None:
        """As ``write_parquet``, in CSV: ``**arrow_csv_args`` (``write_options=
        pyarrow.csv.WriteOptions(delimiter="\\t")``) and ``arrow_csv_args_fn``'s go to
        ``pyarrow.csv.write_csv``."""
        self._write(path, "csv", min_rows_per_file=min_rows_per_file,
                    num_rows_per_file=num_rows_per_file, filesystem=filesystem,
                    try_create_dir=try_create_dir, ray_remote_args=ray_remote_args,
                    concurrency=concurrency, arrow_open_stream_args=arrow_open_stream_args,
                    args_fn=arrow_csv_args_fn, **arrow_csv_args)

    def write_json(self, path: str, *, min_rows_per_file: int | None = None,
                   num_rows_per_file: int | None = None, filesystem: Any = None,
                   try_create_dir: bool = True, ray_remote_args: dict[str, Any] | None = None,
                   concurrency: int | None = None,
                   arrow_open_stream_args: dict[str, Any] | None = None,
                   pandas_json_args_fn: Callable[[], dict[str, Any]] | None = None,
                   **pandas_json_args: Any) -> None:
        """As ``write_parquet``, in JSON: ``**pandas_json_args`` and ``pandas_json_args_fn``'s
        go to ``pandas.DataFrame.to_json`` (default, as Ray's: ``orient="records",
        lines=True``, one object per line)."""
        self._write(path, "json", min_rows_per_file=min_rows_per_file,
                    num_rows_per_file=num_rows_per_file, filesystem=filesystem,
                    try_create_dir=try_create_dir, ray_remote_args=ray_remote_args,
                    concurrency=concurrency, arrow_open_stream_args=arrow_open_stream_args,
                    args_fn=pandas_json_args_fn, **pandas_json_args)

    def write_numpy(self, path: str, *, column: str = "data",
                    min_rows_per_file: int | None = None,
                    num_rows_per_file: int | None = None, filesystem: Any = None,
                    try_create_dir: bool = True,
                    ray_remote_args: dict[str, Any] | None = None,
                    concurrency: int | None = None,
                    arrow_open_stream_args: dict[str, Any] | None = None) -> None:
        """As ``write_parquet``: ``column`` as ``.npy`` files."""
        self._write(path, "numpy", column, min_rows_per_file=min_rows_per_file,
                    num_rows_per_file=num_rows_per_file, filesystem=filesystem,
                    try_create_dir=try_create_dir, ray_remote_args=ray_remote_args,
                    concurrency=concurrency, arrow_open_stream_args=arrow_open_stream_args)

class MaterializedDataset(Dataset):
    """A dataset whose blocks are all in the object store (``materialize``, ``split``)."""



def _present(block: Block, cols: list[str]) -> list[str]:
    missing = [c for c in cols if c not in block.column_names]
    if missing:
        raise KeyError(f"columns {missing} not found; the dataset has {block.column_names}")
    return cols

