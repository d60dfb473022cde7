"""Model, data loader and device helpers for the training loop, and DCP sharded state."""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as dist

from ember.train._checkpoint import Checkpoint
from ember.train._session import get_context

if TYPE_CHECKING:
    from torch.utils.data import DataLoader


def get_device() -> torch.device:
    """This worker's device: ``cuda:0`` (its own GPU) when the run uses GPUs, else the CPU."""
    if get_context().use_gpu and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def prepare_model(
    model: torch.nn.Module,
    *,
    move_to_device: bool = True,
    parallel_strategy: Literal["ddp", "fsdp"] | None = "ddp",
    parallel_strategy_kwargs: dict[str, Any] | None = None,
) -> torch.nn.Module:
    """Make ``model`` data-parallel across the workers.

    ``"ddp"`` wraps it in ``DistributedDataParallel``; ``"fsdp"`` shards its parameters with
    FSDP2 (``fully_shard`` on each child module that holds parameters, then on the root) over a
    one-dimensional device mesh of all workers; ``None`` only moves it. With one worker the
    model is returned unwrapped.
    """
    kwargs = dict(parallel_strategy_kwargs or {})
    device = get_device()
    if move_to_device:
        model = model.to(device)
    if parallel_strategy is None or not dist.is_initialized() or dist.get_world_size() == 1:
        return model
    if parallel_strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":
            kwargs.setdefault("device_ids", [device.index])
        return DistributedDataParallel(model, **kwargs)
    if parallel_strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = kwargs.pop("mesh", None) or init_device_mesh(device.type,
                                                            (dist.get_world_size(),))
        for child in model.children():
            if any(True for _ in child.parameters()):
                fully_shard(child, mesh=mesh, **kwargs)
        fully_shard(model, mesh=mesh, **kwargs)
        return model
    raise ValueError(f"parallel_strategy={parallel_strategy!r} must be 'ddp', 'fsdp' or None")


def prepare_data_loader(data_loader: DataLoader[Any], *, move_to_device: bool = True,
                        shuffle: bool | None = None) -> DataLoader[Any]:
    """A copy of ``data_loader`` whose ``DistributedSampler`` gives each rank its own share.

    ``shuffle`` defaults to whether the loader shuffled (had a ``RandomSampler``). Call
    ``loader.sampler.set_epoch(epoch)`` each epoch for a fresh order. With ``move_to_device``,
    batches arrive on ``get_device()``.
    """
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

    if not dist.is_initialized() or dist.get_world_size() == 1:
        loader = data_loader
    else:
        if shuffle is None:
            shuffle = isinstance(data_loader.sampler, RandomSampler)
        sampler: DistributedSampler[Any] = DistributedSampler(data_loader.dataset, num_replicas=dist.get_world_size(),
                                     rank=dist.get_rank(), shuffle=shuffle)
        loader = DataLoader(
            data_loader.dataset, batch_size=data_loader.batch_size, sampler=sampler,
            num_workers=data_loader.num_workers, collate_fn=data_loader.collate_fn,
            pin_memory=data_loader.pin_memory, drop_last=data_loader.drop_last,
        )
    device = get_device()
    if move_to_device and device.type != "cpu":
        return _DeviceLoader(loader, device)  # type: ignore[return-value]
    return loader


class _DeviceLoader:
    """Iterates a loader and moves each batch to a device."""

    def __init__(self, loader: DataLoader[Any], device: torch.device) -> None:
        self.loader = loader
        self.device = device
        self.sampler = loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        for batch in self.loader:
            yield _to(batch, self.device)


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(v, device) for v in batch)
    return batch


def save_sharded(state_dict: dict[str, Any], directory: str) -> None:
    """Save a (sharded) state dict with ``torch.distributed.checkpoint`` into ``directory``.

    Each rank writes its own shard (``__{rank}_0.distcp``; rank 0 also ``.metadata``) into its
    own local folder; report that folder as this rank's checkpoint.
    """
    import torch.distributed.checkpoint as dcp

    dcp.save(state_dict, storage_writer=dcp.FileSystemWriter(directory))


def load_sharded(state_dict: dict[str, Any], checkpoint: Checkpoint) -> None:
    """Load a DCP checkpoint saved with ``save_sharded`` into ``state_dict`` in place.

    The saved shards are merged from every rank's folder, so this works with any number of
    workers (DCP reshards): 2 saved, 1 or 3 loading.
    """
    import torch.distributed.checkpoint as dcp

    whole = checkpoint.all_ranks()
    with tempfile.TemporaryDirectory(prefix="ember-dcp-") as merged, \
            whole.as_directory() as folder:
        for rank_folder in sorted(os.listdir(folder)):
            source = os.path.join(folder, rank_folder)
            if not rank_folder.startswith("rank_") or not os.path.isdir(source):
                continue
            for name in os.listdir(source):
                target = os.path.join(merged, name)
                if not os.path.exists(target):
                    os.symlink(os.path.join(source, name), target)
        dcp.load(state_dict, storage_reader=dcp.FileSystemReader(merged))
