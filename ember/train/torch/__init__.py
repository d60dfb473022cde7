"""``ember.train.torch``: PyTorch helpers for the training loop (imports torch on use).

- ``prepare_model(model)``: moves it to this worker's device and wraps it in
  ``DistributedDataParallel`` (or shards it with FSDP2 ``fully_shard``: ``parallel_strategy=
  "fsdp"``).
- ``prepare_data_loader(loader)``: gives it a ``DistributedSampler`` so each rank sees its share.
- ``get_device()``: this worker's device (its GPU, or the CPU).
- ``enable_reproducibility(seed)``: seeds torch, ``random`` and NumPy, deterministic algorithms.
- ``save_sharded`` / ``load_sharded``: ``torch.distributed.checkpoint`` (DCP) state dicts, one
  shard per rank, restorable onto a different number of workers.
- ``TorchCheckpoint`` (Ray 2.5's): ``from_model(model)``, ``from_state_dict(sd)``,
  ``get_model(model=None)``.
"""

from __future__ import annotations

from ember.train._trainer import TorchTrainer
from ember.train.torch._checkpoint import TorchCheckpoint
from ember.train.torch._prepare import (
    enable_reproducibility,
    get_device,
    load_sharded,
    prepare_data_loader,
    prepare_model,
    save_sharded,
)

__all__ = [
    "TorchCheckpoint",
    "TorchTrainer",
    "enable_reproducibility",
    "get_device",
    "load_sharded",
    "prepare_data_loader",
    "prepare_model",
    "save_sharded",
]
