"""Lightning strategies for ember's workers: DDP, and FSDP2 that really shards on CPU too.

Lightning's own ``"fsdp"`` strategy (FSDP1) refuses ``accelerator="cpu"``; its
``ModelParallelStrategy`` runs FSDP2 (``fully_shard``) on CPU and GPU but only shards what the
module's ``configure_model`` shards, sizes its mesh from ``devices x num_nodes`` and writes every
rank's shard into rank 0's folder. ``EmberFSDPStrategy`` fixes all three for ember's gang.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

from ember.train._session import get_context

logger = logging.getLogger("ember.train")


def _device() -> torch.device:
    from ember.train.torch import get_device

    return get_device()


class EmberDDPStrategy(DDPStrategy):
    """Lightning's ``DDPStrategy`` over ember's process group: this worker's device, and a
    distributed sampler over all of ember's ranks (Lightning would count ``devices x
    num_nodes``, one per worker)."""

    @property
    def root_device(self) -> torch.device:
        return _device()

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any]:
        """``num_replicas`` and ``rank`` for Lightning's distributed sampler: ember's world size and
        this worker's rank.
        """
        context = get_context()
        return {"num_replicas": context.world_size, "rank": context.world_rank}


class EmberFSDPStrategy(ModelParallelStrategy):
    """FSDP2 over all of ember's workers, on CPU (gloo) as on GPU (nccl).

    After the module's ``configure_model`` (if any) has run, every submodule that is not sharded
    yet is: each block of every outermost ``nn.ModuleList`` (a transformer's layers), then each
    child of the ``LightningModule`` that holds parameters, with ``fully_shard(mesh=...,
    **fully_shard_kwargs)``. Then every parameter must be a ``DTensor`` sharded over the data
    parallel mesh, or training stops with an error naming the ones that are not: a model is
    never reported as FSDP while some of its parameters are merely replicated.

    With ``save_distributed_checkpoint=True`` (default) each rank writes its own shard
    (``__{rank}_0.distcp``; rank 0 also ``.metadata`` and ``meta.pt``) into the folder it was
    given, which ember then uploads from that rank.
    """

    def __init__(self, *, save_distributed_checkpoint: bool = True,
                 state_dict_type: str | None = None, **fully_shard_kwargs: Any) -> None:
        from ember.train.lightning._config_builder import check_fsdp_options

        check_fsdp_options(fully_shard_kwargs)
        if state_dict_type is not None:
            check_fsdp_options({"state_dict_type": state_dict_type})
            save_distributed_checkpoint = state_dict_type == "sharded"
        super().__init__(save_distributed_checkpoint=save_distributed_checkpoint)
        self.fully_shard_kwargs = fully_shard_kwargs

    @property
    def root_device(self) -> torch.device:
        return _device()

    def setup_environment(self) -> None:
        world = get_context().world_size
        self._data_parallel_size, self._tensor_parallel_size = world, 1
        super().setup_environment()
        module = self.lightning_module
        assert module is not None
        user_hook: Callable[[], None] = module.configure_model
        mesh = self.device_mesh["data_parallel"]

        def configure_model_then_shard() -> None:
            user_hook()
            shard_unsharded(module, mesh, self.fully_shard_kwargs)

        # An instance attribute, so Lightning calls it even when the class defines no
        # configure_model; removed again in setup().
        module.configure_model = configure_model_then_shard  # type: ignore[method-assign]

    def setup(self, trainer: Any) -> None:
        module = self.lightning_module
        assert module is not None
        try:
            check_sharded(module, self.device_mesh["data_parallel"].size())
            super().setup(trainer)
        finally:
            module.__dict__.pop("configure_model", None)

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any,
                        storage_options: Any | None = None) -> None:
        if not self._save_distributed_checkpoint:
            super().save_checkpoint(checkpoint, filepath, storage_options)
            return
        if storage_options is not None:
            raise TypeError("EmberFSDPStrategy.save_checkpoint(storage_options=...) is not "
                            "supported: each rank writes its shard with "
                            "torch.distributed.checkpoint")
        import torch.distributed.checkpoint as dcp
        from lightning.fabric.utilities.load import _METADATA_FILENAME

        # Unlike ModelParallelStrategy, no broadcast of rank 0's path: each rank writes its own
        # shard into its own folder, so that folder holds exactly what this rank wrote.
        path = Path(filepath)
        if path.is_file():
            path.unlink()
        path.mkdir(parents=True, exist_ok=True)
        state = {"state_dict": checkpoint.pop("state_dict")}
        for index, optimizer_state in enumerate(checkpoint.pop("optimizer_states", [])):
            state[f"optimizer_{index}"] = optimizer_state
        dcp.save(state, storage_writer=dcp.FileSystemWriter(path))
        if self.global_rank == 0:
            torch.save(checkpoint, path / _METADATA_FILENAME)

    def load_checkpoint(self, checkpoint_path: Any,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """Load this rank's DCP shard (and ``meta.pt``) from its local copy of the checkpoint into
        the sharded model and optimizers; returns the rest of Lightning's checkpoint dict.
        """
        # Lightning's private loader (DCP shards plus meta.pt, optimizer states included); called
        # here without the broadcast of rank 0's path, since each rank has its own local copy.
        from lightning.fabric.strategies.model_parallel import _load_checkpoint

        module = self.lightning_module
        assert module is not None
        state = {"state_dict": self.model,
                 **{f"optimizer_{i}": opt for i, opt in enumerate(self.optimizers)}}
        return _load_checkpoint(path=Path(checkpoint_path), state=state,
                                strict=module.strict_loading, optimizer_states_from_list=True,
                                weights_only=weights_only)


def shard_units(root: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules to ``fully_shard``, innermost first: the blocks of every outermost
    ``ModuleList`` under each child of ``root`` that holds parameters, then that child.
    Raises if ``root`` holds parameters of its own (nothing would shard or sync them)."""
    own = [name for name, _ in root.named_parameters(recurse=False)]
    if own:
        raise ValueError(
            f"the LightningModule holds parameters itself ({', '.join(own)}), which FSDP2 "
            "cannot shard without sharding the LightningModule: move them into a submodule, "
            "or call fully_shard yourself in configure_model")
    units: list[torch.nn.Module] = []
    seen: set[int] = set()

    def blocks(module: torch.nn.Module) -> None:
        for child in module.children():
            if isinstance(child, torch.nn.ModuleList):
                for block in child:
                    if id(block) not in seen and any(True for _ in block.parameters()):
                        seen.add(id(block))
                        units.append(block)
            else:
                blocks(child)

    for child in root.children():
        if any(True for _ in child.parameters()) and id(child) not in seen:
            blocks(child)
            seen.add(id(child))
            units.append(child)
    return units


def shard_unsharded(root: torch.nn.Module, mesh: Any, kwargs: dict[str, Any]) -> None:
    """``fully_shard`` each of ``shard_units(root)`` that is not sharded yet (a module the user
    sharded in ``configure_model`` is left as it is, with everything under it)."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    done = {id(m) for m in root.modules() if isinstance(m, FSDPModule)}
    if done:
        return  # the user sharded the model in configure_model: their policy, checked later
    for unit in shard_units(root):
        fully_shard(unit, mesh=mesh, **kwargs)


def check_sharded(root: torch.nn.Module, world_size: int) -> None:
    """Raise unless every parameter of ``root`` is a DTensor sharded over the mesh."""
    from torch.distributed.tensor import DTensor, Shard

    plain = [name for name, p in root.named_parameters()
             if not (isinstance(p, DTensor) and any(isinstance(pl, Shard) for pl in p.placements))]
    if plain and world_size > 1:
        shown = ", ".join(plain[:5]) + (f" and {len(plain) - 5} more" if len(plain) > 5 else "")
        raise RuntimeError(
            f"strategy 'fsdp': {len(plain)} parameter(s) are not sharded ({shown}): they would "
            "be replicated and never synchronized. Shard every submodule with fully_shard in "
            "configure_model, or leave configure_model to build layers only and let ember "
            "shard them")
