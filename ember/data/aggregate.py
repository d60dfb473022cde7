"""Aggregations for ``Dataset.aggregate(...)`` and ``GroupedData.aggregate(...)``, with Ray's
names (``ray.data.aggregate``)::

    from ember.data.aggregate import Count, Mean, Quantile

    ds = ember.data.range(100)
    ds.aggregate(Count(), Mean("id"))                     # {'count()': 100, 'mean(id)': 49.5}
    ds.groupby("key").aggregate(Quantile("id", q=0.9)).take_all()

Each aggregation is pure: ``aggregate_block`` turns one block (an Arrow table) into a partial
result, ``combine`` merges two partials, ``finalize`` turns the last one into the value. The
partials of the blocks are made where the blocks are and merged by the caller, so no block
travels to the driver. Write your own by subclassing ``AggregateFnV2`` the same way, or pass
``AggregateFn(init=..., accumulate_row=..., merge=..., name=...)`` (Ray's older form).

Nulls (and NaN in float columns) are skipped with ``ignore_nulls=True``; with
``ignore_nulls=False`` one null makes the result ``None``. An aggregation over no values
gives ``None`` (``Count`` gives 0), as in Ray.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "AbsMax",
    "AggregateFn",
    "AggregateFnV2",
    "Count",
    "Max",
    "Mean",
    "Min",
    "Quantile",
    "Std",
    "Sum",
    "Unique",
]


class AggregateFn:
    """A custom aggregation in Ray's older form: ``init(key)`` makes an accumulator,
    ``accumulate_row(acc, row)`` (or ``accumulate_block(acc, block)``) folds data into it,
    ``merge(a, b)`` joins two, ``finalize(acc)`` gives the value (the accumulator itself if
    left out)::

        product = AggregateFn(init=lambda key: 1, accumulate_row=lambda a, row: a * row["x"],
                              merge=lambda a, b: a * b, name="prod")
    """

    def __init__(
        self, init: Callable[[Any], Any], merge: Callable[[Any, Any], Any], name: str,
        accumulate_row: Callable[[Any, dict[str, Any]], Any] | None = None,
        accumulate_block: Callable[[Any, pa.Table], Any] | None = None,
        finalize: Callable[[Any], Any] | None = None,
    ) -> None:
        if (accumulate_row is None) == (accumulate_block is None):
            raise ValueError("AggregateFn takes exactly one of accumulate_row= (per row) or "
                             "accumulate_block= (per Arrow table)")
        if not isinstance(name, str) or not name:
            raise TypeError(f"AggregateFn needs a name= (a string; it names the output "
                            f"column), got {name!r}")
        self.name = name
        self._init = init
        self._merge = merge
        self._accumulate_row = accumulate_row
        self._accumulate_block = accumulate_block
        self._finalize = finalize

    def start(self, key: Any) -> Any:
        """The empty accumulator of the group with key ``key`` (None for a global one)."""
        return self._init(key)

    def accumulate(self, acc: Any, block: pa.Table) -> Any:
        """``acc`` with the rows of ``block`` folded in."""
        if self._accumulate_block is not None:
            return self._accumulate_block(acc, block)
        assert self._accumulate_row is not None
        for row in block.to_pylist():
            acc = self._accumulate_row(acc, row)
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        """One accumulator from two partial ones (of the same group)."""
        return self._merge(a, b)

    def result(self, acc: Any) -> Any:
        """The aggregation's value from its final accumulator."""
        return acc if self._finalize is None else self._finalize(acc)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class AggregateFnV2(AggregateFn):
    """Base of the built-in aggregations (Ray's current form). A subclass calls
    ``super().__init__(name, zero_factory, on=..., ignore_nulls=...)`` and implements
    ``aggregate_block(block) -> partial``, ``combine(a, b) -> partial`` and optionally
    ``finalize(partial) -> value``; ``self._target_col_name`` is the column it reads."""

    def __init__(self, name: str, zero_factory: Callable[[], Any], *, on: str | None,
                 ignore_nulls: bool) -> None:
        if on is not None and not isinstance(on, str):
            raise TypeError(f"on={on!r} must be a column name (a string)")
        self.name = name
        self.zero_factory = zero_factory
        self._target_col_name = on
        self._ignore_nulls = ignore_nulls

    def aggregate_block(self, block: pa.Table) -> Any:
        """The partial result of one block (computed where the block is)."""
        raise NotImplementedError

    def combine(self, current_accumulator: Any, new: Any) -> Any:
        """Two partial results made one (associative: blocks arrive in any order)."""
        raise NotImplementedError

    def finalize(self, accumulator: Any) -> Any:
        """The value reported for the combined partial result (itself by default)."""
        return accumulator

    def start(self, key: Any) -> Any:
        return self.zero_factory()

    def accumulate(self, acc: Any, block: pa.Table) -> Any:
        return self.combine(acc, self.aggregate_block(block))

    def merge(self, a: Any, b: Any) -> Any:
        """``combine``, under the older ``AggregateFn`` name."""
        return self.combine(a, b)

    def result(self, acc: Any) -> Any:
        """``finalize``, under the older ``AggregateFn`` name."""
        return self.finalize(acc)

    def _values(self, block: pa.Table) -> tuple[pa.ChunkedArray, bool]:
        """The column's values without nulls (and NaN), and whether there were any."""
        col = self._target_col_name
        if col is None:
            raise ValueError(f"{type(self).__name__} needs a column: pass on='name'")
        if col not in block.column_names:
            raise KeyError(f"{self.name}: no column {col!r} (columns: {block.column_names})")
        column = block.column(col)
        missing = column.is_null(nan_is_null=True) if _is_float(column) else column.is_null()
        if not pc.any(missing).as_py():
            return column, False
        return pc.filter(column, pc.invert(missing)), True

    def _poisoned(self, null_seen: bool) -> bool:
        return null_seen and not self._ignore_nulls


