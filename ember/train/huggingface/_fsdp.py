"""FSDP on CPU: Accelerate accepts FSDP settings there, then drops them and trains plain DDP.

Accelerate 1.x switches its state to ``DistributedType.FSDP`` only for GPU-like devices; on
``MULTI_CPU`` (gloo) the FSDP plugin is silently discarded, and so is HF ``Trainer``'s (it runs on
Accelerate). FSDP2 (``fully_shard``) does shard on CPU with gloo, so ember switches Accelerate's
state to FSDP itself when FSDP2 was asked for, and refuses FSDP1 rather than train unsharded.
``fsdp_plan`` is the decision (pure); ``promote`` applies it; ``check_sharded`` proves it.
"""

from __future__ import annotations

from typing import Any, Literal

Plan = Literal["as_is", "promote"]


def fsdp_plan(*, requested: bool, version: int | None, distributed_type: str) -> Plan:
    """What to do with Accelerate's state once it was created.

    ``distributed_type`` is the name of Accelerate's ``DistributedType`` (``"MULTI_CPU"``...).
    Returns ``"promote"`` when FSDP2 was asked for but Accelerate dropped it on CPU, ``"as_is"``
    when there is nothing to fix; raises ``ValueError`` when FSDP was asked for and cannot run.
    """
    if not requested or distributed_type == "FSDP":
        return "as_is"
    if distributed_type == "MULTI_CPU":
        if version == 2:
            return "promote"
        raise ValueError(
            f"FSDP version {version} was asked for on CPU workers, where Accelerate drops the "
            "FSDP plugin and would train plain DDP with every rank holding the whole model "
            "(nothing sharded). Ask for FSDP2, which shards on CPU with gloo (Trainer: "
            "fsdp_config={'fsdp_version': 2}; AccelerateTrainer: accelerate_config="
            "{'fsdp_config': {'fsdp_version': 2}}), or train on GPUs (ScalingConfig(use_gpu=True))")
    raise ValueError(
        f"FSDP was asked for, but Accelerate set up distributed_type={distributed_type!r} and "
        "dropped the FSDP plugin, so the model would not be sharded. Run with at least one "
        "worker of a TorchTrainer-based trainer (ember sets up torch.distributed), on CPU with "
        "FSDP2 or on GPUs")


def promote(state: Any, plugin: Any) -> None:
    """Switch an initialized ``AcceleratorState`` (a shared singleton) to FSDP with ``plugin``.

    This is what Accelerate itself does for GPUs in ``AcceleratorState.__init__``; everything
    after it (``prepare`` wrapping with ``fully_shard``, sharded ``save_state``) reads these two
    fields.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    mixed_precision = getattr(state, "_mixed_precision", "no")
    if mixed_precision not in (None, "no"):
        plugin.set_mixed_precision(mixed_precision)
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def check_sharded(model: Any, what: str) -> None:
    """Raise ``ValueError`` unless ``model``'s parameters are FSDP-sharded (FSDP2 ``DTensor``s, or
    an FSDP1 wrapper): the guard that no run reports FSDP while it trains DDP."""
    if model is None or is_sharded(model):
        return
    raise ValueError(
        f"{what} asks for FSDP but the model's parameters are not sharded: it would train as "
        "DDP. Call ember.train.huggingface.prepare_trainer(trainer) before trainer.train() (it "
        "turns FSDP2 on for CPU workers), or drop the FSDP settings")


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
        return True
    return any(isinstance(p, DTensor) for p in model.parameters())
