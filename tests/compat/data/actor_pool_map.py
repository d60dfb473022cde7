# compat: topic doc/source/data/transforming-data.rst (stateful transforms with concurrency)
"""A callable class in map_batches runs in a pool of actors (concurrency=2): its constructor
runs once per actor, and each batch goes through one of them."""

import os

import numpy as np
import ray

ray.init(num_cpus=2)


class Model:
    def __init__(self, weight):
        self.weight = weight  # an expensive load in real programs, done once per actor
        self.pid = os.getpid()

    def __call__(self, batch):
        return {"out": batch["id"] * self.weight, "pid": np.full(len(batch["id"]), self.pid)}


ds = ray.data.range(40).map_batches(Model, fn_constructor_kwargs={"weight": 3},
                                    concurrency=2, batch_size=5, num_cpus=0.5)
rows = ds.take_all()
assert sorted(r["out"] for r in rows) == [3 * i for i in range(40)]
assert 1 <= len({r["pid"] for r in rows}) <= 2
assert os.getpid() not in {r["pid"] for r in rows}

ray.shutdown()
print("actor pool ok")
