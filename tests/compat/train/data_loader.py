# compat: topic doc/source/train/getting-started-pytorch.rst (prepare_data_loader)
"""A torch DataLoader made ready for distributed training with prepare_data_loader: each
worker sees its own part of the data, shuffled anew each epoch once set_epoch is called."""

import os
import tempfile

import ray
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from torch.utils.data import DataLoader, TensorDataset

ray.init(num_cpus=2)


def train_func():
    data = TensorDataset(torch.arange(40, dtype=torch.float32).unsqueeze(1))
    loader = ray.train.torch.prepare_data_loader(DataLoader(data, batch_size=5, shuffle=True))
    assert ray.train.torch.get_device() == torch.device("cpu")
    orders = []
    for epoch in range(2):
        if ray.train.get_context().get_world_size() > 1:
            loader.sampler.set_epoch(epoch)
        seen = [int(v) for (batch,) in loader for v in batch.flatten()]
        orders.append(seen)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            # Ray Train returns the metrics reported with a checkpoint.
            open(os.path.join(folder, "done"), "w").close()
            checkpoint = Checkpoint.from_directory(folder)
        ray.train.report({"seen": orders[0], "changed": orders[0] != orders[1]},
                         checkpoint=checkpoint)


with tempfile.TemporaryDirectory() as storage:
    result = TorchTrainer(
        train_func,
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="loader", storage_path=storage),
    ).fit()

seen = result.metrics["seen"]
assert len(seen) == len(set(seen)) == 20, seen  # rank 0's half of the 40 items
assert set(seen) <= set(range(40))
assert result.metrics["changed"], result.metrics

ray.shutdown()
print("data loader ok")
