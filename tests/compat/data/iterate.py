# compat: topic doc/source/data/iterating-over-data.rst
"""Iterating over a dataset: rows, NumPy and pandas batches of a given size, torch batches
with dtypes, and a local shuffle buffer that reorders rows but keeps every one."""

import ray
import torch

ray.init(num_cpus=2)

ds = ray.data.range(10).map(lambda row: {"x": row["id"], "y": row["id"] * 2})

# Ray Data yields rows in no promised order (unless asked to preserve it), hence sorted().
assert sorted(row["x"] for row in ds.iter_rows()) == list(range(10))

sizes = [len(batch["x"]) for batch in ds.iter_batches(batch_size=4)]
assert sizes == [4, 4, 2], sizes

frames = list(ds.iter_batches(batch_size=5, batch_format="pandas"))
assert [len(frame) for frame in frames] == [5, 5]
assert sorted(y for frame in frames for y in frame["y"]) == [2 * i for i in range(10)]

assert [len(b["x"]) for b in ds.iter_batches(batch_size=4, drop_last=True)] == [4, 4]

dtypes = {"x": torch.float32, "y": torch.int64}
torch_batches = list(ds.iter_torch_batches(batch_size=5, dtypes=dtypes))
assert isinstance(torch_batches[0]["x"], torch.Tensor)
assert torch_batches[0]["x"].dtype == torch.float32
assert torch_batches[0]["y"].dtype == torch.int64
assert sorted(torch.cat([b["y"] for b in torch_batches]).tolist()) == [2 * i for i in range(10)]

shuffled = [int(v) for b in ds.iter_batches(batch_size=5, local_shuffle_buffer_size=10,
                                            local_shuffle_seed=0) for v in b["x"]]
assert sorted(shuffled) == list(range(10))

ray.shutdown()
print("iterate ok")
