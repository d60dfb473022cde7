# compat: topic ray.data.Dataset.map_batches and ray.data.read_parquet (ray_remote_args, filesystem)
# compat: expect remote args ok
"""Options for the tasks of each operator (Ray's **ray_remote_args: a runtime_env, retries),
a pyarrow filesystem object for reads and writes, and read tasks sized with num_cpus and
concurrency."""

import os

import numpy as np
import pyarrow.fs
import ray

ray.init(num_cpus=2)


def tag(batch):
    return {"id": batch["id"], "stage": np.array([os.environ["STAGE"]] * len(batch["id"]))}


ds = ray.data.range(60).map_batches(tag, runtime_env={"env_vars": {"STAGE": "prep"}},
                                    max_retries=2, scheduling_strategy="SPREAD")
out = os.path.abspath("tagged")
local = pyarrow.fs.LocalFileSystem()
ds.write_parquet(out, filesystem=local)

back = ray.data.read_parquet(out, filesystem=local, ray_remote_args={"num_cpus": 0.5},
                             concurrency=1)
rows = back.take_all()
assert sorted(r["id"] for r in rows) == list(range(60))
assert {r["stage"] for r in rows} == {"prep"}


class Scale:
    def __init__(self):
        self.factor = int(os.environ["FACTOR"])

    def __call__(self, batch):
        return {"id": batch["id"] * self.factor}


scaled = back.map_batches(Scale, concurrency=1, num_cpus=0.5,
                          runtime_env={"env_vars": {"FACTOR": "3"}}, max_restarts=1)
assert sorted(r["id"] for r in scaled.take_all()) == [3 * i for i in range(60)]

ray.shutdown()
print("remote args ok")
