# compat: topic doc/source/train/user-guides/results.rst
"""A finished run's folder holds its results: Result.from_path reads back the metrics and the
latest checkpoint of a run after the trainer is gone."""

import json
import os
import tempfile

import ray
import ray.train
from ray.train import Checkpoint, Result, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

ray.init(num_cpus=2)


def train_func():
    for step in range(3):
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "step.json"), "w") as f:
                json.dump({"step": step}, f)
            checkpoint = None
            if ray.train.get_context().get_world_rank() == 0:
                checkpoint = Checkpoint.from_directory(folder)
            ray.train.report({"step": step, "value": step * 10}, checkpoint=checkpoint)


with tempfile.TemporaryDirectory() as storage:
    result = TorchTrainer(
        train_func,
        scaling_config=ScalingConfig(num_workers=1),
        run_config=RunConfig(name="results", storage_path=storage),
    ).fit()
    assert result.path == os.path.join(storage, "results"), result.path

    restored = Result.from_path(result.path)
    assert restored.metrics["step"] == 2 and restored.metrics["value"] == 20, restored.metrics
    with restored.checkpoint.as_directory() as folder, open(
            os.path.join(folder, "step.json")) as f:
        assert json.load(f) == {"step": 2}

ray.shutdown()
print("result from path ok")
