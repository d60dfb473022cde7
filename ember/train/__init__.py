"""``ember.train``: distributed PyTorch training with per-worker checkpoint uploads.

::

    import ember
    from ember.train import Checkpoint, RunConfig, ScalingConfig
    from ember.train.torch import TorchTrainer, prepare_model

    def train_loop(config):
        model = prepare_model(build_model())
        for epoch in range(config["epochs"]):
            loss = train_one_epoch(model)
            with tempfile.TemporaryDirectory() as d:
                torch.save(model.state_dict(), f"{d}/model.pt")
                ember.train.report({"loss": loss}, checkpoint=Checkpoint.from_directory(d))

    result = TorchTrainer(train_loop, train_loop_config={"epochs": 3},
                          scaling_config=ScalingConfig(num_workers=2),
                          run_config=RunConfig(storage_path="s3://bucket/runs")).fit()

This module imports no torch; ``ember.train.torch`` does, when it is first used. The workers of
a ``TorchTrainer`` import it, so inside a training loop ``ember.train.torch`` is there as an
attribute, as ``ray.train.torch`` is in Ray's workers.
"""

from __future__ import annotations

from ember.errors import CorruptCheckpointError, StorageError, TrainingFailedError
from ember.train._checkpoint import Checkpoint
from ember.train._config_classes import (
    CheckpointConfig,
    DataConfig,
    DatasetConfig,
    FailureConfig,
    RunConfig,
    ScalingConfig,
)
from ember.train._result import Result
from ember.train._session import (
    TrainContext,
    get_checkpoint,
    get_context,
    get_dataset_shard,
    report,
)
from ember.train._trainer import TorchTrainer
from ember.util import WorkerGroup

__all__ = [
    "Checkpoint",
    "CheckpointConfig",
    "CorruptCheckpointError",
    "DataConfig",
    "DatasetConfig",
    "FailureConfig",
    "Result",
    "RunConfig",
    "ScalingConfig",
    "StorageError",
    "TorchTrainer",
    "TrainContext",
    "TrainingFailedError",
    "WorkerGroup",
    "get_checkpoint",
    "get_context",
    "get_dataset_shard",
    "report",
]
