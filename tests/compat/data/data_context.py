# compat: topic doc/source/data/execution-configurations.rst (DataContext and ExecutionOptions)
# compat: expect data context ok
"""Configure the current DataContext by assigning to it, as Ray's execution-configuration guide
does: preserve_order set through execution_options gives rows in order although the first block
finishes last, and a dataset run under resource limits still computes the right answer."""

import time

import ray

ray.init(num_cpus=2)

ctx = ray.data.DataContext.get_current()
assert ray.data.context.DataContext.get_current() is ctx
ctx.enable_progress_bars = False
ctx.execution_options.preserve_order = True
ctx.execution_options.verbose_progress = False
ctx.target_max_block_size = 64 * 1024 * 1024
ctx.use_push_based_shuffle = False
assert ctx.execution_options.preserve_order and ctx.target_max_block_size == 64 * 1024 * 1024


def first_block_is_slow(batch):
    if batch["id"][0] == 0:
        time.sleep(1)
    return {"id": batch["id"], "square": batch["id"] ** 2}


rows = ray.data.range(40, override_num_blocks=4).map_batches(first_block_is_slow).take_all()
assert [row["id"] for row in rows] == list(range(40)), [row["id"] for row in rows]
assert [row["square"] for row in rows] == [i * i for i in range(40)]

# Limits on what the execution may use: one CPU, 2 GB of object store.
ctx.execution_options.resource_limits = ray.data.ExecutionResources(
    cpu=1, object_store_memory=2e9)
assert ctx.execution_options.resource_limits.cpu == 1
ds = ray.data.range(1000, override_num_blocks=8).map(lambda row: {"double": row["id"] * 2})
assert ds.sum("double") == 999 * 1000
assert [row["double"] for row in ds.take(5)] == [0, 2, 4, 6, 8]

ray.shutdown()
print("data context ok")
