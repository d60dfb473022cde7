"""``ember.air``: Ray 2.5's AIR names (``ray.air``), so that 2.5 training code runs with ``ray``
changed to ``ember`` in its imports.

Every name here is ``ember.train``'s own object under Ray 2.5's path, not a second
implementation::

    from ember.air import session, Checkpoint, RunConfig, ScalingConfig
    from ember.air.config import CheckpointConfig, FailureConfig, DatasetConfig
    from ember.air.checkpoint import Checkpoint

    def train_loop(config):
        start = 0
        checkpoint = session.get_checkpoint()
        if checkpoint:
            start = checkpoint.to_dict()["epoch"] + 1
        for epoch in range(start, 3):
            session.report({"epoch": epoch}, checkpoint=Checkpoint.from_dict({"epoch": epoch}))

- ``session``: ``report``, ``get_checkpoint``, ``get_dataset_shard``, ``get_world_rank`` and
  the other ``get_*`` of Ray 2.5's ``ray.air.session``, over ``ember.train``'s.
- ``config``: ``ScalingConfig``, ``RunConfig``, ``CheckpointConfig`` (with Ray 2.5's
  ``_checkpoint_keep_all_ranks`` and ``_checkpoint_upload_from_workers``), ``FailureConfig``,
  ``DatasetConfig``.
- ``checkpoint``: ``Checkpoint`` (``from_dict``/``to_dict`` as well as
  ``from_directory``/``to_directory``/``as_directory``).
- ``Result``: what ``fit()`` returns.

Importing ``ember.air`` imports no torch and no pyarrow.
"""

from __future__ import annotations

from ember.air import checkpoint, config, session
from ember.train import (
    Checkpoint,
    CheckpointConfig,
    DatasetConfig,
    FailureConfig,
    Result,
    RunConfig,
    ScalingConfig,
)

__all__ = [
    "Checkpoint",
    "CheckpointConfig",
    "DatasetConfig",
    "FailureConfig",
    "Result",
    "RunConfig",
    "ScalingConfig",
    "checkpoint",
    "config",
    "session",
]
