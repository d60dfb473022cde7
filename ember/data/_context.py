"""``DataContext``: the frozen configuration every execution reads once, at its start."""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass
from typing import Any

# The data executor keeps its blocks in flight within half of the object store, leaving room
# for user objects and for the consumer's own batches. Without a store size to go by, it
# assumes the local backend's default store of 30% of RAM.
_STORE_FRACTION_OF_RAM = 0.3
_BUDGET_FRACTION_OF_STORE = 0.5


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a small machine
        return 8 * 1024**3


def default_memory_budget(object_store_bytes: float | None = None) -> int:
    store = object_store_bytes or _physical_memory() * _STORE_FRACTION_OF_RAM
    return max(1, int(store * _BUDGET_FRACTION_OF_STORE))


@dataclass(frozen=True)
class DataContext:
    """Settings of ``ember.data`` executions.

    Frozen: change it with ``DataContext.set_current(replace(DataContext.get_current(), ...))``
    or the shortcut ``DataContext.update(memory_budget_bytes=...)``; an execution reads the
    current context once when it starts.

    - ``memory_budget_bytes``: bytes of blocks in flight (queued between operators, held by
      running tasks, or estimated as their outputs) that the executor aims to stay within;
      ``None`` (the default) means half the object store of the running backend
      (``ember.cluster_resources()["object_store_memory"]``), see ``resolved_budget``.
    - ``target_min_block_bytes`` / ``max_parallelism``: how sources split their input.
    - ``preserve_order``: yield blocks in plan order instead of as they finish.
    - ``excluded_cpus``: CPUs that other work holds for the whole execution, which the executor
      must not plan with (``TorchTrainer`` sets it to its workers' CPUs while it splits a
      dataset for them, as Ray Train excludes its resources from Ray Data). When nothing is
      left, tasks run one at a time without a CPU of their own instead of waiting forever.
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
    """

    memory_budget_bytes: int | None = None
    target_min_block_bytes: int = 1024 * 1024
    max_parallelism: int = 200
    preserve_order: bool = False
    excluded_cpus: float = 0.0
    actor_tasks_in_flight: int = 2
    actor_block_retries: int = 3
    enable_progress_bars: bool = True
    read_local_files_in_process: bool = True

    def __post_init__(self) -> None:
        if self.memory_budget_bytes is not None and self.memory_budget_bytes <= 0:
            raise ValueError(
                f"memory_budget_bytes={self.memory_budget_bytes} must be > 0 (bytes of blocks "
                "the executor may keep in flight)"
            )
        if self.excluded_cpus < 0:
            raise ValueError(f"excluded_cpus={self.excluded_cpus} must be >= 0")
        if self.actor_tasks_in_flight < 1:
            raise ValueError(f"actor_tasks_in_flight={self.actor_tasks_in_flight} must be >= 1")
        if isinstance(self.actor_block_retries, bool) or not isinstance(
                self.actor_block_retries, int) or self.actor_block_retries < 0:
            raise ValueError(f"actor_block_retries={self.actor_block_retries!r} must be an int "
                             ">= 0")
        if self.max_parallelism < 1:
            raise ValueError(f"max_parallelism={self.max_parallelism} must be >= 1")

    def resolved_budget(self) -> int:
        """The memory budget an execution starting now uses, in bytes."""
        if self.memory_budget_bytes is not None:
            return self.memory_budget_bytes
        import ember

        return default_memory_budget(ember.cluster_resources().get("object_store_memory"))

    @staticmethod
    def get_current() -> DataContext:
        """The process-wide ``DataContext`` that new executions read (made with defaults on first
        use).

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


_lock = threading.Lock()
_current: DataContext | None = None
