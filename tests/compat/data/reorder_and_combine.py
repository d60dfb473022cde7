# compat: topic doc/source/data/api/dataset.rst (sort, shuffle, union, zip, repartition)
"""Sorting, a seeded random shuffle, union, zip, repartition, columns added and renamed, and
datasets from pandas and NumPy."""

import numpy as np
import pandas as pd
import ray

ray.init(num_cpus=2)

ds = ray.data.from_items([{"k": k} for k in [5, 3, 9, 1, 7]])
assert [r["k"] for r in ds.sort("k").take_all()] == [1, 3, 5, 7, 9]
assert [r["k"] for r in ds.sort("k", descending=True).take_all()] == [9, 7, 5, 3, 1]

shuffled = [r["id"] for r in ray.data.range(50).random_shuffle(seed=7).take_all()]
assert sorted(shuffled) == list(range(50)) and shuffled != list(range(50))

both = ray.data.range(3).union(ray.data.range(2))
assert sorted(r["id"] for r in both.take_all()) == [0, 0, 1, 1, 2]

left = ray.data.from_items([{"a": i} for i in range(4)])
right = ray.data.from_items([{"b": i * 10} for i in range(4)])
assert left.zip(right).take_all() == [{"a": i, "b": i * 10} for i in range(4)]

assert ray.data.range(10).repartition(3).materialize().num_blocks() == 3

frame = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})
from_pandas = ray.data.from_pandas(frame)
added = from_pandas.add_column("z", lambda df: df["x"] * 2).rename_columns({"y": "letter"})
assert added.take_all() == [{"x": 1, "letter": "a", "z": 2}, {"x": 2, "letter": "b", "z": 4},
                            {"x": 3, "letter": "c", "z": 6}]
assert added.drop_columns(["letter"]).columns() == ["x", "z"]

arrays = ray.data.from_numpy(np.arange(6).reshape(3, 2))
assert arrays.count() == 3
assert arrays.take(1)[0]["data"].tolist() == [0, 1]

ray.shutdown()
print("reorder and combine ok")
