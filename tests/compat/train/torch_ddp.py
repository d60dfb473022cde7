# compat: topic doc/source/train/getting-started-pytorch.rst
# compat: slow
"""Data-parallel training of a tiny PyTorch model with TorchTrainer on two CPU workers:
prepare_model wraps it in DDP, each worker reports its loss, rank 0 saves the trained model
with the last report, and the result holds rank 0's metrics and that checkpoint."""

import os
import tempfile

import ray
import ray.train
import torch
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from torch import nn

ray.init(num_cpus=2)


def train_func(config):
    torch.manual_seed(0)
    model = ray.train.torch.prepare_model(nn.Linear(1, 1))
    assert isinstance(model, nn.parallel.DistributedDataParallel)
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    # Each worker trains on its own half of y = 3x + 1.
    x = torch.linspace(-1, 1, 64)[rank::world].unsqueeze(1)
    y = 3 * x + 1
    for epoch in range(config["epochs"]):
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        metrics = {"epoch": epoch, "loss": loss.item(), "world_size": world}
        if epoch < config["epochs"] - 1:
            if epoch % 10 == 0:
                ray.train.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if rank == 0:
                torch.save(model.module.state_dict(), os.path.join(folder, "model.pt"))
                checkpoint = Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=checkpoint)


with tempfile.TemporaryDirectory() as storage:
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"lr": 0.2, "epochs": 40},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
        run_config=RunConfig(name="ddp", storage_path=storage),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        state = torch.load(os.path.join(folder, "model.pt"))

assert result.error is None
assert abs(state["weight"].item() - 3) < 0.2 and abs(state["bias"].item() - 1) < 0.2, state
assert result.metrics["epoch"] == 39
assert result.metrics["world_size"] == 2
assert result.metrics["loss"] < 0.01, result.metrics

ray.shutdown()
print("torch ddp ok, loss", round(result.metrics["loss"], 5))
