"""What ember.data hands on to the tasks and actors it starts (Ray's ``ray_remote_args``,
``num_cpus``, ``memory``, ``concurrency``) and the filesystem it reads and writes through
(Ray's ``filesystem=``): checked here, once, when the dataset is built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Ray's ray_remote_args that ember.data passes on to the tasks or actors of an operator; the
# others (num_returns, names, placement groups) belong to the executor.
TASK_REMOTE_ARGS = frozenset({"max_retries", "retry_exceptions", "memory", "scheduling_strategy",
                              "runtime_env"})
ACTOR_REMOTE_ARGS = frozenset({"max_restarts", "max_task_retries", "max_concurrency", "memory",
                               "scheduling_strategy", "runtime_env"})
OWN_ARGS = ("num_cpus", "num_gpus", "resources")


def remote_args(given: dict[str, Any] | None, *, actors: bool, what: str
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split Ray's ``ray_remote_args`` of ``what`` into the resources the executor plans
    with (``num_cpus``, ``num_gpus``, ``resources``) and the options its tasks (or, with
    ``actors``, its pool's actors) are started with; refuses the rest, naming what is known.

    >>> remote_args({"num_cpus": 2, "memory": 10**9}, actors=False, what="read_parquet")
    ({'num_cpus': 2}, {'memory': 1000000000})
    """
    import ember

    given = dict(given or {})
    allowed = ACTOR_REMOTE_ARGS if actors else TASK_REMOTE_ARGS
    unknown = sorted(set(given) - allowed - set(OWN_ARGS))
    if unknown:
        kind = "an actor pool's actors" if actors else "tasks"
        raise TypeError(f"{what}: {', '.join(map(repr, unknown))} cannot be passed on to "
                        f"{kind}; known: {', '.join(sorted(allowed | set(OWN_ARGS)))}")
    # The core checks the values (types, ranges, a runtime_env's fields) as .options() does.
    ember.remote(_Checked if actors else _checked).options(**given)
    own = {k: given.pop(k) for k in OWN_ARGS if k in given}
    return own, given


def _checked() -> None:
    """A function to check task options on."""


class _Checked:
    """A class to check actor options on."""


def as_filesystem(filesystem: Any) -> Any:
    """Ray's ``filesystem=``: a ``pyarrow.fs.FileSystem`` (wrapped for fsspec's interface) or
    an fsspec filesystem (``s3fs.S3FileSystem(...)``), as given; ``None`` stays ``None``."""
    if filesystem is None:
        return None
    import fsspec
    import pyarrow.fs as pafs

    if isinstance(filesystem, fsspec.AbstractFileSystem):
        return filesystem
    if isinstance(filesystem, pafs.FileSystem):
        from fsspec.implementations.arrow import ArrowFSWrapper

        return ArrowFSWrapper(filesystem)
    raise TypeError(f"filesystem={filesystem!r} must be a pyarrow.fs.FileSystem or an fsspec "
                    "filesystem (e.g. s3fs.S3FileSystem(...))")


def fs_and_path(path: str, filesystem: Any = None) -> tuple[Any, str]:
    """The filesystem of ``path`` (an fsspec URL or a local path) and the path within it; with
    ``filesystem`` (``as_filesystem``'s), that one, and ``path`` without its ``scheme://``."""
    import fsspec

    if filesystem is None:
        fs, stripped = fsspec.core.url_to_fs(path)
        return fs, str(stripped)
    return filesystem, path.split("://", 1)[1] if "://" in path else path


@dataclass(frozen=True)
class IOOptions:
    """What Ray's ``read_*`` and ``write_*`` take besides the paths: the ``filesystem`` and
    how the tasks that read or write run (``num_cpus`` and ``memory`` each, at most
    ``concurrency`` at once, more ``ray_remote_args``)."""

    filesystem: Any = None
    ray_remote_args: dict[str, Any] | None = None
    num_cpus: float | None = None
    memory: float | None = None
    concurrency: int | None = None

    def task_args(self, what: str) -> tuple[float | None, dict[str, Any] | None]:
        """``(num_cpus, the other task options)`` of the read tasks, checked."""
        args = dict(self.ray_remote_args or {})
        for key, value in (("num_cpus", self.num_cpus), ("memory", self.memory)):
            if value is not None:
                args[key] = value
        own, options = remote_args(args, actors=False, what=what)
        if own.get("num_gpus") or own.get("resources"):
            raise TypeError(f"{what}: read tasks take num_cpus and memory, not GPUs or custom "
                            "resources; ask for those in the map_batches that needs them")
        if self.concurrency is not None and (isinstance(self.concurrency, bool) or not
                                             isinstance(self.concurrency, int)
                                             or self.concurrency < 1):
            raise ValueError(f"{what}: concurrency={self.concurrency!r} must be an int >= 1")
        return own.get("num_cpus"), options or None
