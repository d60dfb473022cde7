# compat: topic doc/source/train/user-guides/checkpoints.rst
"""Reporting checkpoints: a folder saved each epoch, the best two kept by a score (and the
latest), and the result's checkpoint opened after training to load the model."""

import os
import tempfile

import ray
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from torch import nn

ray.init(num_cpus=2)


def train_func():
    model = nn.Linear(2, 1)
    for epoch in range(4):
        with torch.no_grad():
            model.bias.fill_(float(epoch))
        score = [0.5, 0.9, 0.7, 0.1][epoch]
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if ray.train.get_context().get_world_rank() == 0:
                torch.save(model.state_dict(), os.path.join(folder, "model.pt"))
                checkpoint = Checkpoint.from_directory(folder)
            ray.train.report({"epoch": epoch, "score": score}, checkpoint=checkpoint)


with tempfile.TemporaryDirectory() as storage:
    trainer = TorchTrainer(
        train_func,
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(
            name="ckpt", storage_path=storage,
            checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="score",
                                               checkpoint_score_order="max"),
        ),
    )
    result = trainer.fit()

    # The two best by score are kept; the worst (epoch 0) is deleted.
    kept = {metrics["epoch"] for _, metrics in result.best_checkpoints}
    assert {1, 2} <= kept and 0 not in kept, kept
    # result.checkpoint is the latest one, kept whatever its score.
    assert result.metrics["epoch"] == 3
    with result.checkpoint.as_directory() as folder:
        state = torch.load(os.path.join(folder, "model.pt"))
    assert state["bias"].item() == 3.0, state

ray.shutdown()
print("checkpoints ok")
