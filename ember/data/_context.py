"""``DataContext``: the settings of ``ember.data`` executions, changed the way Ray programs change
``ray.data.DataContext`` (``ctx.enable_progress_bars = False``); each execution takes a snapshot
of it when it starts."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ember.data._execution_options import ExecutionOptions

logger = logging.getLogger("ember.data")

# The data executor keeps its blocks in flight within half of the object store, leaving room
# for user objects and for the consumer's own batches. Without a store size to go by, it
# assumes the local backend's default store of 30% of RAM.
_STORE_FRACTION_OF_RAM = 0.3
_BUDGET_FRACTION_OF_STORE = 0.5

_AWS_RETRIED = ["AWS Error INTERNAL_FAILURE", "AWS Error NETWORK_CONNECTION",
                "AWS Error SLOW_DOWN", "AWS Error UNKNOWN (HTTP status 503)"]

# Ray's DataContext fields (Ray 2.60's dataclass fields, and 2.5's that are gone since) that
# ember accepts, with Ray's defaults (None where Ray's default is one of its own config objects),
# and that have no effect in ember: setting one to another value logs so, once per name.
_RAY_ONLY: dict[str, Any] = {
    "streaming_read_buffer_size": 32 * 1024 * 1024,
    "enable_pandas_block": True,
    "actor_prefetcher_enabled": False,
    "autoscaling_config": None,
    "use_push_based_shuffle": False,
    "pipeline_push_based_shuffle_reduce_tasks": True,
    "default_hash_shuffle_parallelism": 200,
    "shuffle_compression": "zstd",
    "hash_shuffle_reduce_batch_size": 16,
    "hash_shuffle_reduce_get_timeout_s": 1800.0,
    "shuffle_input_batch_bytes": 1024**3,
    "max_hash_shuffle_aggregators": None,
    "min_hash_shuffle_aggregator_wait_time_in_s": 300,
    "hash_shuffle_aggregator_health_warning_interval_s": 30,
    "max_hash_shuffle_finalization_batch_size": None,
    "join_operator_actor_num_cpus_override": None,
    "hash_shuffle_operator_actor_num_cpus_override": None,
    "hash_aggregate_operator_actor_num_cpus_override": None,
    "use_disk_based_hash_shuffle": False,
    "gpu_shuffle_num_actors": None,
    "gpu_shuffle_rmm_pool_size": None,
    "gpu_shuffle_spill_memory_limit": "auto",
    "gpu_shuffle_setup_timeout_s": 120.0,
    "scheduling_strategy": "SPREAD",
    "scheduling_strategy_large_args": "DEFAULT",
    "large_args_threshold": 50 * 1024 * 1024,
    "use_polars": False,
    "use_polars_sort": False,
    "use_legacy_dataset_ids": False,
    "decoding_size_estimation": True,
    "min_parallelism": 200,
    "read_op_min_num_blocks": 200,
    "use_datasource_v2": True,
    "enable_tensor_extension_casting": True,
    "arrow_fixed_shape_tensor_format": None,
    "use_arrow_tensor_v2": True,
    "enable_fallback_to_arrow_object_ext_type": None,
    "enable_auto_log_stats": False,
    "verbose_stats_logs": False,
    "accurate_map_phase_timing": False,
    "per_stage_map_timing": False,
    "trace_allocations": False,
    "use_ray_tqdm": True,
    "enable_operator_progress_bars": True,
    "enable_progress_bar_name_truncation": True,
    "enable_rich_progress_bars": False,
    "enable_get_object_locations_for_metrics": False,
    "write_file_retry_on_errors": tuple(_AWS_RETRIED),
    "warn_on_driver_memory_usage_bytes": 2 * 1024**3,
    "actor_task_retry_on_errors": False,
    "actor_init_retry_on_errors": False,
    "actor_init_max_retries": 3,
    "max_consecutive_actor_init_deaths": 0,
    "retried_map_errors": False,
    "max_map_retries": 0,
    "op_resource_reservation_enabled": True,
    "op_resource_reservation_ratio": 0.5,
    "output_backpressure_guard_release_interval_s": None,
    "max_errored_blocks": 0,
    "execution_no_progress_timeout_s": 1800,
    "log_internal_stack_trace": False,
    "raise_original_map_exception": False,
    "print_on_execution_start": True,
    "s3_try_create_dir": False,
    "wait_for_min_actors_s": -1,
    "max_tasks_in_flight_per_actor": None,
    "retried_io_errors": [*_AWS_RETRIED, "AWS Error SERVICE_UNAVAILABLE"],
    "lance_config": None,
    "iceberg_config": None,
    "delta_config": None,
    "enable_per_node_metrics": False,
    "enable_stats_summary_collection": False,
    "override_object_store_memory_limit_fraction": None,
    "memory_usage_poll_interval_s": 1,
    "dataset_logger_id": None,
    "issue_detectors_config": None,
    "isolate_read_workers": False,
    "downstream_capacity_backpressure_ratio": 2.0,
    "enable_dynamic_output_queue_size_backpressure": False,
    "enable_lineage_reconstruction_resource_accounting": True,
    "enforce_schemas": False,
    "pandas_block_ignore_metadata": False,
    "enable_arrow_backed_pandas_conversion": True,
    "batch_to_block_arrow_format": True,
    "custom_execution_callback_classes": [],
    "default_map_logical_memory_enabled": False,
    "object_store_reservation_overshoot_ratio": None,
    "object_store_memory_pressure_fraction": None,
    # Ray 2.5's, gone since:
    "block_splitting_enabled": True,
    "optimize_fuse_stages": True,
    "optimize_fuse_read_stages": True,
    "optimize_fuse_shuffle_stages": True,
    "optimize_reorder_stages": True,
    "new_execution_backend": True,
    "use_streaming_executor": True,
    "eager_free": False,
    "optimizer_enabled": True,
    "use_legacy_iter_batches": False,
}
_logged_ignored: set[str] = set()


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a small machine
        return 8 * 1024**3


def default_memory_budget(object_store_bytes: float | None = None) -> int:
    store = object_store_bytes or _physical_memory() * _STORE_FRACTION_OF_RAM
    return max(1, int(store * _BUDGET_FRACTION_OF_STORE))


def _check(name: str, value: Any) -> None:
    """Raise ValueError when ``value`` is not allowed for ember's field ``name``."""
    if name == "memory_budget_bytes" and value is not None and value <= 0:
        raise ValueError(f"memory_budget_bytes={value} must be > 0 (bytes of blocks the "
                         "executor may keep in flight)")
    if name == "excluded_cpus" and value < 0:
        raise ValueError(f"excluded_cpus={value} must be >= 0")
    if name == "actor_tasks_in_flight" and value < 1:
        raise ValueError(f"actor_tasks_in_flight={value} must be >= 1")
    if name == "actor_block_retries" and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"actor_block_retries={value!r} must be an int >= 0")
    if name == "max_parallelism" and value < 1:
        raise ValueError(f"max_parallelism={value} must be >= 1")
    if name in ("target_min_block_bytes", "target_max_block_size") and value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name}={value!r} must be an int >= 1 (bytes)")


