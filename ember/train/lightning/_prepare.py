"""``prepare_trainer``: check a user-built Lightning ``Trainer`` against ember's gang."""

from __future__ import annotations

from typing import Any, TypeVar

from ember.train._session import get_context

T = TypeVar("T")


def prepare_trainer(trainer: T) -> T:
    """Check that ``trainer`` (a ``lightning.pytorch.Trainer`` built inside
    ``train_loop_per_worker``) will train across ember's workers as they are, and return it.

    It must use ``EmberEnvironment`` (``plugins=[EmberEnvironment()]``) and, with more than one
    worker, ``EmberDDPStrategy`` or ``EmberFSDPStrategy``, on one device per worker (Lightning's
    ``DeepSpeedStrategy`` is refused with any number of workers: it runs on CUDA only; FSDP2
    shards as ZeRO-3 does). Anything else fails here, before training, rather than train with the wrong world size, spawn
    processes of its own, or replicate a model meant to be sharded.
    """
    from lightning.pytorch.strategies import ParallelStrategy

    from ember.train.lightning._environment import EmberEnvironment
    from ember.train.lightning._strategies import EmberDDPStrategy, EmberFSDPStrategy

    strategy: Any = getattr(trainer, "strategy", None)
    if strategy is None:
        raise TypeError(f"prepare_trainer() takes a lightning.pytorch.Trainer, got "
                        f"{type(trainer).__name__}")
    name = type(strategy).__name__
    if any(cls.__name__ == "DeepSpeedStrategy" for cls in type(strategy).__mro__):
        from ember.train.lightning._config_builder import DEEPSPEED_REFUSED

        raise ValueError(f"strategy {name}: {DEEPSPEED_REFUSED}")
    environment = getattr(strategy, "cluster_environment", None)
    if isinstance(strategy, ParallelStrategy) and not isinstance(environment, EmberEnvironment):
        raise ValueError(
            f"the Trainer's cluster environment is {type(environment).__name__}, which does not "
            "know ember's ranks (Lightning's LightningEnvironment launches processes of its own "
            "unless LOCAL_RANK is set, and sizes the world from devices x num_nodes): pass "
            "Trainer(plugins=[EmberEnvironment()])")
    context = get_context()
    if context.world_size > 1 and not isinstance(strategy, (EmberDDPStrategy,
                                                            EmberFSDPStrategy)):
        hint = (" (Lightning's FSDPStrategy refuses the CPU and writes every shard into rank "
                "0's folder; EmberFSDPStrategy runs FSDP2 on CPU and GPU)"
                if "FSDP" in name or "ModelParallel" in name else "")
        raise ValueError(
            f"strategy {name} cannot train across ember's {context.world_size} workers{hint}: "
            "pass Trainer(strategy=EmberDDPStrategy()) or Trainer(strategy=EmberFSDPStrategy())")
    devices = len(getattr(strategy, "parallel_devices", None) or [None])
    if devices != 1:
        raise ValueError(f"Trainer(devices={devices}) inside an ember worker: each worker "
                         "drives one device; leave devices unset and set "
                         "ScalingConfig(num_workers=...)")
    return trainer
