"""``ember.train.lightning``: PyTorch Lightning inside ember's train workers.

Two ways in. ``LightningTrainer`` builds everything from a ``LightningConfigBuilder``::

    from ember.train.lightning import LightningConfigBuilder, LightningTrainer

    config = (LightningConfigBuilder().module(MyModule, lr=1e-3)
              .trainer(max_epochs=3, accelerator="cpu")
              .fit_params(train_dataloaders=loader).strategy("fsdp").build())
    result = LightningTrainer(config, scaling_config=ScalingConfig(num_workers=2)).fit()

Or build the Lightning ``Trainer`` yourself inside a ``TorchTrainer`` loop::

    def train_loop(config):
        trainer = prepare_trainer(pl.Trainer(
            max_epochs=3, strategy=EmberFSDPStrategy(), plugins=[EmberEnvironment()],
            callbacks=[EmberReportCallback()], enable_checkpointing=False))
        with ckpt_path() as path:  # the latest committed checkpoint, or None
            trainer.fit(MyModule(), train_dataloaders=loader, ckpt_path=path)

``EmberFSDPStrategy`` is FSDP2 (``fully_shard``) and really shards on CPU: Lightning's own
``"fsdp"`` refuses the CPU. Each rank uploads the shard it wrote. Importing this package loads
no lightning; its names load it when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ember.train.lightning._config_builder import LightningConfig, LightningConfigBuilder
from ember.train.lightning._prepare import prepare_trainer
from ember.train.lightning._trainer import LightningTrainer

if TYPE_CHECKING:
    from ember.train.lightning._callback import EmberReportCallback, ckpt_path
    from ember.train.lightning._environment import EmberEnvironment
    from ember.train.lightning._strategies import EmberDDPStrategy, EmberFSDPStrategy

__all__ = [
    "EmberDDPStrategy",
    "EmberEnvironment",
    "EmberFSDPStrategy",
    "EmberReportCallback",
    "LightningConfig",
    "LightningConfigBuilder",
    "LightningTrainer",
    "ckpt_path",
    "prepare_trainer",
]

_LAZY = {
    "EmberDDPStrategy": "ember.train.lightning._strategies",
    "EmberFSDPStrategy": "ember.train.lightning._strategies",
    "EmberEnvironment": "ember.train.lightning._environment",
    "EmberReportCallback": "ember.train.lightning._callback",
    "ckpt_path": "ember.train.lightning._callback",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ember.train.lightning' has no attribute {name!r}")
