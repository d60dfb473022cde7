"""Pin ``ember.train``'s public names, and check that importing it loads no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import ember.train
import ember.train.torch

TRAIN_ALL = [
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
TORCH_ALL = ["TorchCheckpoint", "TorchTrainer", "enable_reproducibility", "get_device", "load_sharded",
             "prepare_data_loader", "prepare_model", "save_sharded"]


def test_train_all_is_pinned():
    assert ember.train.__all__ == TRAIN_ALL
    assert all(getattr(ember.train, name) is not None for name in TRAIN_ALL)


def test_train_torch_all_is_pinned():
    assert ember.train.torch.__all__ == TORCH_ALL
    assert all(getattr(ember.train.torch, name) is not None for name in TORCH_ALL)


def test_ember_train_loads_lazily_without_torch():
    code = ("import sys, json, ember; before = 'ember.train' in sys.modules; ember.train; "
            "print(json.dumps([before, 'ember.train' in sys.modules, 'torch' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert json.loads(done.stdout) == [False, True, False]


def test_in_loop_functions_outside_a_worker_say_where_they_work():
    import pytest

    with pytest.raises(RuntimeError, match="only inside train_loop_per_worker"):
        ember.train.report({"x": 1})


def test_v2_aliases_reach_the_same_objects_under_rays_module_paths():
    code = """
import json, sys
import ember.train
from ember.train.v2 import TorchTrainer as V2Trainer
from ember.train.v2.api.config import FailureConfig, RunConfig, ScalingConfig
from ember.train.v2.api.result import Result
from ember.train.v2.api.exceptions import TrainingFailedError
torch_loaded = 'torch' in sys.modules
from ember.train.v2.torch.torch_trainer import TorchTrainer
from ember.train.v2.torch import prepare_model
import ember.train.torch
print(json.dumps([
    torch_loaded,
    V2Trainer is TorchTrainer is ember.train.TorchTrainer,
    RunConfig is ember.train.RunConfig and ScalingConfig is ember.train.ScalingConfig,
    FailureConfig is ember.train.FailureConfig and Result is ember.train.Result,
    TrainingFailedError is ember.train.TrainingFailedError,
    prepare_model is ember.train.torch.prepare_model,
    sorted(ember.train.v2.__all__) == sorted(ember.train.__all__),
]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert json.loads(done.stdout) == [False, True, True, True, True, True, True]
