"""``ember.air.session``: Ray 2.5's ``ray.air.session`` functions, over ``ember.train``'s.

They work inside ``train_loop_per_worker``::

    from ember.air import session

    def train_loop(config):
        shard = session.get_dataset_shard("train")
        rank = session.get_world_rank()
        ...
        session.report({"loss": loss}, checkpoint=Checkpoint.from_dict({"epoch": epoch}))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ember.train as _train
from ember.train import Checkpoint, get_checkpoint

__all__ = [
    "get_checkpoint",
    "get_dataset_shard",
    "get_experiment_name",
    "get_local_rank",
    "get_local_world_size",
    "get_node_rank",
    "get_trial_dir",
    "get_trial_id",
    "get_trial_name",
    "get_world_rank",
    "get_world_size",
    "report",
]


def report(metrics: Mapping[str, Any], *, checkpoint: Checkpoint | None = None) -> None:
    """Report this step's metrics, and optionally this rank's checkpoint
    (``ember.train.report``)."""
    _train.report(metrics, checkpoint=checkpoint)


def get_world_rank() -> int:
    """This worker's rank among all workers."""
    return _train.get_context().get_world_rank()


def get_world_size() -> int:
    """The number of workers."""
    return _train.get_context().get_world_size()


def get_local_rank() -> int:
    """This worker's rank among the workers on its node."""
    return _train.get_context().get_local_rank()


def get_local_world_size() -> int:
    """The number of workers on this worker's node."""
    return _train.get_context().get_local_world_size()


def get_node_rank() -> int:
    """The rank of this worker's node."""
    return _train.get_context().get_node_rank()


def get_experiment_name() -> str:
    """The run's name (``RunConfig.name``)."""
    return _train.get_context().get_experiment_name()


def get_trial_name() -> str:
    """The run's name: ember runs one trial per ``fit()`` (Ray 2.5 named it after the
    trainer, ``TorchTrainer_<id>_00000``), so it is ``RunConfig.name``, as
    ``get_experiment_name()``."""
    return _train.get_context().get_trial_name()


def get_trial_id() -> str:
    """A short id of the run (``<hex>_00000``), the same on every rank and after a restart."""
    return _train.get_context().get_trial_id()


def get_trial_dir() -> str:
    """A local folder of the run for the loop's own files: the run's folder when storage is
    local, else ``~/ember_results/<name>`` on the worker's machine (Ray 2.5 synced its trial
    folder to cloud storage; ember uploads checkpoints only)."""
    return _train.get_context().get_trial_dir()


def get_dataset_shard(dataset_name: str | None = None) -> Any:
    """This rank's shard of the trainer's dataset ``dataset_name`` (``"train"``...).

    As in Ray 2.5, where trainers always pass their datasets by name, the name is needed:
    ``None`` raises ``RuntimeError``."""
    if dataset_name is None:
        raise RuntimeError("get_dataset_shard() needs the dataset's name, the key it has in "
                           "the trainer's datasets: get_dataset_shard('train')")
    return _train.get_dataset_shard(dataset_name)
