"""``ember.air.config``: Ray 2.5's ``ray.air.config`` names, which are ``ember.train``'s.

``CheckpointConfig`` takes Ray 2.5's ``_checkpoint_keep_all_ranks`` and
``_checkpoint_upload_from_workers``; ``DatasetConfig`` is 2.5's per-dataset config, passed as
``TorchTrainer(dataset_config={"train": DatasetConfig(...)})``.
"""

from __future__ import annotations

from ember.train import (
    CheckpointConfig,
    DatasetConfig,
    FailureConfig,
    RunConfig,
    ScalingConfig,
)

__all__ = ["CheckpointConfig", "DatasetConfig", "FailureConfig", "RunConfig", "ScalingConfig"]
