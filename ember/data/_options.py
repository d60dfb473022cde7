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


# Ray's ``arrow_open_stream_args``: what ``pyarrow.fs.FileSystem.open_input_stream`` (and
# ``open_output_stream``) take besides the path.
OPEN_STREAM_ARGS = ("buffer_size", "compression")


def open_stream_args(given: dict[str, Any] | None, what: str) -> dict[str, Any]:
    """Ray's ``arrow_open_stream_args`` of ``what``, checked: ``compression`` (a codec name
    such as ``"gzip"``; by default inferred from the file's extension, as pyarrow does) and
    ``buffer_size``."""
    args = dict(given or {})
    unknown = sorted(set(args) - set(OPEN_STREAM_ARGS))
    if unknown:
        raise TypeError(f"{what}: arrow_open_stream_args {', '.join(map(repr, unknown))} are "
                        f"not known; known: {', '.join(OPEN_STREAM_ARGS)}")
    codec = args.get("compression")
    if codec is not None:
        import pyarrow as pa

        try:
            known = isinstance(codec, str) and pa.Codec.is_available(codec)
        except ValueError:  # a name pyarrow does not know
            known = False
        if not known:
            raise ValueError(f"{what}: arrow_open_stream_args compression={codec!r} is not a "
                             "codec pyarrow has (e.g. 'gzip', 'bz2', 'zstd', 'lz4', 'brotli')")
    size = args.get("buffer_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"{what}: arrow_open_stream_args buffer_size={size!r} must be an "
                         "int >= 1")
    return args


def format_args(given: dict[str, Any], accepted: Any, what: str, target: str) -> dict[str, Any]:
    """``given`` keyword arguments of ``what`` that go on to ``target`` (a function, e.g.
    ``pyarrow.parquet.write_table``), checked by name against ``accepted`` (the names it
    takes), so a misspelt one fails here rather than deep inside a task."""
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise TypeError(f"{what}{'' if what.endswith(('fn', ')')) else '()'} got unexpected "
                        f"keyword argument(s) "
                        f"{', '.join(map(repr, unknown))}; the arguments passed on to {target} "
                        f"are: {', '.join(sorted(accepted))}")
    return dict(given)


def parameters(fn: Any, *skip: str) -> list[str]:
    """The names of ``fn``'s keyword parameters (from ``inspect.signature``), less ``skip``."""
    import inspect

    return [name for name, p in inspect.signature(fn).parameters.items()
            if name not in skip and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


@dataclass(frozen=True)
class FileOptions:
    """Which files a ``read_*`` takes and what it adds to their rows (Ray's names):
    ``file_extensions`` (``None``: every file; a given list applies to every file, the
    reader's default one only to those found in folders), ``ignore_missing_paths``,
    ``include_paths`` (a ``path`` column), ``partitioning`` (columns from the folders of a
    file's path), ``partition_filter`` (drops files by those values before any read) and
    ``arrow_open_stream_args``."""

    file_extensions: tuple[str, ...] | None = None
    extensions_given: bool = False
    ignore_missing_paths: bool = False
    include_paths: bool = False
    partitioning: Any = None
    partition_filter: Any = None
    open_args: dict[str, Any] | None = None

    @classmethod
    def of(cls, what: str, file_extensions: Any, default: Any, *,
           include_paths: bool = False, ignore_missing_paths: bool = False,
           partitioning: Any = None, partition_filter: Any = None,
           arrow_open_stream_args: dict[str, Any] | None = None) -> FileOptions:
        """Checked options of ``what``; ``default``: its default ``file_extensions`` (the
        very object its signature has, so that a list the user passes is told from it)."""
        from ember.data.datasource import Partitioning, PathPartitionFilter

        given = file_extensions is not default
        extensions = file_extensions
        if extensions is not None:
            if isinstance(extensions, str) or not all(isinstance(e, str) for e in extensions):
                raise TypeError(f"{what}: file_extensions={extensions!r} must be a list of "
                                "extensions such as ['csv', 'csv.gz'] (or None: every file)")
            extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}"
                               for e in extensions)
        if partitioning is not None and not isinstance(partitioning, Partitioning):
            raise TypeError(f"{what}: partitioning={partitioning!r} must be an "
                            "ember.data.datasource.Partitioning (or None)")
        if partition_filter is not None and not isinstance(partition_filter,
                                                           PathPartitionFilter):
            raise TypeError(f"{what}: partition_filter={partition_filter!r} must be an "
                            "ember.data.datasource.PathPartitionFilter, e.g. "
                            "PathPartitionFilter.of(lambda d: d['year'] == '2024')")
        return cls(extensions, given, bool(ignore_missing_paths), bool(include_paths),
                   partitioning, partition_filter,
                   open_stream_args(arrow_open_stream_args, what) or None)
