"""``ember.data.preprocessors``: Ray 2.5's ``Preprocessor``, ``BatchMapper`` and ``Chain``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import ember
from ember.data.preprocessors import BatchMapper, Chain, FitStatus, Preprocessor


def test_preprocessors_all_is_pinned():
    import ember.data.preprocessors as preprocessors

    assert preprocessors.__all__ == ["BatchMapper", "Chain", "FitStatus", "Preprocessor"]


class MinMax(Preprocessor):
    """Scales ``x`` to [0, 1] by what ``fit`` saw."""

    def _fit(self, ds):
        df = ds.to_pandas()
        self.low_, self.high_ = float(df["x"].min()), float(df["x"].max())
        return self

    def _transform_numpy(self, batch):
        batch["x"] = (batch["x"] - self.low_) / (self.high_ - self.low_)
        return batch


@pytest.mark.parametrize(("batch_format", "kind"), [("pandas", "DataFrame"), ("numpy", "dict"),
                                                    ("pyarrow", "Table")])
def test_batch_mapper_hands_fn_batches_of_its_format(ember_local, batch_format, kind):
    def fn(batch):
        name = type(batch).__name__
        if batch_format == "pyarrow":
            return batch.append_column("kind", pa.array([name] * batch.num_rows))
        batch["kind"] = np.array([name] * len(batch["id"]))
        return batch

    mapper = BatchMapper(fn, batch_format=batch_format)
    assert mapper.fit_status() == FitStatus.NOT_FITTABLE

    rows = mapper.transform(ember.data.range(6)).take_all()

    assert sorted(r["id"] for r in rows) == list(range(6))
    assert {r["kind"] for r in rows} == {kind}
    batch = mapper.transform_batch({"id": np.arange(3)})  # converted to its format
    assert type(batch).__name__ == kind
    column = batch["kind"]
    assert list(column.to_pylist() if kind == "Table" else column) == [kind] * 3


def test_batch_mapper_batch_size_limits_each_batch(ember_local):
    def count(df):
        return pd.DataFrame({"n": [len(df)]})

    got = BatchMapper(count, batch_format="pandas", batch_size=4).transform(
        ember.data.range(10, override_num_blocks=1)).take_all()

    assert sorted(r["n"] for r in got) == [2, 4, 4]


def test_chain_fits_each_step_on_what_the_steps_before_it_produce(ember_local):
    def shift(df):
        df["x"] = df["x"] + 10
        return df

    scaler = MinMax()
    chain = Chain(BatchMapper(shift, batch_format="pandas"), scaler)
    ds = ember.data.from_items([{"x": float(v)} for v in (0, 5, 10)])
    assert chain.fit_status() == FitStatus.NOT_FITTED
    with pytest.raises(RuntimeError, match="must be fit before transform"):
        chain.transform(ds)

    out = chain.fit_transform(ds)

    assert (scaler.low_, scaler.high_) == (10.0, 20.0)  # fit after the shift
    assert chain.fit_status() == FitStatus.FITTED
    assert sorted(r["x"] for r in out.take_all()) == [0.0, 0.5, 1.0]
    batch = chain.transform_batch(pd.DataFrame({"x": [5.0]}))  # any format in
    assert list(batch["x"]) == [0.5]


def test_bad_arguments_name_what_is_accepted():
    with pytest.raises(ValueError, match="'pandas', 'numpy', 'pyarrow'"):
        BatchMapper(lambda b: b, batch_format="arrow")
    with pytest.raises(ValueError, match="batch_size=0"):
        BatchMapper(lambda b: b, batch_format="numpy", batch_size=0)
    with pytest.raises(TypeError, match="takes a dataset"):
        BatchMapper(lambda b: b, batch_format="numpy").transform([{"x": 1}])
    with pytest.raises(TypeError, match="takes preprocessors"):
        Chain(lambda b: b)