def _is_float(column: pa.ChunkedArray) -> bool:
    return bool(pa.types.is_floating(column.type))


def _scalar(value: Any) -> Any:
    return value.as_py() if isinstance(value, pa.Scalar) else value


class Count(AggregateFnV2):
    """Rows (``on=None``), or values of a column: all of them, or the non-null ones with
    ``ignore_nulls=True``. Named ``count()`` / ``count(col)``."""

    def __init__(self, on: str | None = None, ignore_nulls: bool = False,
                 alias_name: str | None = None) -> None:
        super().__init__(alias_name or f"count({on or ''})", lambda: 0, on=on,
                         ignore_nulls=ignore_nulls)

    def aggregate_block(self, block: pa.Table) -> int:
        if self._target_col_name is None or not self._ignore_nulls:
            return int(block.num_rows)
        values, _ = self._values(block)
        return len(values)

    def combine(self, current_accumulator: int, new: int) -> int:
        return current_accumulator + new


class Sum(AggregateFnV2):
    """The sum of a column (``sum(col)``); ``None`` over no values."""

    def __init__(self, on: str | None = None, ignore_nulls: bool = True,
                 alias_name: str | None = None) -> None:
        super().__init__(alias_name or f"sum({on})", lambda: (0, 0, False), on=on,
                         ignore_nulls=ignore_nulls)

    def aggregate_block(self, block: pa.Table) -> tuple[Any, int, bool]:
        values, nulls = self._values(block)
        if len(values) == 0:
            return (0, 0, nulls)
        return (_scalar(pc.sum(values)), len(values), nulls)

    def combine(self, current_accumulator: Any, new: Any) -> tuple[Any, int, bool]:
        return (current_accumulator[0] + new[0], current_accumulator[1] + new[1],
                current_accumulator[2] or new[2])

    def finalize(self, accumulator: Any) -> Any:
        total, count, nulls = accumulator
        return None if self._poisoned(nulls) or count == 0 else total


class _Extreme(AggregateFnV2):
    _largest = False  # keep the smallest value, or the largest
    _kind = "min"

    def __init__(self, on: str | None = None, ignore_nulls: bool = True,
                 alias_name: str | None = None) -> None:
        super().__init__(alias_name or f"{self._kind}({on})", lambda: (None, False), on=on,
                         ignore_nulls=ignore_nulls)

    def _block_value(self, values: pa.ChunkedArray) -> Any:
        return _scalar(pc.min(values) if self._kind == "min" else pc.max(values))

    def aggregate_block(self, block: pa.Table) -> tuple[Any, bool]:
        values, nulls = self._values(block)
        return (self._block_value(values) if len(values) else None, nulls)

    def combine(self, current_accumulator: Any, new: Any) -> tuple[Any, bool]:
        a, b = current_accumulator[0], new[0]
        best = b if a is None else a if b is None else max(a, b) if self._largest else min(a, b)
        return (best, current_accumulator[1] or new[1])

    def finalize(self, accumulator: Any) -> Any:
        value, nulls = accumulator
        return None if self._poisoned(nulls) else value


class Min(_Extreme):
    """The smallest value of a column (``min(col)``)."""

    _kind = "min"


class Max(_Extreme):
    """The largest value of a column (``max(col)``)."""

    _largest = True
    _kind = "max"


class AbsMax(_Extreme):
    """The largest absolute value of a column (``abs_max(col)``)."""

    _largest = True
    _kind = "abs_max"

    def _block_value(self, values: pa.ChunkedArray) -> Any:
        return _scalar(pc.max(pc.abs(values)))


