"""The frozen configuration objects of ``ember.train`` (Ray Train 2.5 names and defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["CheckpointConfig", "DataConfig", "DatasetConfig", "FailureConfig", "RunConfig",
           "ScalingConfig"]


@dataclass(frozen=True)
class ScalingConfig:
    """How many workers train, and what each one holds.

    ``resources_per_worker`` may name ``"CPU"``, ``"GPU"`` and custom resources; a worker takes one
    CPU by default and one GPU when ``use_gpu`` is set. The workers are one gang, placed
    together or not at all; ``placement_strategy`` (Ray's) says how: ``PACK`` (few nodes, the
    default), ``SPREAD``, ``STRICT_PACK`` (one node) or ``STRICT_SPREAD`` (one worker per node)::

        ScalingConfig(num_workers=4, use_gpu=True, resources_per_worker={"CPU": 8})
    """

    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = None
    placement_strategy: str = "PACK"

    def __post_init__(self) -> None:
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) \
                or self.num_workers < 1:
            raise ValueError(f"ScalingConfig(num_workers={self.num_workers!r}) must be an "
                             "integer >= 1")
        for name, amount in (self.resources_per_worker or {}).items():
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                raise ValueError(f"resources_per_worker[{name!r}]={amount!r} must be a number "
                                 ">= 0")
        strategies = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
        if self.placement_strategy not in strategies:
            raise ValueError(f"ScalingConfig(placement_strategy={self.placement_strategy!r}) "
                             f"must be one of {', '.join(strategies)}")
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
    - ``verify_checksums``: restoring a checkpoint checks each downloaded file against the
      sha256 its manifest recorded (on by default), so a damaged shard is never loaded: a run
      then resumes from the committed checkpoint before it. Sizes are always checked; turn the
      sums off for checkpoints so large that hashing them on restore costs too much.
    """

    num_to_keep: int | None
    checkpoint_score_attribute: str | None
    checkpoint_score_order: Literal["max", "min"]
    keep_all_ranks: bool
    upload_from_workers: bool
    async_upload: bool
    verify_checksums: bool

    def __init__(
        self,
        num_to_keep: int | None = None,
        checkpoint_score_attribute: str | None = None,
        checkpoint_score_order: Literal["max", "min"] = "max",
        keep_all_ranks: bool | None = None,
        upload_from_workers: bool | None = None,
        *,
        async_upload: bool = False,
        verify_checksums: bool = True,
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
        object.__setattr__(self, "verify_checksums", bool(verify_checksums))

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
    """How a run meets failures.

    - ``max_failures``: how many times the worker group may restart from the latest committed
      checkpoint after a worker fails (``-1``: without end).
    - ``fail_fast`` (Ray's): ``True`` ends the run at the first failure (needs
      ``max_failures=0``); ``"raise"`` also makes ``fit()`` raise the workers' own error
      instead of a ``TrainingFailedError``.
    - ``storage_timeout_s``: how long each storage call (an upload, the commit, a listing)
      keeps retrying a transient error (connection refused or reset, timeout, throttling,
      HTTP 5xx) with exponential backoff before it fails; ``0``: no retries.
    - ``controller_failure_limit``, ``max_preemption_failures``,
      ``relax_collectives_on_preemption``, ``preemption_grace_s``: Ray's, accepted so that Ray
      programs run; ember's driver is not restarted by itself and sees no preemption notices,
      so they change nothing.
    """

    max_failures: int = 0
    fail_fast: bool | str = False
    controller_failure_limit: int = -1
    max_preemption_failures: int = -1
    relax_collectives_on_preemption: bool = False
    preemption_grace_s: float = 0.0
    storage_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("max_failures", "controller_failure_limit", "max_preemption_failures"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < -1:
                raise ValueError(f"FailureConfig({name}={value!r}) must be an integer >= 0, or "
                                 "-1 for no limit")
        fail_fast = self.fail_fast
        if not isinstance(fail_fast, bool) and not (isinstance(fail_fast, str)
                                                    and fail_fast.upper() == "RAISE"):
            raise ValueError(f"FailureConfig(fail_fast={fail_fast!r}) must be True, False or "
                             "'raise'")
        if fail_fast and self.max_failures != 0:
            raise ValueError(f"FailureConfig(fail_fast={fail_fast!r}) needs max_failures=0 (got "
                             f"{self.max_failures}): failing fast means no restarts")
        for name in ("preemption_grace_s", "storage_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"FailureConfig({name}={value!r}) must be a number of seconds "
                                 ">= 0")

    @property
    def raises_original_error(self) -> bool:
        """``fail_fast="raise"``: ``fit()`` raises the workers' error itself."""
        return isinstance(self.fail_fast, str)


@dataclass(frozen=True)
class DataConfig:
    """How ``TorchTrainer(datasets=...)`` hands datasets to the workers (Ray's ``DataConfig``).

    - ``datasets_to_split``: ``"all"`` (the default) or the names of the datasets that are
      split, each worker getting its own share (``streaming_split``); every other dataset
      reaches each worker whole.
    - ``execution_options``: Ray Data's ``ExecutionOptions`` (or a dict of them by dataset
      name); ember honours their ``preserve_order``.
    - ``enable_shard_locality``: accepted; on one machine every shard is local.

    ::

        TorchTrainer(loop, datasets={"train": train_ds, "val": val_ds},
                     dataset_config=DataConfig(datasets_to_split=["train"]), ...)
    """

    datasets_to_split: Literal["all"] | list[str] = "all"
    execution_options: Any = None
    enable_shard_locality: bool = True

    def __post_init__(self) -> None:
        to_split = self.datasets_to_split
        if isinstance(to_split, str):
            if to_split != "all":
                raise ValueError(f"DataConfig(datasets_to_split={to_split!r}) must be 'all' or "
                                 "a list of dataset names")
        elif not (isinstance(to_split, (list, tuple))
                  and all(isinstance(name, str) for name in to_split)):
            raise TypeError(f"DataConfig(datasets_to_split={to_split!r}) must be 'all' or a "
                            "list of dataset names")
        else:
            object.__setattr__(self, "datasets_to_split", list(to_split))

    def splits(self, name: str) -> bool:
        """Whether the dataset ``name`` is split among the workers."""
        return self.datasets_to_split == "all" or name in self.datasets_to_split

    def preserve_order(self, name: str) -> bool | None:
        """The ``preserve_order`` that the execution options ask of dataset ``name``, if any."""
        options = self.execution_options
        if isinstance(options, dict):
            options = options.get(name)
        value = getattr(options, "preserve_order", None)
        return None if value is None else bool(value)


@dataclass(frozen=True)
class DatasetConfig:
    """Ray 2.5's configuration of one dataset (``ray.air.config.DatasetConfig``), passed as
    ``TorchTrainer(dataset_config={"train": DatasetConfig(...), "val": ...})``; ``"*"`` sets
    the default of the others. Unset fields take Ray 2.5's defaults: ``"train"`` is fit and
    split, every other dataset neither; all are transformed.

    - ``fit``: the trainer's ``preprocessor`` is fit on this dataset (one dataset at most).
    - ``split``: each worker gets its share (else every worker gets it whole).
    - ``required``: the trainer must be given this dataset.
    - ``transform``: the preprocessor is applied to this dataset.
    - ``global_shuffle``: shuffle its rows (``random_shuffle()``) before splitting.
    - ``per_epoch_preprocessor``: a stateless preprocessor applied after the trainer's.
    - ``max_object_store_memory_fraction``, ``randomize_block_order``, ``use_stream_api``,
      ``stream_window_size``: accepted; ember always streams within its own memory budget, so
      they change nothing.
    """

    fit: bool | None = None
    split: bool | None = None
    required: bool | None = None
    transform: bool | None = None
    max_object_store_memory_fraction: float | None = None
    global_shuffle: bool | None = None
    randomize_block_order: bool | None = None
    per_epoch_preprocessor: Any = None
    use_stream_api: bool | None = None
    stream_window_size: float | None = None

    def fill_defaults(self, name: str) -> DatasetConfig:
        """This config with Ray 2.5's defaults for dataset ``name`` where a field is unset.

        >>> DatasetConfig().fill_defaults("train").split
        True
        """
        train = name == "train"
        defaults = {"fit": train, "split": train, "required": False, "transform": True,
                    "global_shuffle": False, "randomize_block_order": True}
        return DatasetConfig(**{
            f: getattr(self, f) if getattr(self, f) is not None else defaults.get(f)
            for f in self.__dataclass_fields__})

    def merge(self, other: DatasetConfig | None) -> DatasetConfig:
        """This config with the fields that ``other`` sets taking their place."""
        if other is None:
            return self
        return DatasetConfig(**{
            f: getattr(other, f) if getattr(other, f) is not None else getattr(self, f)
            for f in self.__dataclass_fields__})


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
