"""What runs inside each training worker: ``report``, ``get_context``, ``get_checkpoint``...

The training loop runs in a thread of the worker actor. ``report`` uploads this rank's checkpoint
shard straight to storage, hands an event to the driver and waits until the driver has committed
the checkpoint: the driver fetches events with ``next_event`` and, once it has committed (or
found nothing to commit), says so with ``acknowledge``, which lets the loop go on. With
``async_upload`` the shard is copied aside and uploaded by a thread of its own; ``report``
returns at once, ``next_event`` hands the event over only once that upload is done, and the
next ``report`` waits for the previous acknowledgement.

Every temporary file of the worker (checkpoint staging, downloads, the loop's own
``tempfile`` use) goes into the run's temporary folder, which the driver deletes once the
worker has stopped, however it stopped.
"""

from __future__ import annotations

import getpass
import importlib
import inspect
import json
import os
import queue
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ember.train._checkpoint import Checkpoint
from ember.train._run_folder import checkpoint_dir_name, rank_dir_name
from ember.train._storage import Storage


@dataclass(frozen=True)
class TrainContext:
    """Who this worker is: ``ember.train.get_context().get_world_rank()``."""

    world_rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    experiment_name: str
    storage_path: str
    use_gpu: bool = False

    def get_world_rank(self) -> int:
        """This worker's rank among all workers (0 .. world size - 1)."""
        return self.world_rank

    def get_world_size(self) -> int:
        """The number of workers in the run."""
        return self.world_size

    def get_local_rank(self) -> int:
        """This worker's rank among the workers on its node."""
        return self.local_rank

    def get_local_world_size(self) -> int:
        """The number of workers on this worker's node."""
        return self.local_world_size

    def get_node_rank(self) -> int:
        """The rank of this worker's node among the run's nodes."""
        return self.node_rank

    def get_experiment_name(self) -> str:
        """The run's name (``RunConfig.name``)."""
        return self.experiment_name

    def get_storage_path(self) -> str:
        """Where the run's checkpoints go (``RunConfig.storage_path``)."""
        return self.storage_path

    def get_trial_name(self) -> str:
        """The run's name: ember runs one trial per ``fit()``, so it is ``RunConfig.name``."""
        return self.experiment_name

    def get_trial_id(self) -> str:
        """A short id of this run, the same on every rank and after a restart (Ray's trial ids
        look alike: ``<hex>_00000``)."""
        import hashlib

        return hashlib.sha1(self.storage_path.encode()).hexdigest()[:8] + "_00000"

    def get_trial_dir(self) -> str:
        """A local folder of this run for the loop's own files (logs, TensorBoard): the run's
        folder when storage is local, else ``~/ember_results/<name>`` on this machine. ember
        uploads only checkpoints: files written here stay where they are."""
        run = Storage(self.storage_path)
        folder = run.root if run.is_local else os.path.join(
            os.path.expanduser("~/ember_results"), self.experiment_name or self.get_trial_id())
        os.makedirs(folder, exist_ok=True)
        return folder


@dataclass(frozen=True)
class ReportEvent:
    """One ``report`` call as the driver receives it."""

    rank: int
    count: int  # how many reports this rank made before this one
    metrics: dict[str, Any]
    files: list[Any] | None  # FileEntry list of an uploaded shard, or None
    # The shard's files, when gathered on the driver: each a buffer (bytes-like) that travels
    # out of band (the object store), not inside the pickled event.
    inline: dict[str, Any] | None = None


@dataclass(frozen=True)
class DoneEvent:
    rank: int
    count: int  # how many reports this rank made in all


class _Upload:
    """One rank's shard, copied to a staging folder and uploaded by a thread of its own."""

    def __init__(self, run: Storage, checkpoint: Checkpoint, *parts: str) -> None:
        self.staging = tempfile.mkdtemp(prefix="ember-upload-")
        with checkpoint.as_directory() as local:  # copied now: the loop may change it next
            shutil.copytree(local, self.staging, dirs_exist_ok=True)
        self.files: list[Any] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(run, parts),
                                       name="ember-train-upload", daemon=True)
        self.thread.start()

    def _run(self, run: Storage, parts: tuple[str, ...]) -> None:
        try:
            self.files = run.upload_directory(self.staging, *parts)
        except BaseException as exc:  # handed to next_event, which raises it to the driver
            self.error = exc
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)

    def wait(self) -> list[Any]:
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.files is not None
        return self.files


