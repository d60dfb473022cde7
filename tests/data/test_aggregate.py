"""``ember/data/aggregate.py`` (pure: blocks in, values out) and the aggregations of
``Dataset`` and ``GroupedData`` on a local runtime (Ray's ``ds.sum/min/max/mean/std/unique``,
``ds.aggregate``, ``groupby(...).aggregate``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ember
import ember.data as ed
from ember.data.aggregate import (
    AbsMax,
    AggregateFn,
    Count,
    Max,
    Mean,
    Min,
    Quantile,
    Std,
    Sum,
    Unique,
)


def over_blocks(agg: Any, blocks: list[pa.Table]) -> Any:
    """What a dataset of ``blocks`` gives: a partial per block, merged, finalized."""
    acc = agg.start(None)
    for block in blocks:
        acc = agg.merge(acc, agg.accumulate(agg.start(None), block))
    return agg.result(acc)


def split(values: list[Any], *sizes: int) -> list[pa.Table]:
    blocks, start = [], 0
    for size in (*sizes, len(values)):
        blocks.append(pa.table({"x": pa.array(values[start:start + size])}))
        start += size
    return blocks


def test_aggregate_module_names_are_pinned() -> None:
    assert ed.aggregate.__all__ == ["AbsMax", "AggregateFn", "AggregateFnV2", "Count", "Max",
                                    "Mean", "Min", "Quantile", "Std", "Sum", "Unique"]


def test_built_ins_over_several_blocks_match_numpy() -> None:
    values = [5, -7, 3, 9, 0, 2, 11]
    blocks = split(values, 2, 3)
    assert over_blocks(Sum("x"), blocks) == sum(values)
    assert (over_blocks(Min("x"), blocks), over_blocks(Max("x"), blocks)) == (-7, 11)
    assert over_blocks(AbsMax("x"), blocks) == 11
    assert over_blocks(Mean("x"), blocks) == pytest.approx(np.mean(values))
    assert over_blocks(Std("x"), blocks) == pytest.approx(np.std(values, ddof=1))
    assert over_blocks(Std("x", ddof=0), blocks) == pytest.approx(np.std(values))
    assert over_blocks(Quantile("x", q=0.75), blocks) == pytest.approx(
        np.quantile(values, 0.75))
    assert sorted(over_blocks(Unique("x"), blocks)) == sorted(set(values))
    assert over_blocks(Count(), blocks) == len(values)


def test_names_are_rays() -> None:
    assert [a.name for a in (Count(), Count("x"), Sum("x"), Min("x"), Max("x"), Mean("x"),
                             Std("x"), AbsMax("x"), Quantile("x"), Unique("x"))] == [
        "count()", "count(x)", "sum(x)", "min(x)", "max(x)", "mean(x)", "std(x)",
        "abs_max(x)", "quantile(x)", "unique(x)"]
    assert Sum("x", alias_name="total").name == "total"


@pytest.mark.parametrize("agg", [Sum, Min, Max, Mean, Std, Quantile])
def test_nulls_and_nans_are_skipped_unless_ignore_nulls_is_false(agg: Any) -> None:
    with_null = split([1.0, None, 3.0], 1)
    with_nan = split([1.0, float("nan"), 3.0], 1)
    clean = split([1.0, 3.0], 1)
    for blocks in (with_null, with_nan):
        assert over_blocks(agg("x"), blocks) == over_blocks(agg("x"), clean)
        assert over_blocks(agg("x", ignore_nulls=False), blocks) is None


@pytest.mark.parametrize("agg", [Sum, Min, Max, Mean, Std, Quantile])
def test_no_values_give_none_and_count_gives_zero(agg: Any) -> None:
    empty = [pa.table({"x": pa.array([], pa.int64())})]
    all_null = [pa.table({"x": pa.array([None, None])})]
    assert over_blocks(agg("x"), empty) is None
    assert over_blocks(agg("x"), all_null) is None
    assert over_blocks(Count(), empty) == 0
    assert (over_blocks(Count("x"), all_null), over_blocks(Count("x", ignore_nulls=True),
                                                          all_null)) == (2, 0)


def test_std_of_one_value_is_nan_as_in_ray() -> None:
    assert math.isnan(over_blocks(Std("x"), split([3])))


@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=60),
       st.lists(st.integers(0, 60), max_size=5))
def test_mean_and_std_merged_from_any_split_equal_numpy(values: list[float],
                                                        cuts: list[int]) -> None:
    blocks = split(values, *sorted(min(c, len(values)) for c in cuts))
    assert over_blocks(Mean("x"), blocks) == pytest.approx(np.mean(values), abs=1e-6)
    assert over_blocks(Std("x"), blocks) == pytest.approx(np.std(values, ddof=1),
                                                          rel=1e-6, abs=1e-6)


def test_older_aggregate_fn_with_a_row_function() -> None:
    product = AggregateFn(init=lambda key: 1, accumulate_row=lambda a, row: a * row["x"],
                          merge=lambda a, b: a * b, name="prod")
    assert over_blocks(product, split([1, 2, 3, 4], 2)) == 24
    with pytest.raises(ValueError, match="exactly one of accumulate_row"):
        AggregateFn(init=lambda k: 0, merge=lambda a, b: a + b, name="n")


def test_a_missing_column_is_named() -> None:
    with pytest.raises(KeyError, match="no column 'y'"):
        over_blocks(Sum("y"), split([1]))


def test_dataset_aggregations(ember_local: Any) -> None:
    ds = ed.from_items([{"a": i, "b": float(i % 4)} for i in range(40)]).repartition(6)

    assert (ds.sum("a"), ds.min("a"), ds.max("a"), ds.mean("a")) == (780, 0, 39, 19.5)
    assert ds.std("a") == pytest.approx(np.std(range(40), ddof=1))
    assert ds.sum(["a", "b"]) == {"sum(a)": 780, "sum(b)": 60.0}
    assert ds.max() == {"max(a)": 39, "max(b)": 3.0}  # on=None: every column
    assert sorted(ds.unique("b")) == [0.0, 1.0, 2.0, 3.0]
    assert ds.aggregate(Count(), Quantile("a", q=0.5)) == {"count()": 40, "quantile(a)": 19.5}
    assert ds.filter(lambda r: r["a"] > 100).min("a") is None

    grouped = ds.groupby("b").aggregate(Count(), Mean("a"), Max("a")).take_all()
    assert sorted(grouped, key=lambda r: r["b"]) == [
        {"b": float(k), "count()": 10, "mean(a)": 18.0 + k, "max(a)": 36 + k}
        for k in range(4)]


def test_aggregate_refuses_what_is_no_aggregation(ember_local: Any) -> None:
    ds = ed.range(3)
    with pytest.raises(ValueError, match="at least one aggregation"):
        ds.aggregate()
    with pytest.raises(TypeError, match=r"ember\.data\.aggregate"):
        ds.aggregate("sum")
    with pytest.raises(TypeError, match=r"ember\.data\.aggregate"):
        ds.groupby("id").aggregate(len)
    assert ember.is_initialized()
