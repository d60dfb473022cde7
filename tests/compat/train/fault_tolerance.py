# compat: topic doc/source/train/user-guides/fault-tolerance.rst
# compat: slow
"""A training run that fails once recovers with FailureConfig(max_failures=1): the new
attempt finds the last reported checkpoint with get_checkpoint and continues from it."""

import json
import os
import tempfile

import ray
import ray.train
from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

ray.init(num_cpus=2)


def train_func(config):
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder, open(os.path.join(folder, "state.json")) as f:
            start = json.load(f)["epoch"] + 1
    for epoch in range(start, 5):
        if epoch == 3 and not os.path.exists(config["marker"]):
            open(config["marker"], "w").close()
            raise RuntimeError("simulated worker failure")
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "state.json"), "w") as f:
                json.dump({"epoch": epoch}, f)
            ray.train.report({"epoch": epoch, "started_at": start},
                             checkpoint=Checkpoint.from_directory(folder))


with tempfile.TemporaryDirectory() as storage:
    marker = os.path.join(storage, "failed-once")
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"marker": marker},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="ft", storage_path=storage,
                             failure_config=FailureConfig(max_failures=1)),
    )
    result = trainer.fit()

assert result.error is None
assert result.metrics["epoch"] == 4
assert result.metrics["started_at"] == 3, result.metrics  # resumed after epoch 2's checkpoint

ray.shutdown()
print("fault tolerance ok")
