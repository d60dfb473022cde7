# compat: topic doc/source/data/api/dataset.rst (input_files, size_bytes, to_numpy_refs, to_pandas_refs, randomize_block_order, split_proportionately, iterator, write_datasink, map_groups, compute=ActorPoolStrategy)
"""Dataset methods beyond map and iterate: what a dataset read from files knows of them, block
references in NumPy and pandas, block order, proportional splits, a custom Datasink, and
per-group work on an actor pool."""

import os

import numpy as np
import ray
from ray.data import ActorPoolStrategy, Datasink

ray.init(num_cpus=2)

os.makedirs("parts", exist_ok=True)
for i in range(3):
    with open(f"parts/part{i}.csv", "w") as f:
        f.write(f"x,k\n{i},{i % 2}\n{i + 10},{i % 2}\n")

ds = ray.data.read_csv("parts")
files = ds.input_files()
assert sorted(os.path.basename(f) for f in files) == ["part0.csv", "part1.csv", "part2.csv"]
assert ds.materialize().size_bytes() > 0

numbers = ray.data.range(12, override_num_blocks=3)
columns = ray.get(numbers.to_numpy_refs(column="id"))
assert sorted(np.concatenate(columns).tolist()) == list(range(12))
dicts = ray.get(numbers.to_numpy_refs())
assert all(list(d) == ["id"] for d in dicts)
frames = ray.get(numbers.to_pandas_refs())
assert sum(len(f) for f in frames) == 12 and list(frames[0].columns) == ["id"]

shuffled = numbers.randomize_block_order(seed=7).take_all()
assert sorted(r["id"] for r in shuffled) == list(range(12))

parts = ray.data.range(10).split_proportionately([0.5, 0.2])
assert [p.count() for p in parts] == [5, 2, 3]

it = numbers.iterator()
assert isinstance(it, ray.data.DataIterator)
assert sum(len(b["id"]) for b in it.iter_batches(batch_size=5)) == 12


class AddOne:
    def __call__(self, batch):
        return {"id": batch["id"] + 1}


plus = numbers.map_batches(
    AddOne, compute=ActorPoolStrategy(size=1, max_tasks_in_flight_per_actor=1))
assert sorted(r["id"] for r in plus.take_all()) == list(range(1, 13))


class CountingSink(Datasink):
    def __init__(self):
        self.total = None

    def write(self, blocks, ctx):
        return sum(len(block) for block in blocks)

    def on_write_complete(self, write_result):
        self.total = write_result.num_rows, sum(write_result.write_returns)


sink = CountingSink()
numbers.write_datasink(sink)
assert sink.total == (12, 12), sink.total

groups = ds.groupby("k").map_groups(
    lambda g: {"k": g["k"][:1], "n": np.array([len(g["x"])])}, batch_format="numpy")
assert sorted((r["k"], r["n"]) for r in groups.take_all()) == [(0, 4), (1, 2)]

ray.shutdown()
print("dataset extras ok")
