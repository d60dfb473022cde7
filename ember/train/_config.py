"""The frozen configuration objects of ``ember.train`` (Ray Train 2.5 names and defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["CheckpointConfig", "FailureConfig", "RunConfig", "ScalingConfig"]


@dataclass(frozen=True)
class ScalingConfig:
    """How many workers train, and what each one holds.

    ``resources_per_worker`` may name ``"CPU"``, ``"GPU"`` and custom resources; a worker takes one
    CPU by default and one GPU when ``use_gpu`` is set::

        ScalingConfig(num_workers=4, use_gpu=True, resources_per_worker={"CPU": 8})
    """

    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) \
                or self.num_workers < 1:
            raise ValueError(f"ScalingConfig(num_workers={self.num_workers!r}) must be an "
                             "integer >= 1")
        for name, amount in (self.resources_per_worker or {}).items():
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                raise ValueError(f"resources_per_worker[{name!r}]={amount!r} must be a number "
                                 ">= 0")
        if not self.use_gpu and (self.resources_per_worker or {}).get("GPU", 0) > 0:
            raise ValueError("resources_per_worker asks for a GPU but use_gpu=False; pass "
                             "use_gpu=True")

    @property
    def num_cpus_per_worker(self) -> float:
        """The CPUs each worker holds: ``resources_per_worker["CPU"]``, else 1.

        >>> ScalingConfig(num_workers=2, resources_per_worker={"CPU": 4}).num_cpus_per_worker
        4.0
        """
        return float((self.resources_per_worker or {}).get("CPU", 1))

    @property
    def num_gpus_per_worker(self) -> float:
        """The GPUs each worker holds: ``resources_per_worker["GPU"]``, else 1 with ``use_gpu`` (0
        without).

        >>> ScalingConfig(num_workers=2, use_gpu=True).num_gpus_per_worker
        1.0
        """
        default = 1 if self.use_gpu else 0
        return float((self.resources_per_worker or {}).get("GPU", default))

    @property
    def custom_resources_per_worker(self) -> dict[str, float]:
        """The custom resources each worker holds (``resources_per_worker`` without CPU and GPU)."""
        return {k: float(v) for k, v in (self.resources_per_worker or {}).items()
                if k not in ("CPU", "GPU")}


@dataclass(frozen=True, init=False)
class CheckpointConfig:
    """Which checkpoints to keep and how they reach storage.

    - ``num_to_keep``: keep at most this many committed checkpoints (``None``: all). With a
      ``checkpoint_score_attribute`` the best ones by that metric are kept, else the newest. The
      newest checkpoint is always kept as well, so a restart can resume from it.
    - ``keep_all_ranks`` (Ray 2.5: ``_checkpoint_keep_all_ranks``): keep every rank's checkpoint
      shard (default), or only rank 0's.
    - ``upload_from_workers`` (Ray 2.5: ``_checkpoint_upload_from_workers``): each worker uploads
      its own shard straight to storage (default); ``False`` gathers the shards on the driver,
      which writes them (Ray 2.5's default, the measured baseline: every byte goes through the
      object store and one process). The files travel out of band, so a rank holds about twice
      its shard's size while it hands it over.
    - ``async_upload``: ``report`` returns as soon as this rank's shard is copied aside, and the
      upload runs while the loop trains on; the driver still commits the checkpoint (writes its
      manifest) only once every rank's upload is confirmed. The next ``report`` waits for the
      previous one to be committed. Needs ``upload_from_workers``.
    """

    num_to_keep: int | None
    checkpoint_score_attribute: str | None
    checkpoint_score_order: Literal["max", "min"]
    keep_all_ranks: bool
    upload_from_workers: bool
    async_upload: bool

    def __init__(
        self,
        num_to_keep: int | None = None,
        checkpoint_score_attribute: str | None = None,
        checkpoint_score_order: Literal["max", "min"] = "max",
        keep_all_ranks: bool | None = None,
        upload_from_workers: bool | None = None,
        *,
        async_upload: bool = False,
        _checkpoint_keep_all_ranks: bool | None = None,
        _checkpoint_upload_from_workers: bool | None = None,
    ) -> None:
        keep = _pick("keep_all_ranks", keep_all_ranks, _checkpoint_keep_all_ranks, True)
        upload = _pick("upload_from_workers", upload_from_workers,
                       _checkpoint_upload_from_workers, True)
        if num_to_keep is not None and (isinstance(num_to_keep, bool)
                                        or not isinstance(num_to_keep, int) or num_to_keep < 1):
            raise ValueError(f"CheckpointConfig(num_to_keep={num_to_keep!r}) must be None (keep "
                             "all) or an integer >= 1")
        if checkpoint_score_order not in ("max", "min"):
            raise ValueError(f"checkpoint_score_order={checkpoint_score_order!r} must be 'max' "
                             "or 'min'")
        if async_upload and not upload:
            raise ValueError("CheckpointConfig(async_upload=True) needs upload_from_workers=True "
                             "(the workers upload in the background; a driver-side gather "
                             "cannot)")
        object.__setattr__(self, "num_to_keep", num_to_keep)
        object.__setattr__(self, "checkpoint_score_attribute", checkpoint_score_attribute)
        object.__setattr__(self, "checkpoint_score_order", checkpoint_score_order)
        object.__setattr__(self, "keep_all_ranks", keep)
        object.__setattr__(self, "upload_from_workers", upload)
        object.__setattr__(self, "async_upload", bool(async_upload))

    @property
    def _checkpoint_keep_all_ranks(self) -> bool:
        return self.keep_all_ranks

    @property
    def _checkpoint_upload_from_workers(self) -> bool:
        return self.upload_from_workers


def _pick(name: str, value: bool | None, ray_value: bool | None, default: bool) -> bool:
    if value is not None and ray_value is not None and value != ray_value:
        raise ValueError(f"CheckpointConfig got {name}={value} and _checkpoint_{name}="
                         f"{ray_value}; pass only one of them")
    chosen = value if value is not None else ray_value
    return default if chosen is None else bool(chosen)


@dataclass(frozen=True)
class FailureConfig:
    """How many times the worker group may restart after a failure (``-1``: without end)."""

    max_failures: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.max_failures, bool) or not isinstance(self.max_failures, int) \
                or self.max_failures < -1:
            raise ValueError(f"FailureConfig(max_failures={self.max_failures!r}) must be an "
                             "integer >= 0, or -1 for no limit")


@dataclass(frozen=True)
class RunConfig:
    """Where a run keeps its checkpoints and results: ``{storage_path}/{name}/``.

    ``storage_path`` is a local folder or an fsspec URL (``s3://bucket/prefix``); it defaults to
    ``~/ember_results``, and ``name`` to ``TorchTrainer_<date>_<time>``.
    """

    name: str | None = None
    storage_path: str | None = None
    checkpoint_config: CheckpointConfig = field(default_factory=CheckpointConfig)
    failure_config: FailureConfig = field(default_factory=FailureConfig)

    def __post_init__(self) -> None:
        if self.name is not None and (not self.name or "/" in self.name):
            raise ValueError(f"RunConfig(name={self.name!r}) must be a non-empty name without "
                             "'/'")
        if self.checkpoint_config is None:
            object.__setattr__(self, "checkpoint_config", CheckpointConfig())
        if self.failure_config is None:
            object.__setattr__(self, "failure_config", FailureConfig())
