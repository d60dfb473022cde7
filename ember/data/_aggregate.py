"""Plumbing of ``Dataset.aggregate`` and ``GroupedData.aggregate``: the aggregations
themselves (``ember.data.aggregate``) are pure; here their partial results are made next to
the blocks (one small row per block) and merged in the caller, or, per group, computed on the
blocks that the groupby shuffle made (every key in one block)."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ember.data import _block
from ember.data._block import Block
from ember.data._transforms import BlockFn
from ember.data.aggregate import AggregateFn

if TYPE_CHECKING:
    from ember.data._dataset import Dataset

_PARTIALS = "__ember_partials"


def check(aggs: Sequence[Any], what: str) -> list[AggregateFn]:
    if not aggs:
        raise ValueError(f"{what} needs at least one aggregation, e.g. "
                         "ember.data.aggregate.Count() or Mean('col')")
    for agg in aggs:
        if not isinstance(agg, AggregateFn):
            raise TypeError(f"{what} takes aggregations from ember.data.aggregate (Count(), "
                            f"Sum('col'), AggregateFn(...)), got {agg!r}")
    return list(aggs)


def over_dataset(dataset: Dataset, aggs: Sequence[Any]) -> dict[str, Any]:
    """``{name: value}`` of ``aggs`` over every row of ``dataset``."""
    fns = check(aggs, "Dataset.aggregate()")

    def partials(block: Block) -> Block:
        accs = [fn.accumulate(fn.start(None), block) for fn in fns]
        return pa.table({_PARTIALS: pa.array([pickle.dumps(accs)], pa.binary())})

    reduced = dataset._map_stage("Aggregate", (BlockFn("Aggregate", partials),))
    accs = [fn.start(None) for fn in fns]
    for block in reduced._blocks():
        for data in block.column(_PARTIALS).to_pylist():
            # Pickles made by this runtime's own workers, from the lines above.
            for i, part in enumerate(pickle.loads(data)):
                accs[i] = fns[i].merge(accs[i], part)
    return {fn.name: fn.result(acc) for fn, acc in zip(fns, accs, strict=True)}


def per_group(block: Block, key: str | None, fns: list[AggregateFn]) -> Block:
    """One row per key value of ``block`` (which holds every row of its keys), sorted by key:
    the key, then each aggregation's value."""
    names = [fn.name for fn in fns]
    if block.num_rows == 0:
        return pa.table({}) if key is None else block.slice(0, 0).select([key])
    if key is None:
        groups: list[tuple[Any, Block]] = [(None, block)]
    else:
        keys = _block.column_to_numpy(block.column(key))
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        ends = np.r_[starts[1:], len(keys)]
        groups = [(block.column(key)[int(a)].as_py(), block.slice(int(a), int(b - a)))
                  for a, b in zip(starts, ends, strict=True)]
    columns: dict[str, list[Any]] = {} if key is None else {key: [k for k, _ in groups]}
    for fn, name in zip(fns, names, strict=True):
        columns[name] = [fn.result(fn.accumulate(fn.start(k), rows)) for k, rows in groups]
    return pa.table(columns)
