# compat: topic doc/source/data/aggregations.rst (groupby and aggregations)
"""groupby with count, sum, mean, max, map_groups, and Dataset.aggregate with the built-in
aggregations."""

import numpy as np
import ray
from ray.data.aggregate import Count, Max, Mean, Sum

ray.init(num_cpus=2)

ds = ray.data.from_items([{"group": i % 3, "value": i} for i in range(12)])

counts = {r["group"]: r["count()"] for r in ds.groupby("group").count().take_all()}
assert counts == {0: 4, 1: 4, 2: 4}

sums = {r["group"]: r["sum(value)"] for r in ds.groupby("group").sum("value").take_all()}
assert sums == {0: 0 + 3 + 6 + 9, 1: 1 + 4 + 7 + 10, 2: 2 + 5 + 8 + 11}

means = {r["group"]: r["mean(value)"] for r in ds.groupby("group").mean("value").take_all()}
assert means == {0: 4.5, 1: 5.5, 2: 6.5}

maxes = ds.groupby("group").max("value").sort("group").take_all()
assert [r["max(value)"] for r in maxes] == [9, 10, 11]


def spread(batch):
    return {"group": batch["group"][:1], "spread": np.array([np.ptp(batch["value"])])}


spreads = ds.groupby("group").map_groups(spread, batch_format="numpy").sort("group").take_all()
assert [r["spread"] for r in spreads] == [9, 9, 9]

result = ds.aggregate(Count(), Sum("value"), Max("value"), Mean("value"))
assert result == {"count()": 12, "sum(value)": 66, "max(value)": 11, "mean(value)": 5.5}, result

ray.shutdown()
print("groupby ok")