class _Session:
    def __init__(self, context: TrainContext, run: Storage, next_index: int,
                 checkpoint: Checkpoint | None, dataset_shards: dict[str, Any],
                 keep_all_ranks: bool, upload_from_workers: bool,
                 async_upload: bool = False) -> None:
        self.context = context
        self.run = run
        self.next_index = next_index
        self.checkpoint = checkpoint
        self.dataset_shards = dataset_shards
        self.keep_all_ranks = keep_all_ranks
        self.upload_from_workers = upload_from_workers
        self.async_upload = async_upload
        self.uploads: dict[int, _Upload] = {}  # report count -> its upload in flight
        self.awaiting_commit = False  # an async report returned before its commit
        self.count = 0
        self.events: queue.Queue[Any] = queue.Queue()
        self.resume = threading.Semaphore(0)
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def report(self, metrics: Mapping[str, Any], checkpoint: Checkpoint | None) -> None:
        clean = check_metrics(metrics)
        files: list[Any] | None = None
        inline: dict[str, Any] | None = None
        rank = self.context.world_rank
        if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
            raise TypeError(f"report(checkpoint=...) takes a Checkpoint, got "
                            f"{type(checkpoint).__name__}; use Checkpoint.from_directory(path)")
        self.wait_for_commit()  # the previous report's: it sets next_index
        if checkpoint is not None and (self.keep_all_ranks or rank == 0) and self.async_upload:
            self.uploads[self.count] = _Upload(self.run, checkpoint,
                                               checkpoint_dir_name(self.next_index),
                                               rank_dir_name(rank))
        elif checkpoint is not None and (self.keep_all_ranks or rank == 0):
            with checkpoint.as_directory() as local:
                if self.upload_from_workers:
                    files = self.run.upload_directory(
                        local, checkpoint_dir_name(self.next_index), rank_dir_name(rank))
                else:
                    inline = _read_folder(local)
        self.events.put(ReportEvent(rank, self.count, clean, files, inline))
        self.count += 1
        if self.async_upload:
            self.awaiting_commit = True
        else:
            self.resume.acquire()

    def wait_for_commit(self) -> None:
        if self.awaiting_commit:
            self.resume.acquire()
            self.awaiting_commit = False

    def run_loop(self, fn: Callable[..., Any], config: dict[str, Any] | None) -> None:
        try:
            takes_config = len(inspect.signature(fn).parameters) > 0
            fn(config or {}) if takes_config else fn()
        except BaseException as exc:
            self.events.put(exc)
        else:
            self.wait_for_commit()
            self.events.put(DoneEvent(self.context.world_rank, self.count))

    def next_event(self) -> Any:
        event = self.events.get()
        if isinstance(event, BaseException):
            raise event
        upload = (self.uploads.pop(event.count, None) if isinstance(event, ReportEvent)
                  else None)
        if upload is not None:  # confirmed here, before the driver can commit
            event = replace(event, files=upload.wait())
        return event

    def acknowledge(self, next_index: int) -> None:
        """The driver has handled the last report (committed its checkpoint, if any): the
        next checkpoint gets ``next_index``, and the loop may go on."""
        self.next_index = next_index
        self.resume.release()


_session: _Session | None = None


def current_session(what: str) -> _Session:
    """This worker's session (also for ``ember.train.huggingface``); ``what``, the function
    asked for, is named in the error raised outside a training loop."""
    if _session is None:
        raise RuntimeError(f"ember.train.{what}() works only inside train_loop_per_worker, "
                           "run by a TorchTrainer")
    return _session


def start_session(fn: Callable[..., Any], config: dict[str, Any] | None, context: TrainContext,
                  run: Storage, next_index: int, checkpoint: Checkpoint | None,
                  dataset_shards: dict[str, Any], keep_all_ranks: bool,
                  upload_from_workers: bool, async_upload: bool = False,
                  temp_dir: str | None = None, held_cpus: float = 0.0) -> None:
    """(In a worker) start the training loop in a thread of its own.

    ``temp_dir`` becomes this process's temporary folder (``tempfile`` and ``TMPDIR``), so that
    whatever the worker leaves there goes when the driver deletes it. ``held_cpus``: the CPUs
    the run's workers hold; a dataset that reaches the worker whole (not split) runs its
    pipeline here, planned without them, else it would wait forever for CPUs the workers hold.
    """
    global _session
    if held_cpus and any(type(shard).__module__.startswith("ember.data")
                         for shard in dataset_shards.values()):
        from ember.data import DataContext

        DataContext.update(excluded_cpus=DataContext.get_current().excluded_cpus + held_cpus)
    if temp_dir is not None:
        _keep_compile_cache()
        os.makedirs(temp_dir, mode=0o700, exist_ok=True)
        os.environ["TMPDIR"] = temp_dir
        tempfile.tempdir = temp_dir
    # As Ray's workers do: a loop may reach ``ember.train.torch`` as an attribute
    # (``from ember import train; train.torch.prepare_model(...)``) without importing it.
    importlib.import_module("ember.train.torch")
    _session = _Session(context, run, next_index, checkpoint, dataset_shards,
                        keep_all_ranks, upload_from_workers, async_upload)
    thread = threading.Thread(target=_session.run_loop, args=(fn, config),
                              name="ember-train-loop", daemon=True)
    _session.thread = thread
    thread.start()


