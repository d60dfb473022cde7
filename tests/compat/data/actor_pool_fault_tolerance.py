# compat: topic doc/source/data/transforming-data.rst (stateful transforms; actor pool fault tolerance)
# compat: expect actor pool survived
"""An actor of a map_batches pool dies mid-run (its process killed, as the OOM killer would):
a new actor takes its place, the batch it held runs again, and no row is lost or doubled."""

import os
import signal

import numpy as np
import ray

ray.init(num_cpus=2)
marker = os.path.abspath("killed-once")


class Model:
    def __call__(self, batch):
        if 30 in batch["id"] and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return {"id": batch["id"], "pid": np.full(len(batch["id"]), os.getpid())}


ds = ray.data.range(100, override_num_blocks=10).map_batches(Model, concurrency=1,
                                                              batch_size=10)
rows = ds.take_all()
assert os.path.exists(marker)
assert sorted(r["id"] for r in rows) == list(range(100))
assert len({r["pid"] for r in rows}) == 2  # the replacement actor is a new process

ray.shutdown()
print("actor pool survived")
