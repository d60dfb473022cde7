"""``EmberReportCallback`` (Lightning saves become ember checkpoints) and ``ckpt_path``."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from lightning.pytorch.callbacks import Callback

from ember.train._checkpoint import Checkpoint
from ember.train._session import get_checkpoint, report

CHECKPOINT_NAME = "checkpoint.ckpt"


class EmberReportCallback(Callback):
    """Reports Lightning's logged metrics (``trainer.callback_metrics``, plus ``epoch`` and
    ``step``) to ember at the end of every ``every_n_epochs``-th training epoch (and of the
    last one: ``max_epochs`` reached, or ``trainer.should_stop``), with a
    checkpoint saved by Lightning itself (``trainer.save_checkpoint``: weights, optimizer and
    loop state).

    Each rank saves into a folder of its own and uploads what it wrote there: with DDP, rank 0
    writes ``checkpoint.ckpt`` and the other ranks nothing; with ``EmberFSDPStrategy`` each rank
    writes its shard into a ``checkpoint.ckpt/`` folder. Resume with ``ckpt_path()``::

        trainer = prepare_trainer(pl.Trainer(..., strategy=EmberDDPStrategy(),
                                             plugins=[EmberEnvironment()],
                                             callbacks=[EmberReportCallback()]))
        with ckpt_path() as path:
            trainer.fit(module, ckpt_path=path)
    """

    def __init__(self, every_n_epochs: int = 1, *, save_checkpoint: bool = True) -> None:
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) \
                or every_n_epochs < 1:
            raise ValueError(f"EmberReportCallback(every_n_epochs={every_n_epochs!r}) must be "
                             "an integer >= 1")
        self.every_n_epochs = every_n_epochs
        self.save_checkpoint = save_checkpoint

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        epochs = trainer.max_epochs
        last = trainer.should_stop or (epochs not in (None, -1)
                                       and trainer.current_epoch + 1 >= epochs)
        if (trainer.current_epoch + 1) % self.every_n_epochs and not last:
            return
        metrics = {name: value.item() if hasattr(value, "item") else value
                   for name, value in trainer.callback_metrics.items()}
        metrics.update(epoch=trainer.current_epoch, step=trainer.global_step)
        if not self.save_checkpoint:
            report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="ember-lightning-") as folder:
            trainer.save_checkpoint(os.path.join(folder, CHECKPOINT_NAME))
            wrote = bool(os.listdir(folder))
            report(metrics, checkpoint=Checkpoint.from_directory(folder) if wrote else None)


@contextlib.contextmanager
def ckpt_path(checkpoint: Checkpoint | None = None) -> Iterator[str | None]:
    """A local path to pass as ``Trainer.fit(ckpt_path=...)``: the checkpoint that
    ``EmberReportCallback`` saved (default: ``ember.train.get_checkpoint()``, the run's latest
    committed one), or ``None`` at a fresh start. Every rank's files are fetched and put together,
    as Lightning expects them: a single ``checkpoint.ckpt`` (DDP), or the ``checkpoint.ckpt/``
    folder of every rank's shards (FSDP). The files are deleted when the block ends."""
    if checkpoint is None:
        checkpoint = get_checkpoint()
    if checkpoint is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="ember-lightning-resume-") as merged, \
            checkpoint.all_ranks().as_directory() as folder:
        rank_folders = sorted(name for name in os.listdir(folder) if name.startswith("rank_"))
        sources = [os.path.join(folder, name) for name in rank_folders] or [folder]
        for source in sources:
            for parent, _dirs, names in os.walk(source):
                for name in names:
                    full = os.path.join(parent, name)
                    target = os.path.join(merged, os.path.relpath(full, source))
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    if not os.path.exists(target):
                        os.symlink(full, target)
        path = os.path.join(merged, CHECKPOINT_NAME)
        if not os.path.exists(path):
            found = sorted(os.listdir(merged))
            raise FileNotFoundError(
                f"checkpoint {checkpoint.path!r} holds no {CHECKPOINT_NAME} (found {found} in "
                f"{', '.join(rank_folders) or 'it'}): it was not saved by EmberReportCallback; "
                "open it with checkpoint.as_directory() instead")
        yield path

