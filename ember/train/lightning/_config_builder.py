"""``LightningConfigBuilder``: what ``LightningTrainer`` runs, as plain data (no lightning import).

The builder checks what it can on the driver, so a typo fails before any worker starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

STRATEGIES = ("ddp", "fsdp")
# FSDP2 (``torch.distributed.fsdp.fully_shard``) options, plus how checkpoints are written.
FSDP_OPTIONS = ("reshard_after_forward", "mp_policy", "offload_policy",
                "save_distributed_checkpoint", "state_dict_type")
# FSDP1 (``FullyShardedDataParallel``) options that have no FSDP2 meaning.
FSDP1_OPTIONS = ("sharding_strategy", "auto_wrap_policy", "cpu_offload",
                 "activation_checkpointing_policy", "mixed_precision", "use_orig_params",
                 "limit_all_gathers", "sync_module_states")
# Set by ember from the ScalingConfig and the builder's own methods, never through .trainer().
TRAINER_OWNED = {
    "strategy": "use .strategy('ddp' | 'fsdp', ...)",
    "devices": "each worker drives one device: set ScalingConfig(num_workers=...)",
    "num_nodes": "ember places the workers: set ScalingConfig(num_workers=...)",
}
FIT_PARAMS = ("train_dataloaders", "val_dataloaders", "datamodule")
# Lightning's DeepSpeedStrategy refuses any accelerator but CUDA (its setup_environment raises
# for accelerator="cpu"), so ember cannot run it on CPU workers, nor test it there.
DEEPSPEED_REFUSED = (
    "Lightning's DeepSpeed strategy is not supported by ember's Lightning integration: Lightning "
    "runs it on CUDA GPUs only (it refuses accelerator='cpu'). Use strategy 'fsdp' instead "
    "(.strategy('fsdp') or Trainer(strategy=EmberFSDPStrategy())): FSDP2, which shards "
    "parameters, gradients and optimizer state across the workers as ZeRO-3 does, on CPU "
    "(gloo) and GPU (nccl), each rank uploading its own shard. For DeepSpeed ZeRO itself, use "
    "ember.train.huggingface (TransformersTrainer with TrainingArguments(deepspeed=...), or "
    "AccelerateTrainer), which runs it on CPU and GPU workers")
CHECKPOINTING = ("every_n_epochs", "monitor", "mode", "save_top_k")


@dataclass(frozen=True)
class LightningConfig:
    """What ``LightningConfigBuilder.build()`` returns; hand it to ``LightningTrainer``."""

    module_class: type
    module_kwargs: dict[str, Any] = field(default_factory=dict)
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    fit_params: dict[str, Any] = field(default_factory=dict)
    strategy: Literal["ddp", "fsdp"] = "ddp"
    strategy_kwargs: dict[str, Any] = field(default_factory=dict)
    every_n_epochs: int = 1
    monitor: str | None = None
    mode: Literal["min", "max"] = "min"
    save_top_k: int | None = None


class LightningConfigBuilder:
    """Build a ``LightningTrainer``'s configuration step by step (Ray 2.5's names)::

        config = (LightningConfigBuilder()
                  .module(GPTModule, lr=1e-3)
                  .trainer(max_epochs=4, accelerator="cpu")
                  .fit_params(train_dataloaders=loader)
                  .strategy("fsdp")
                  .checkpointing(monitor="train_loss", mode="min", save_top_k=2)
                  .build())

    - ``.module(cls, **kwargs)``: the ``LightningModule`` class; each worker builds
      ``cls(**kwargs)``.
    - ``.trainer(**kwargs)``: ``lightning.pytorch.Trainer`` arguments (not ``strategy``,
      ``devices`` or ``num_nodes``: ember sets those).
    - ``.fit_params(**kwargs)``: ``Trainer.fit`` arguments (``train_dataloaders``,
      ``val_dataloaders``, ``datamodule``); the resume path is ember's.
    - ``.strategy("ddp", **DDPStrategy kwargs)`` or ``.strategy("fsdp", **fully_shard kwargs)``:
      ``"fsdp"`` is FSDP2 on CPU and GPU alike (see ``EmberFSDPStrategy``).
    - ``.checkpointing(every_n_epochs=1, monitor=None, mode="min", save_top_k=None)``: an
      ember checkpoint every n epochs; ``monitor``/``mode``/``save_top_k`` keep the best ones
      (ember's ``CheckpointConfig`` retention).
    """

    def __init__(self) -> None:
        self._module: tuple[type, dict[str, Any]] | None = None
        self._trainer: dict[str, Any] = {}
        self._fit: dict[str, Any] = {}
        self._strategy: tuple[str, dict[str, Any]] = ("ddp", {})
        self._checkpointing: dict[str, Any] = {}

    def module(self, cls: type, **kwargs: Any) -> LightningConfigBuilder:
        """The ``LightningModule`` subclass; each worker builds ``cls(**kwargs)``."""
        if not isinstance(cls, type) or not any(
                base.__name__ == "LightningModule" for base in cls.__mro__):
            raise TypeError(f".module() takes a LightningModule subclass, got {cls!r}; pass the "
                            "class itself (each worker builds cls(**kwargs))")
        self._module = (cls, dict(kwargs))
        return self

    def trainer(self, **kwargs: Any) -> LightningConfigBuilder:
        """``lightning.pytorch.Trainer`` arguments (not ``strategy``, ``devices``, ``num_nodes`` or
        a cluster environment plugin: ember sets those).
        """
        for name, fix in TRAINER_OWNED.items():
            if name in kwargs:
                raise ValueError(f".trainer({name}={kwargs[name]!r}) is set by ember: {fix}")
        for plugin in kwargs.get("plugins") or []:
            if any(base.__name__ == "ClusterEnvironment" for base in type(plugin).__mro__):
                raise ValueError(f".trainer(plugins=[{type(plugin).__name__}()]) is a cluster "
                                 "environment: ember provides EmberEnvironment; remove it")
        self._trainer.update(kwargs)
        return self

    def fit_params(self, **kwargs: Any) -> LightningConfigBuilder:
        """``Trainer.fit`` arguments: ``train_dataloaders``, ``val_dataloaders``, ``datamodule``
        (``ckpt_path`` is ember's: the latest committed checkpoint).
        """
        if "ckpt_path" in kwargs:
            raise ValueError(".fit_params(ckpt_path=...) is set by ember (the latest committed "
                             "checkpoint); to start from another run's checkpoint pass "
                             "LightningTrainer(resume_from_checkpoint=...)")
        unknown = sorted(set(kwargs) - set(FIT_PARAMS))
        if unknown:
            raise ValueError(f".fit_params() got unknown argument(s) {unknown} (known: "
                             f"{', '.join(FIT_PARAMS)})")
        self._fit.update(kwargs)
        return self

    def strategy(self, name: str = "ddp", **kwargs: Any) -> LightningConfigBuilder:
        """``"ddp"`` (``DDPStrategy`` keyword arguments) or ``"fsdp"`` (FSDP2's ``fully_shard``
        keyword arguments, plus ``state_dict_type="sharded"|"full"``).
        """
        if name == "deepspeed":
            raise ValueError(f"strategy 'deepspeed': {DEEPSPEED_REFUSED}")
        if name not in STRATEGIES:
            raise ValueError(f"unknown strategy {name!r} (known: 'ddp', 'fsdp')")
        if name == "fsdp":
            check_fsdp_options(kwargs)
        self._strategy = (name, dict(kwargs))
        return self

    def checkpointing(self, **kwargs: Any) -> LightningConfigBuilder:
        """An ember checkpoint every ``every_n_epochs`` epochs; ``monitor``, ``mode`` (``"min"`` or
        ``"max"``) and ``save_top_k`` keep the best ones.
        """
        unknown = sorted(set(kwargs) - set(CHECKPOINTING))
        if unknown:
            raise ValueError(f".checkpointing() got unknown argument(s) {unknown} (known: "
                             f"{', '.join(CHECKPOINTING)}; ember checkpoints at epoch ends)")
        every = kwargs.get("every_n_epochs", 1)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f".checkpointing(every_n_epochs={every!r}) must be an integer >= 1")
        if kwargs.get("mode", "min") not in ("min", "max"):
            raise ValueError(f".checkpointing(mode={kwargs['mode']!r}) must be 'min' or 'max'")
        top_k = kwargs.get("save_top_k")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                                  or top_k < 1):
            raise ValueError(f".checkpointing(save_top_k={top_k!r}) must be None (keep all) or "
                             "an integer >= 1")
        self._checkpointing.update(kwargs)
        return self

    def build(self) -> LightningConfig:
        """The ``LightningConfig`` to pass to ``LightningTrainer`` (needs ``.module(...)``)."""
        if self._module is None:
            raise ValueError("LightningConfigBuilder.build() needs a module: call "
                             ".module(YourLightningModule, **init_kwargs) first")
        name, kwargs = self._strategy
        return LightningConfig(
            module_class=self._module[0], module_kwargs=self._module[1],
            trainer_kwargs=dict(self._trainer), fit_params=dict(self._fit),
            strategy=name,  # type: ignore[arg-type]
            strategy_kwargs=kwargs, **self._checkpointing)


def check_fsdp_options(kwargs: dict[str, Any]) -> None:
    """Reject options that ``EmberFSDPStrategy`` (FSDP2) would not honour."""
    fsdp1 = sorted(set(kwargs) & set(FSDP1_OPTIONS))
    if fsdp1:
        raise ValueError(
            f"strategy 'fsdp' got FSDP1 option(s) {fsdp1}: ember's 'fsdp' is FSDP2 "
            f"(torch.distributed.fsdp.fully_shard), which takes {', '.join(FSDP_OPTIONS)}; for "
            "your own wrapping policy, call fully_shard in LightningModule.configure_model")
    unknown = sorted(set(kwargs) - set(FSDP_OPTIONS))
    if unknown:
        raise ValueError(f"strategy 'fsdp' got unknown option(s) {unknown} (known: "
                         f"{', '.join(FSDP_OPTIONS)})")
    if kwargs.get("state_dict_type", "sharded") not in ("sharded", "full"):
        raise ValueError(f"state_dict_type={kwargs['state_dict_type']!r} must be 'sharded' (each "
                         "rank saves its own shard) or 'full' (rank 0 saves the whole model)")
