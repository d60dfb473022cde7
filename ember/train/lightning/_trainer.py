"""``LightningTrainer``: a ``LightningModule`` trained by Lightning inside ember's workers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ember.train._checkpoint import Checkpoint
from ember.train._config_classes import CheckpointConfig, RunConfig, ScalingConfig
from ember.train._result import Result
from ember.train._trainer import TorchTrainer, complete_run_config
from ember.train.lightning._config_builder import LightningConfig


class LightningTrainer:
    """Train ``lightning_config``'s module with Lightning on ``scaling_config.num_workers``
    workers (Ray 2.5's ``LightningTrainer``)::

        config = (LightningConfigBuilder().module(GPTModule, lr=1e-3)
                  .trainer(max_epochs=3, accelerator="cpu")
                  .fit_params(train_dataloaders=loader).strategy("fsdp").build())
        result = LightningTrainer(config, scaling_config=ScalingConfig(num_workers=2),
                                  run_config=RunConfig(storage_path="s3://bucket/runs")).fit()

    Each worker builds the module and a ``lightning.pytorch.Trainer`` with ember's strategy
    (``EmberDDPStrategy`` or ``EmberFSDPStrategy``), ``EmberEnvironment`` and
    ``EmberReportCallback``, and fits it from the run's latest committed checkpoint when there is
    one (after a worker failure, or ``resume_from_checkpoint``). Lightning's own
    ``ModelCheckpoint``, logger and progress bar are off unless ``.trainer()`` turns them on
    (they write under ``default_root_dir``, the worker's current folder unless set).
    ``datasets`` reach the module through ``ember.train.get_dataset_shard(name)``, after
    ``preprocessor`` (Ray 2.5's; see ``TorchTrainer``) if one is given.
    """

    def __init__(
        self,
        lightning_config: LightningConfig,
        *,
        scaling_config: ScalingConfig,
        run_config: RunConfig | None = None,
        datasets: dict[str, Any] | None = None,
        resume_from_checkpoint: Checkpoint | None = None,
        preprocessor: Any = None,
    ) -> None:
        if not isinstance(lightning_config, LightningConfig):
            raise TypeError("lightning_config must come from LightningConfigBuilder().build(), "
                            f"got {type(lightning_config).__name__}")
        run_config = complete_run_config(run_config, "LightningTrainer")
        run_config = _with_retention(run_config, lightning_config)
        self.lightning_config = lightning_config
        self._trainer = TorchTrainer(
            _lightning_loop, train_loop_config={"lightning_config": lightning_config},
            scaling_config=scaling_config, run_config=run_config, datasets=datasets,
            resume_from_checkpoint=resume_from_checkpoint, preprocessor=preprocessor)

    @property
    def path(self) -> str:
        """The run's folder: ``{storage_path}/{name}``."""
        return self._trainer.path

    def fit(self) -> Result:
        """Train; see ``TorchTrainer.fit``."""
        return self._trainer.fit()

    @classmethod
    def can_restore(cls, path: str) -> bool:
        """Whether ``path`` holds a run ``restore`` can resume (``TorchTrainer.can_restore``)."""
        return TorchTrainer.can_restore(path)

    @classmethod
    def restore(cls, path: str) -> TorchTrainer:
        """The trainer that resumes the run in ``path`` (whose driver died)."""
        return TorchTrainer.restore(path)


def _with_retention(run_config: RunConfig, config: LightningConfig) -> RunConfig:
    """``.checkpointing(monitor, mode, save_top_k)`` as ember's ``CheckpointConfig``."""
    if config.monitor is None and config.save_top_k is None:
        return run_config
    current = run_config.checkpoint_config
    wanted = CheckpointConfig(
        num_to_keep=config.save_top_k, checkpoint_score_attribute=config.monitor,
        checkpoint_score_order=config.mode, keep_all_ranks=current.keep_all_ranks,
        upload_from_workers=current.upload_from_workers, async_upload=current.async_upload)
    if current != CheckpointConfig(keep_all_ranks=current.keep_all_ranks,
                                   upload_from_workers=current.upload_from_workers,
                                   async_upload=current.async_upload) and current != wanted:
        raise ValueError(
            f"retention is set twice: .checkpointing(monitor={config.monitor!r}, "
            f"save_top_k={config.save_top_k!r}) and RunConfig(checkpoint_config={current!r}); "
            "keep one of them")
    return replace(run_config, checkpoint_config=wanted)


def _lightning_loop(loop_config: dict[str, Any]) -> None:
    """(In each worker) build the module and Trainer, and fit from the latest checkpoint."""
    import lightning.pytorch as pl

    from ember.train.lightning._callback import EmberReportCallback, ckpt_path
    from ember.train.lightning._environment import EmberEnvironment
    from ember.train.lightning._prepare import prepare_trainer
    from ember.train.lightning._strategies import EmberDDPStrategy, EmberFSDPStrategy

    config: LightningConfig = loop_config["lightning_config"]
    kwargs = dict(config.trainer_kwargs)
    plugins = list(kwargs.pop("plugins", None) or [])
    callbacks = [*(kwargs.pop("callbacks", None) or []),
                 EmberReportCallback(every_n_epochs=config.every_n_epochs)]
    strategy = (EmberFSDPStrategy(**config.strategy_kwargs) if config.strategy == "fsdp"
                else EmberDDPStrategy(**config.strategy_kwargs))
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_progress_bar", False)
    trainer = prepare_trainer(pl.Trainer(strategy=strategy,
                                         plugins=[EmberEnvironment(), *plugins],
                                         callbacks=callbacks, **kwargs))
    module = config.module_class(**config.module_kwargs)
    with ckpt_path() as path:
        trainer.fit(module, ckpt_path=path, **config.fit_params)