class Mean(AggregateFnV2):
    """The mean of a column (``mean(col)``)."""

    def __init__(self, on: str | None = None, ignore_nulls: bool = True,
                 alias_name: str | None = None) -> None:
        super().__init__(alias_name or f"mean({on})", lambda: (0, 0, False), on=on,
                         ignore_nulls=ignore_nulls)

    def aggregate_block(self, block: pa.Table) -> tuple[Any, int, bool]:
        values, nulls = self._values(block)
        return (_scalar(pc.sum(values)) if len(values) else 0, len(values), nulls)

    def combine(self, current_accumulator: Any, new: Any) -> tuple[Any, int, bool]:
        return (current_accumulator[0] + new[0], current_accumulator[1] + new[1],
                current_accumulator[2] or new[2])

    def finalize(self, accumulator: Any) -> Any:
        total, count, nulls = accumulator
        return None if self._poisoned(nulls) or count == 0 else total / count


class Std(AggregateFnV2):
    """The standard deviation of a column (``std(col)``), with ``ddof`` (1: the sample's).
    Blocks' partials are merged with Chan's parallel formula, so no pass over the data is
    repeated; fewer than ``ddof + 1`` values give NaN, as in Ray."""

    def __init__(self, on: str | None = None, ddof: int = 1, ignore_nulls: bool = True,
                 alias_name: str | None = None) -> None:
        super().__init__(alias_name or f"std({on})", lambda: (0, 0.0, 0.0, False), on=on,
                         ignore_nulls=ignore_nulls)
        self._ddof = ddof

    def aggregate_block(self, block: pa.Table) -> tuple[int, float, float, bool]:
        values, nulls = self._values(block)
        count = len(values)
        if count == 0:
            return (0, 0.0, 0.0, nulls)
        floats = pc.cast(values, pa.float64())
        mean = _scalar(pc.mean(floats))
        m2 = _scalar(pc.sum(pc.power(pc.subtract(floats, mean), 2)))
        return (count, mean, m2, nulls)

    def combine(self, current_accumulator: Any, new: Any) -> tuple[int, float, float, bool]:
        n_a, mean_a, m2_a, nulls_a = current_accumulator
        n_b, mean_b, m2_b, nulls_b = new
        n = n_a + n_b
        if n == 0:
            return (0, 0.0, 0.0, nulls_a or nulls_b)
        delta = mean_b - mean_a
        mean = mean_a + delta * n_b / n
        m2 = m2_a + m2_b + delta * delta * n_a * n_b / n
        return (n, mean, m2, nulls_a or nulls_b)

    def finalize(self, accumulator: Any) -> Any:
        count, _, m2, nulls = accumulator
        if self._poisoned(nulls) or count == 0:
            return None
        if count - self._ddof <= 0:
            return math.nan
        return math.sqrt(m2 / (count - self._ddof))


class Quantile(AggregateFnV2):
    """The ``q``-quantile of a column (``quantile(col)``), interpolating linearly between
    the two nearest values; it keeps every value until the end, as Ray's does."""

    def __init__(self, on: str | None = None, q: float = 0.5, ignore_nulls: bool = True,
                 alias_name: str | None = None) -> None:
        if not 0 <= q <= 1:
            raise ValueError(f"q={q!r} must be between 0 and 1")
        super().__init__(alias_name or f"quantile({on})", lambda: ([], False), on=on,
                         ignore_nulls=ignore_nulls)
        self._q = q

    def aggregate_block(self, block: pa.Table) -> tuple[list[Any], bool]:
        values, nulls = self._values(block)
        return (values.to_pylist(), nulls)

    def combine(self, current_accumulator: Any, new: Any) -> tuple[list[Any], bool]:
        return (current_accumulator[0] + new[0], current_accumulator[1] or new[1])

    def finalize(self, accumulator: Any) -> Any:
        values, nulls = accumulator
        if self._poisoned(nulls) or not values:
            return None
        ordered = sorted(values)
        position = self._q * (len(ordered) - 1)
        low, high = math.floor(position), math.ceil(position)
        if low == high:
            return ordered[low]
        return ordered[low] * (high - position) + ordered[high] * (position - low)


class Unique(AggregateFnV2):
    """The distinct values of a column, as a list (``unique(col)``); a null counts as one
    value unless ``ignore_nulls=True``."""

    def __init__(self, on: str | None = None, ignore_nulls: bool = False,
                 alias_name: str | None = None) -> None:
        super().__init__(alias_name or f"unique({on})", lambda: set(), on=on,
                         ignore_nulls=ignore_nulls)

    def aggregate_block(self, block: pa.Table) -> set[Any]:
        values, nulls = self._values(block)
        found = set(pc.unique(values).to_pylist()) if len(values) else set()
        if nulls and not self._ignore_nulls:
            found.add(None)
        return found

    def combine(self, current_accumulator: set[Any], new: set[Any]) -> set[Any]:
        return current_accumulator | new

    def finalize(self, accumulator: set[Any]) -> list[Any]:
        return list(accumulator)
