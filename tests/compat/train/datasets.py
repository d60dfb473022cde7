# compat: topic doc/source/train/user-guides/data-loading-preprocessing.rst
# compat: slow
"""A Ray Dataset given to TorchTrainer: each worker reads its own shard with
get_dataset_shard and iterates torch batches; together the shards cover the dataset."""

import json
import os
import tempfile

import ray
import ray.train
import torch
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

# Two CPUs for the two training workers, two for Ray Data to read and map with.
ray.init(num_cpus=4)


def train_func():
    shard = ray.train.get_dataset_shard("train")
    total, rows = 0.0, 0
    for epoch in range(2):
        for batch in shard.iter_torch_batches(batch_size=8, dtypes=torch.float32):
            assert batch["x"].dtype == torch.float32
            if epoch == 0:
                total += batch["x"].sum().item()
                rows += len(batch["x"])
    rank = ray.train.get_context().get_world_rank()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:  # results come back with a checkpoint (Ray Train keeps those metrics)
            with open(os.path.join(folder, "summary.json"), "w") as f:
                json.dump({"rows": rows}, f)
            checkpoint = Checkpoint.from_directory(folder)
        ray.train.report({"rows": rows, "total": total, "rank": rank}, checkpoint=checkpoint)


dataset = ray.data.range(64).map(lambda row: {"x": float(row["id"])})

with tempfile.TemporaryDirectory() as storage:
    trainer = TorchTrainer(
        train_func,
        datasets={"train": dataset},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="data", storage_path=storage),
    )
    result = trainer.fit()

assert result.metrics["rank"] == 0
assert result.metrics["rows"] == 32, result.metrics  # half of the 64 rows

ray.shutdown()
print("datasets ok")
