"""``EmberReportCallback``: Hugging Face ``Trainer`` logs and saves become ember reports."""

from __future__ import annotations

import os
import shutil
from typing import Any

from transformers import TrainerCallback

from ember.train._checkpoint import Checkpoint
from ember.train._session import report
from ember.train.huggingface import _deepspeed, _fsdp
from ember.train.huggingface._files import stage

PREFIX = "checkpoint"  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR


class EmberReportCallback(TrainerCallback):
    """Reports the Trainer's logged metrics to ember, and each save as an ember checkpoint.

    Add it to a ``transformers.Trainer`` that runs inside a ``TorchTrainer`` loop (the
    ``TransformersTrainer`` adds it itself)::

        trainer = prepare_trainer(transformers.Trainer(model, args, ...))
        trainer.add_callback(EmberReportCallback())
        trainer.train(resume_from_checkpoint=get_resume_checkpoint())

    Each log (``logging_steps``, evaluation, the end-of-training summary) is one
    ``ember.train.report`` with ``step`` and ``epoch`` added. A log whose step also saves is
    held back and reported with the save. On a save, every rank reports the
    ``checkpoint-{step}/`` folder that it wrote itself (its output directory is its own, see
    ``prepare_trainer``): rank 0's model, optimizer, scheduler and trainer state (DDP) or each
    rank's DCP shards (FSDP ``SHARDED_STATE_DICT``) or ZeRO partition (DeepSpeed), and every
    rank's RNG state. The metrics of
    a checkpoint are all values logged so far (the latest of each), so
    ``CheckpointConfig(checkpoint_score_attribute="eval_loss")`` works.
    """

    def __init__(self) -> None:
        self.latest: dict[str, Any] = {}
        self.held = False

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       **kwargs: Any) -> None:
        if getattr(args, "fsdp_plugin_args", None) is not None:
            _fsdp.check_sharded(model, "The Trainer's TrainingArguments(fsdp=...)")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        metrics = {**(logs or {}), "step": state.global_step, "epoch": state.epoch}
        self.latest.update(metrics)
        if control.should_save:  # the save of this step comes next: report both at once
            self.held = True
            return
        report(metrics)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        name = f"{PREFIX}-{state.global_step}"
        folder = os.path.join(args.output_dir, name)
        metrics = {**self.latest, "step": state.global_step, "epoch": state.epoch}
        self.held = False
        if not os.path.isdir(folder):  # this rank wrote nothing for this save
            report(metrics)
            return
        _deepspeed.check_partitions_kept(folder)
        staging = stage(folder, name, args.output_dir)
        try:
            report(metrics, checkpoint=Checkpoint.from_directory(staging))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.held:  # a log waited for a save that never came
            self.held = False
            report({**self.latest, "step": state.global_step, "epoch": state.epoch})
