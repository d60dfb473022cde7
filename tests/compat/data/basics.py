# compat: topic doc/source/data/quickstart.rst (creating and transforming datasets)
"""Datasets from Python items and ranges: count, take, schema, map, flat_map, filter, and the
rows come back in order."""

import ray

ray.init(num_cpus=2)

ds = ray.data.from_items([{"name": n, "age": a} for n, a in
                          [("ada", 36), ("alan", 41), ("grace", 85), ("linus", 21)]])
assert ds.count() == 4
first_two = ds.take(2)
assert len(first_two) == 2 and all(row in ds.take_all() for row in first_two)
assert set(ds.schema().names) == {"name", "age"}
assert ds.columns() == ["name", "age"]

# Ray Data does not promise an order unless asked (sort, or preserve_order), hence sorted().
older = ds.filter(lambda row: row["age"] > 40).map(
    lambda row: {"name": row["name"].title(), "decade": row["age"] // 10})
assert sorted(older.take_all(), key=lambda row: row["name"]) == [{"name": "Alan", "decade": 4}, {"name": "Grace", "decade": 8}]

numbers = ray.data.range(100)
assert numbers.count() == 100
assert numbers.schema().names == ["id"]
assert numbers.sum("id") == 4950
assert (numbers.min("id"), numbers.max("id"), numbers.mean("id")) == (0, 99, 49.5)

pairs = ray.data.range(3).flat_map(lambda row: [{"x": row["id"]}, {"x": -row["id"]}])
assert sorted(r["x"] for r in pairs.take_all()) == [-2, -1, 0, 0, 1, 2]

limited = [r["id"] for r in ray.data.range(10).limit(3).iter_rows()]
assert len(limited) == 3 and set(limited) <= set(range(10))

ray.shutdown()
print("data basics ok")
