"""``ember.train.huggingface``: Hugging Face Transformers and Accelerate on ember workers.

- ``TransformersTrainer(trainer_init_per_worker, ...)``: each worker builds a
  ``transformers.Trainer`` and trains it; every Hugging Face save becomes an ember checkpoint
  (each rank uploads what it wrote), and runs resume from them.
- ``prepare_trainer``, ``EmberReportCallback`` and ``get_resume_checkpoint``: the same for a
  ``Trainer`` built inside a plain ``TorchTrainer`` loop.
- ``AccelerateTrainer(train_loop_per_worker, accelerate_config=...)``: an Accelerate loop,
  configured through Accelerate's environment variables inside each worker; ``report_state``
  and ``restore_state`` save and load ``accelerator.save_state`` folders as ember checkpoints.

FSDP on CPU workers really shards (FSDP2 ``fully_shard`` over gloo): Accelerate would drop
FSDP there and train DDP, so ember switches it on, or refuses FSDP1. DeepSpeed ZeRO runs on CPU
workers (gloo) as on GPU workers (nccl): ember sets Accelerate up so that it keeps DeepSpeed, and
raises wherever DeepSpeed would be dropped; each rank uploads its own ZeRO partition, and
``consolidate_zero_checkpoint`` turns a stored ZeRO checkpoint into one Hugging Face model.
Importing this package imports neither transformers nor accelerate (nor torch): they load
inside the workers.
"""

from __future__ import annotations

from typing import Any

from ember.train.huggingface._accelerate import (
    AccelerateTrainer,
    accelerate_env,
    report_state,
    restore_state,
)
from ember.train.huggingface._deepspeed import consolidate_zero_checkpoint
from ember.train.huggingface._transformers import (
    TransformersTrainer,
    get_resume_checkpoint,
    prepare_trainer,
)

__all__ = [
    "AccelerateTrainer",
    "EmberReportCallback",
    "TransformersTrainer",
    "accelerate_env",
    "consolidate_zero_checkpoint",
    "get_resume_checkpoint",
    "prepare_trainer",
    "report_state",
    "restore_state",
]


def __getattr__(name: str) -> Any:
    if name == "EmberReportCallback":  # subclasses transformers.TrainerCallback: load on use
        from ember.train.huggingface._callback import EmberReportCallback

        return EmberReportCallback
    raise AttributeError(f"module 'ember.train.huggingface' has no attribute {name!r}")