@dataclass(init=False)
class DataContext:
    """Settings of ``ember.data`` executions, shaped like Ray's ``ray.data.DataContext``.

    Change it as Ray programs do, by assigning to the process-wide context
    (``ctx = DataContext.get_current(); ctx.enable_progress_bars = False``,
    ``ctx.execution_options.preserve_order = True``), or with ``DataContext.update(...)`` /
    ``set_current(dataclasses.replace(...))``. A bad value fails at its assignment. Each
    execution takes a copy of the current context when it starts: a change made while a
    dataset is being iterated applies to the next execution, never to the running one.

    - ``memory_budget_bytes``: bytes of blocks in flight (queued between operators, held by
      running tasks, or estimated as their outputs) that the executor aims to stay within;
      ``None`` (the default) means half the object store of the running backend
      (``ember.cluster_resources()["object_store_memory"]``), see ``resolved_budget``.
      ``execution_options.resource_limits.object_store_memory`` caps it.
    - ``target_min_block_bytes`` (Ray's ``target_min_block_size``) / ``max_parallelism``: how
      sources split their input; ``target_max_block_size`` (Ray's, 128 MiB): reads of a known
      size are split into blocks of at most this many bytes.
    - ``preserve_order`` (also ``execution_options.preserve_order``: one setting): yield blocks
      in plan order instead of as they finish.
    - ``excluded_cpus`` (also ``execution_options.exclude_resources.cpu``: one setting): CPUs
      that other work holds for the whole execution, which the executor must not plan with
      (``TorchTrainer`` sets it to its workers' CPUs while it splits a dataset for them, as
      Ray Train excludes its resources from Ray Data). When nothing is left, tasks run one at a
      time without a CPU of their own instead of waiting forever.
    - ``execution_options``: an ``ExecutionOptions``; ``resource_limits.cpu`` caps the CPUs
      the executor plans with (``cpu=1``: one read or map task at a time), ``resource_limits.
      gpu`` the GPUs of the tasks it runs at once, ``verbose_progress=False`` shows only the
      output operator's progress bar.
    - ``actor_tasks_in_flight``: calls queued per pool actor (2 hides the hand-off latency).
    - ``actor_block_retries``: how many times a block whose pool actor died under it (its
      process killed, out of memory, a crash in native code) goes to another actor before the
      execution fails with ``ActorDiedError``; the pool starts a new actor in the dead one's
      place. An exception raised by the UDF is never retried.
    - ``enable_progress_bars``: one bar per operator on stderr (only when stderr is a TTY).
    - ``read_local_files_in_process``: a dataset that only reads local Parquet, CSV or JSON
      files (no transform after the read) and is iterated (``iter_batches``, ``iter_rows``,
      ``iter_torch_batches``, ``to_pandas``...) is read by threads of the iterating process,
      where pyarrow decodes off the GIL, instead of by tasks whose blocks would be copied
      through the object store to it. Same rows, same memory budget, half the copying;
      ``False`` reads them in tasks as any other dataset.

    Ray's other fields (``use_push_based_shuffle``, ``max_errored_blocks``, ``scheduling_
    strategy``, Ray 2.5's ``use_streaming_executor``...) can be read (Ray's defaults) and
    assigned, and have no effect in ember: setting one to another value logs that once on the
    ``ember.data`` logger. Any other name is an ``AttributeError``.

    >>> ctx = ember.data.DataContext.get_current()
    >>> ctx.execution_options.preserve_order = True
    >>> ctx.preserve_order
    True
    >>> ctx.preserve_order = False
    """

    memory_budget_bytes: int | None = None
    target_min_block_bytes: int = 1024 * 1024
    target_max_block_size: int | None = 128 * 1024 * 1024
    max_parallelism: int = 200
    actor_tasks_in_flight: int = 2
    actor_block_retries: int = 3
    enable_progress_bars: bool = True
    read_local_files_in_process: bool = True
    execution_options: ExecutionOptions = field(default_factory=ExecutionOptions)
    _ray_settings: dict[str, Any] = field(default_factory=dict, repr=False)

    def __init__(self, *, memory_budget_bytes: int | None = None,
                 target_min_block_bytes: int = 1024 * 1024,
                 target_max_block_size: int | None = 128 * 1024 * 1024,
                 max_parallelism: int = 200, actor_tasks_in_flight: int = 2,
                 actor_block_retries: int = 3, enable_progress_bars: bool = True,
                 read_local_files_in_process: bool = True,
                 execution_options: ExecutionOptions | None = None,
                 preserve_order: bool | None = None, excluded_cpus: float | None = None,
                 _ray_settings: dict[str, Any] | None = None, **ray_fields: Any) -> None:
        # Copies: a context made by dataclasses.replace() shares nothing with the original.
        self.execution_options = (ExecutionOptions() if execution_options is None
                                  else copy.deepcopy(execution_options))
        object.__setattr__(self, "_ray_settings", copy.deepcopy(_ray_settings or {}))
        self.memory_budget_bytes = memory_budget_bytes
        self.target_min_block_bytes = target_min_block_bytes
        self.target_max_block_size = target_max_block_size
        self.max_parallelism = max_parallelism
        self.actor_tasks_in_flight = actor_tasks_in_flight
        self.actor_block_retries = actor_block_retries
        self.enable_progress_bars = enable_progress_bars
        self.read_local_files_in_process = read_local_files_in_process
        if preserve_order is not None:
            self.preserve_order = preserve_order
        if excluded_cpus is not None:
            self.excluded_cpus = excluded_cpus
        for name, value in ray_fields.items():
            setattr(self, name, value)

    # -- attributes -----------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FIELD_NAMES or name in _ALIASES:
            _check(name, value)
            if name == "execution_options" and not isinstance(value, ExecutionOptions):
                raise TypeError("DataContext.execution_options takes an ExecutionOptions, got "
                                f"{type(value).__name__}")
            object.__setattr__(self, name, value)
        elif name in _RAY_ONLY:
            if value != _RAY_ONLY[name] and name not in _logged_ignored:
                _logged_ignored.add(name)
                logger.warning("DataContext.%s=%r has no effect in ember (a setting of Ray "
                               "Data's own executor); it is accepted and ignored", name, value)
            self._ray_settings[name] = value
        else:
            raise _unknown_field(name)

    def __getattr__(self, name: str) -> Any:  # only names not found the usual way
        if name.startswith("__"):  # copy, pickle and friends probing for hooks
            raise AttributeError(name)
        settings = self.__dict__.get("_ray_settings")
        if settings is None or name not in _RAY_ONLY:
            raise _unknown_field(name)
        if name not in settings:
            settings[name] = copy.copy(_RAY_ONLY[name])  # a list default mutated in place stays
        return settings[name]

    if TYPE_CHECKING:  # what type checkers see: fields (dataclasses.replace takes them)
        preserve_order: bool = False
        excluded_cpus: float = 0.0
        target_min_block_size: int = 1024 * 1024
    else:  # one setting under two names: these read and write execution_options and
        # target_min_block_bytes
        @property
        def preserve_order(self) -> bool:
            """Yield blocks in plan order (``execution_options.preserve_order``)."""
            return self.execution_options.preserve_order

        @preserve_order.setter
        def preserve_order(self, value: bool) -> None:
            self.execution_options.preserve_order = bool(value)

        @property
        def excluded_cpus(self) -> float:
            """CPUs held by other work (``execution_options.exclude_resources.cpu``)."""
            return float(self.execution_options.exclude_resources.cpu or 0.0)

        @excluded_cpus.setter
        def excluded_cpus(self, value: float) -> None:
            self.execution_options.exclude_resources.cpu = value

        @property
        def target_min_block_size(self) -> int:
            """Ray's name of ``target_min_block_bytes``."""
            return self.target_min_block_bytes

        @target_min_block_size.setter
        def target_min_block_size(self, value: int) -> None:
            self.target_min_block_bytes = value

    # -- reading ---------------------------------------------------------------------------------
    def copy(self) -> DataContext:
        """An independent copy: what an execution reads from while it runs."""
        return copy.deepcopy(self)

    def resolved_budget(self) -> int:
        """The memory budget an execution starting now uses, in bytes: ``memory_budget_bytes``
        (by default half the object store), at most ``execution_options.resource_limits.
        object_store_memory``."""
        budget = self.memory_budget_bytes
        if budget is None:
            import ember

            budget = default_memory_budget(
                ember.cluster_resources().get("object_store_memory"))
        limit = self.execution_options.object_store_limit()
        return budget if limit is None else max(1, min(budget, int(limit)))

    @staticmethod
    def get_current() -> DataContext:
        """The process-wide ``DataContext`` that new executions read (made with defaults on first
        use); change it by assigning to its attributes.

        >>> ember.data.DataContext.get_current().max_parallelism >= 1
        True
        """
        with _lock:
            global _current
            if _current is None:
                _current = DataContext()
            return _current

    @staticmethod
    def set_current(context: DataContext) -> None:
        """Make ``context`` the process-wide ``DataContext`` (``update`` changes some fields)."""
        if not isinstance(context, DataContext):
            raise TypeError(f"set_current takes a DataContext, got {type(context).__name__}")
        global _current
        with _lock:
            _current = context

    @staticmethod
    def update(**changes: Any) -> DataContext:
        """Replace some fields of the current context; returns the new one."""
        new = dataclasses.replace(DataContext.get_current(), **changes)
        DataContext.set_current(new)
        return new


DatasetContext = DataContext  # Ray 2.5's name

_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(DataContext))
_ALIASES = frozenset({"preserve_order", "excluded_cpus", "target_min_block_size"})


def _unknown_field(name: str) -> AttributeError:
    known = sorted(_FIELD_NAMES - {"_ray_settings"} | _ALIASES | set(_RAY_ONLY))
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return AttributeError(f"DataContext has no attribute {name!r} (neither ember's nor Ray "
                          f"Data's){hint}")


_lock = threading.Lock()
_current: DataContext | None = None
