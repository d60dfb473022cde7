# compat: topic doc/source/data/transforming-data.rst (map_batches with NumPy and pandas batches)
"""map_batches over NumPy batches (a dict of arrays) and pandas DataFrames, with a batch size,
adding and dropping columns."""

import numpy as np
import pandas as pd
import ray

ray.init(num_cpus=2)

ds = ray.data.range(20)


def add_square(batch: dict) -> dict:
    assert isinstance(batch["id"], np.ndarray)
    batch["square"] = batch["id"] ** 2
    return batch


squared = ds.map_batches(add_square, batch_format="numpy", batch_size=8)
rows = sorted(squared.take_all(), key=lambda row: row["id"])
assert rows[3] == {"id": 3, "square": 9}
assert len(rows) == 20


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    assert isinstance(df, pd.DataFrame)
    return pd.DataFrame({"first": [df["id"].iloc[0]], "size": [len(df)]})


summary = ds.map_batches(summarise, batch_format="pandas", batch_size=5).take_all()
assert sum(r["size"] for r in summary) == 20
assert all(r["size"] <= 5 for r in summary)
assert sorted(r["first"] for r in summary) == [0, 5, 10, 15]

# fn_kwargs pass extra arguments; the result can be another DataFrame shape entirely.
scaled = ds.map_batches(lambda b, k: {"v": b["id"] * k}, fn_kwargs={"k": 3},
                        batch_format="numpy")
assert scaled.sum("v") == 3 * sum(range(20))

frame = ds.map_batches(add_square, batch_format="numpy").to_pandas()
assert list(frame.columns) == ["id", "square"] and int(frame["square"].sum()) == sum(
    i * i for i in range(20))

ray.shutdown()
print("map_batches ok")