def _keep_compile_cache() -> None:
    """Pin torch.compile's cache (Inductor keeps it under the temporary folder by default) where
    it was, so that it outlives the run's temporary folder and later runs reuse it."""
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return
    try:
        user = getpass.getuser()
    except Exception:  # no name for this uid (some containers): Inductor would fail the same
        return
    safe = re.sub(r'[\\/:*?"<>|]', "_", user)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(tempfile.gettempdir(),
                                                         f"torchinductor_{safe}")


def next_event() -> Any:
    """(In a worker) the loop's next ``ReportEvent`` or ``DoneEvent``; raises its error."""
    return current_session("next_event").next_event()


def acknowledge(next_index: int) -> None:
    """(In a worker) the driver has handled the last report; the loop may go on."""
    current_session("acknowledge").acknowledge(next_index)


def report(metrics: Mapping[str, Any], *, checkpoint: Checkpoint | None = None) -> None:
    """Report metrics (and optionally this rank's checkpoint shard) for this step.

    Every rank must call it the same number of times. Rank 0's metrics are the run's. When a
    checkpoint is passed, this worker uploads its files to
    ``{storage_path}/{name}/checkpoint_{index:06d}/rank_{rank}/``; the call returns once every
    rank's upload is confirmed and the checkpoint committed (with
    ``CheckpointConfig(async_upload=True)``: at once, the upload running on in the background).
    """
    current_session("report").report(metrics, checkpoint)


def get_context() -> TrainContext:
    """This worker's rank, world size, local rank and node rank."""
    return current_session("get_context").context


def get_checkpoint() -> Checkpoint | None:
    """The checkpoint to resume from (the latest committed one, or ``resume_from_checkpoint``),
    bound to this rank: its ``as_directory()`` holds this rank's files. ``None`` at a fresh
    start."""
    return current_session("get_checkpoint").checkpoint


def get_dataset_shard(name: str) -> Any:
    """This rank's shard of ``TorchTrainer(datasets={name: ...})``."""
    session = current_session("get_dataset_shard")
    if name not in session.dataset_shards:
        known = ", ".join(map(repr, sorted(session.dataset_shards))) or "none"
        raise KeyError(f"no dataset named {name!r} was passed to the trainer (datasets: {known})")
    return session.dataset_shards[name]


def check_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Metrics as plain JSON values (numpy and torch scalars become numbers); raises
    ``TypeError`` naming the first key whose value cannot be stored."""
    if not isinstance(metrics, Mapping):
        raise TypeError(f"report() takes a dict of metrics, got {type(metrics).__name__}")
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise TypeError(f"metric names must be strings, got {key!r}")
        try:
            plain = _plain(value)
            json.dumps(plain, allow_nan=True)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"metric {key!r} cannot be serialized ({type(value).__name__}: {exc}); report "
                "numbers, strings, bools, None, or lists/dicts of them (call .item() on a "
                "tensor)") from None
        out[key] = plain
    return out


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k) if isinstance(k, str) else _bad_key(k): _plain(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    item = getattr(value, "item", None)  # numpy and torch scalars, one-element tensors
    if callable(item) and getattr(value, "ndim", 0) == 0:
        result = item()
        if isinstance(result, (bool, int, float)):
            return result
    raise TypeError(f"{type(value).__name__} is not a plain value")


def _bad_key(key: Any) -> str:
    raise TypeError(f"dict key {key!r} is not a string")


def _read_folder(local: str) -> dict[str, Any]:
    """Every file under ``local`` as an out-of-band buffer: pickled with protocol 5, each is
    written once into the object store instead of being copied into the pickled message."""
    import os
    import pickle

    out: dict[str, Any] = {}
    for folder, _dirs, names in os.walk(local):
        for name in names:
            full = os.path.join(folder, name)
            data = bytearray(os.path.getsize(full))
            with open(full, "rb") as f:
                got = f.readinto(data)
            del data[got:]  # a file that shrank while read
            rel = os.path.relpath(full, local).replace(os.sep, "/")
            out[rel] = pickle.PickleBuffer(data)
    return out
