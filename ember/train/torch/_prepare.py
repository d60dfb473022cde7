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


def prepare_data_loader(data_loader: DataLoader[Any], add_dist_sampler: bool = True,
                        move_to_device: bool = True, auto_transfer: bool = True, *,
                        shuffle: bool | None = None) -> DataLoader[Any]:
    """A copy of ``data_loader`` whose ``DistributedSampler`` gives each rank its own share
    (Ray's signature).

    ``shuffle`` defaults to whether the loader shuffled (had a ``RandomSampler``). Call
    ``loader.sampler.set_epoch(epoch)`` each epoch for a fresh order. ``add_dist_sampler=False``
    keeps the loader's own sampler (each rank then sees all the data). With
    ``move_to_device``, batches arrive on ``get_device()`` (``auto_transfer``: copied without
    blocking). After ``enable_reproducibility(seed)``, the loader's worker processes and its
    shuffling are seeded from ``seed``.
    """
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

    distributed = add_dist_sampler and dist.is_initialized() and dist.get_world_size() > 1
    if not distributed and _seed is None:
        loader = data_loader
    else:
        kwargs: dict[str, Any] = dict(
            batch_size=data_loader.batch_size, num_workers=data_loader.num_workers,
            collate_fn=data_loader.collate_fn, pin_memory=data_loader.pin_memory,
            drop_last=data_loader.drop_last, timeout=data_loader.timeout,
            worker_init_fn=data_loader.worker_init_fn, generator=data_loader.generator,
            multiprocessing_context=data_loader.multiprocessing_context,
            persistent_workers=data_loader.persistent_workers)
        if data_loader.num_workers > 0:
            kwargs["prefetch_factor"] = data_loader.prefetch_factor
        if distributed:
            if shuffle is None:
                shuffle = isinstance(data_loader.sampler, RandomSampler)
            kwargs["sampler"] = DistributedSampler(
                data_loader.dataset, num_replicas=dist.get_world_size(), rank=dist.get_rank(),
                shuffle=shuffle, seed=_seed or 0)
        else:
            kwargs["sampler"] = data_loader.sampler
        if _seed is not None:
            kwargs["worker_init_fn"] = _SeededWorkerInit(_seed, data_loader.worker_init_fn)
            generator = torch.Generator()
            generator.manual_seed(_seed)
            kwargs["generator"] = generator
        loader = DataLoader(data_loader.dataset, **kwargs)
    device = get_device()
    if move_to_device and device.type != "cpu":
        return _DeviceLoader(loader, device, non_blocking=auto_transfer)  # type: ignore[return-value]
    return loader


# The seed that ``enable_reproducibility`` set in this worker (None: not called).
_seed: int | None = None


def enable_reproducibility(seed: int = 0) -> None:
    """Limit the sources of nondeterminism in this worker's training (Ray's function).

    Seeds PyTorch, Python's ``random`` and NumPy with ``seed``; makes PyTorch use deterministic
    algorithms (``torch.use_deterministic_algorithms(True)``, so an operation without a
    deterministic version raises) and turns cuDNN benchmarking off; and has
    ``prepare_data_loader`` seed its loader's shuffling and worker processes. Call it at the top
    of the training loop, before building the model and the data loaders. Runs can still differ
    across hardware and library versions.
    """
    global _seed
    import random

    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"enable_reproducibility(seed={seed!r}) takes an int")
    _seed = seed
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:  # numpy is optional for torch
        pass
    else:
        np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    # cuBLAS is deterministic only with a fixed workspace (PyTorch's reproducibility notes).
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"


class _SeededWorkerInit:
    """A data loader worker's init: seeds ``random`` and NumPy from torch's per-worker seed
    (which the loader's seeded generator fixes), then runs the loader's own init."""

    def __init__(self, seed: int, then: Any) -> None:
        self.seed = seed
        self.then = then

    def __call__(self, worker_id: int) -> None:
        import random

        worker_seed = torch.initial_seed() % 2**32
        random.seed(worker_seed)
        try:
            import numpy as np
        except ImportError:
            pass
        else:
            np.random.seed(worker_seed)
        if self.then is not None:
            self.then(worker_id)


class _DeviceLoader:
    """Iterates a loader and moves each batch to a device."""

    def __init__(self, loader: DataLoader[Any], device: torch.device, *,
                 non_blocking: bool = True) -> None:
        self.loader = loader
        self.device = device
        self.non_blocking = non_blocking
        self.sampler = loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        for batch in self.loader:
            yield _to(batch, self.device, self.non_blocking)


def _to(batch: Any, device: torch.device, non_blocking: bool = True) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: _to(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(v, device, non_blocking) for v in batch)
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
