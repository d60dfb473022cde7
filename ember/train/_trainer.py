"""``TorchTrainer``: runs ``train_loop_per_worker`` on a gang of workers and commits checkpoints.

The driver side of a run: it starts the worker group, collects every rank's report, confirms
that each rank's checkpoint shard reached storage, writes the manifest last, applies retention,
and restarts the group from the latest committed checkpoint when a worker fails.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import posixpath
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ember.errors import StorageError, TrainingFailedError
from ember.train._checkpoint import Checkpoint
from ember.train._config import RunConfig, ScalingConfig
from ember.train._manifest import MANIFEST_NAME, Manifest, scan_run, write_manifest
from ember.train._observe import RunView
from ember.train._result import Result
from ember.train._retention import CheckpointRecord, RetentionPolicy
from ember.train._session import (
    DoneEvent,
    ReportEvent,
    TrainContext,
    next_event,
    start_session,
)
from ember.train._storage import FileEntry, Storage, checkpoint_dir_name, rank_dir_name
from ember.util._worker_group import WorkerGroup, _get_all

logger = logging.getLogger("ember.train")

TRAINER_FILE = "trainer.pkl"
# Rank 0's reports up to the latest commit, rewritten just before each manifest: a restored run's
# ``Result.metrics_history`` starts with them.
HISTORY_FILE = "metrics_history.json"
DEFAULT_STORAGE = "~/ember_results"


class _DoNotRetry(Exception):
    """A failure that a restart cannot fix (the loop misuses the API): ends the run."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class TorchTrainer:
    """Data-parallel PyTorch training on ``scaling_config.num_workers`` workers.

    ::

        def train_loop(config):
            model = ember.train.torch.prepare_model(torch.nn.Linear(4, 1))
            for epoch in range(config["epochs"]):
                ...
                ember.train.report({"loss": loss.item()})

        result = TorchTrainer(train_loop, train_loop_config={"epochs": 3},
                              scaling_config=ScalingConfig(num_workers=2)).fit()
    """

    def __init__(
        self,
        train_loop_per_worker: Callable[..., Any],
        *,
        train_loop_config: dict[str, Any] | None = None,
        scaling_config: ScalingConfig,
        run_config: RunConfig | None = None,
        datasets: dict[str, Any] | None = None,
        resume_from_checkpoint: Checkpoint | None = None,
    ) -> None:
        check_loop_and_scaling(train_loop_per_worker, scaling_config)
        if resume_from_checkpoint is not None and not isinstance(resume_from_checkpoint,
                                                                 Checkpoint):
            raise TypeError("resume_from_checkpoint must be a Checkpoint, got "
                            f"{type(resume_from_checkpoint).__name__}")
        run_config = complete_run_config(run_config, type(self).__name__)
        self.train_loop_per_worker = train_loop_per_worker
        self.train_loop_config = train_loop_config
        self.scaling_config = scaling_config
        self.run_config = run_config
        self.datasets = dict(datasets or {})
        self.resume_from_checkpoint = resume_from_checkpoint
        self._restoring = False

    @property
    def path(self) -> str:
        """The run's folder: ``{storage_path}/{name}``."""
        assert self.run_config.storage_path is not None and self.run_config.name is not None
        return _join(self.run_config.storage_path, self.run_config.name)

    @classmethod
    def can_restore(cls, path: str) -> bool:
        """Whether ``path`` holds a run that ``restore`` can resume."""
        return Storage(path).exists(TRAINER_FILE)

    @classmethod
    def restore(
        cls,
        path: str,
        *,
        train_loop_per_worker: Callable[..., Any] | None = None,
        train_loop_config: dict[str, Any] | None = None,
        datasets: dict[str, Any] | None = None,
    ) -> TorchTrainer:
        """A trainer that resumes the run in ``path`` (whose driver died) from its latest
        committed checkpoint. Arguments given here replace the saved ones."""
        import cloudpickle

        run = Storage(path)
        if not run.exists(TRAINER_FILE):
            raise FileNotFoundError(f"no run to restore at {path!r}: it has no {TRAINER_FILE} "
                                    "(pass the folder of a run, {storage_path}/{name})")
        state = cloudpickle.loads(run.read_bytes(TRAINER_FILE))
        parent, name = _split(run.url)
        trainer = cls(
            train_loop_per_worker or state["train_loop_per_worker"],
            train_loop_config=(train_loop_config if train_loop_config is not None
                               else state["train_loop_config"]),
            scaling_config=state["scaling_config"],
            run_config=replace(state["run_config"], name=name, storage_path=parent),
            datasets=datasets if datasets is not None else state["datasets"],
            resume_from_checkpoint=state["resume_from_checkpoint"],
        )
        trainer._restoring = True
        return trainer

    def fit(self) -> Result:
        """Train; returns the ``Result``. Raises ``TrainingFailedError`` (its ``result``
        attribute holds the ``Result``) when the run fails for good, and ``StorageError``
        before any training when the storage path cannot be written."""
        run = Storage(self.path)
        run.check_writable()
        committed, _ = scan_run(run)
        if not self._restoring:
            if committed:
                raise ValueError(
                    f"the run folder {self.path!r} already holds checkpoints of an earlier run: "
                    "continue it with TorchTrainer.restore(path), or pick another "
                    "RunConfig(name=...)")
            self._save_state(run)
        if self.resume_from_checkpoint is not None:
            self.resume_from_checkpoint.check_exists()
        result = _Run(self, run).run()
        if result.error is not None:
            error = TrainingFailedError(
                f"training failed: {type(result.error).__name__}: {result.error}")
            error.result = result  # type: ignore[attr-defined]
            raise error from result.error
        return result

    def _save_state(self, run: Storage) -> None:
        import cloudpickle

        state = {
            "train_loop_per_worker": self.train_loop_per_worker,
            "train_loop_config": self.train_loop_config,
            "scaling_config": self.scaling_config,
            "run_config": self.run_config,
            "datasets": self.datasets,
            "resume_from_checkpoint": self.resume_from_checkpoint,
        }
        run.write_bytes(cloudpickle.dumps(state), TRAINER_FILE)


def check_loop_and_scaling(train_loop_per_worker: Any, scaling_config: Any) -> None:
    """The checks every trainer that takes a training loop makes of it and its scaling."""
    if not callable(train_loop_per_worker):
        raise TypeError("train_loop_per_worker must be a function taking no argument or "
                        f"one (the config), got {type(train_loop_per_worker).__name__}")
    if not isinstance(scaling_config, ScalingConfig):
        raise TypeError(f"scaling_config must be a ScalingConfig, got "
                        f"{type(scaling_config).__name__}")


def restore_wrapped(path: str, datasets: dict[str, Any] | None,
                    replacements: dict[str, Any]) -> TorchTrainer:
    """``TorchTrainer.restore(path)`` for a trainer whose loop wraps the user's: each entry of
    ``replacements`` that is not None replaces that key of the saved loop config."""
    trainer = TorchTrainer.restore(path, datasets=datasets)
    wrapped = dict(trainer.train_loop_config or {})
    wrapped.update({key: value for key, value in replacements.items() if value is not None})
    trainer.train_loop_config = wrapped
    return trainer


def complete_run_config(run_config: RunConfig | None, trainer_name: str) -> RunConfig:
    """``run_config`` with the defaults filled in: the name ``{trainer_name}_{time}`` and the
    default storage path."""
    run_config = run_config or RunConfig()
    if run_config.name is None:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        run_config = replace(run_config, name=f"{trainer_name}_{stamp}")
    if run_config.storage_path is None:
        run_config = replace(run_config, storage_path=DEFAULT_STORAGE)
    return run_config


class _Run:
    """One ``fit()``: attempts, restarts, commits and retention."""

    def __init__(self, trainer: TorchTrainer, run: Storage) -> None:
        self.trainer = trainer
        self.run_storage = run
        cc = trainer.run_config.checkpoint_config
        self.checkpoint_config = cc
        self.policy = RetentionPolicy(cc.num_to_keep, cc.checkpoint_score_attribute,
                                      cc.checkpoint_score_order)
        self.committed, uncommitted = scan_run(run)
        self.next_index = max([*self.committed, *uncommitted, -1]) + 1
        self.history: list[dict[str, Any]] = []
        self.reports_at_commit: dict[int, int] = {}  # checkpoint index -> len(history) then
        if trainer._restoring and run.exists(HISTORY_FILE) and self.committed:
            saved = json.loads(run.read_bytes(HISTORY_FILE))
            # The file may be one commit ahead: the driver can die between it and the manifest.
            counts = {int(i): n for i, n in saved["reports_at_commit"].items()}
            self.history = saved["reports"][: counts.get(max(self.committed), 0)]
            self.reports_at_commit = counts
        self.committed_reports = len(self.history)
        self.last_metrics: dict[str, Any] | None = None
        # observe: the dashboard's view of this run
        self.view = RunView(trainer.run_config.name or "", type(trainer).__name__,
                            trainer.scaling_config.num_workers, run.url)

    def run(self) -> Result:
        failures = 0
        max_failures = self.trainer.run_config.failure_config.max_failures
        error: BaseException | None = None
        while True:
            self._clean_uncommitted()
            # Reports after the latest commit will be made again by the restarted loop.
            del self.history[self.committed_reports:]
            group = self._make_group()
            try:
                self._attempt(group)
                break
            except _DoNotRetry as exc:
                error = exc.cause
                break
            except Exception as exc:
                failures += 1
                if max_failures != -1 and failures > max_failures:
                    error = exc
                    break
                logger.warning("training failed (%s: %s); restarting the workers from the "
                               "latest committed checkpoint (failure %d of at most %s)",
                               type(exc).__name__, exc, failures,
                               "unlimited" if max_failures == -1 else max_failures)
            finally:
                group.shutdown()
        self._clean_uncommitted()
        self.view.finished(error)
        return self._result(error)

    def _make_group(self) -> WorkerGroup:
        sc = self.trainer.scaling_config
        return WorkerGroup(sc.num_workers, num_cpus_per_worker=sc.num_cpus_per_worker,
                           num_gpus_per_worker=sc.num_gpus_per_worker,
                           resources_per_worker=sc.custom_resources_per_worker,
                           placement_strategy=sc.placement_strategy)

    def _latest(self) -> Checkpoint | None:
        if self.committed:
            return Checkpoint(self.run_storage.child(
                checkpoint_dir_name(max(self.committed))).url)
        return self.trainer.resume_from_checkpoint

    def _attempt(self, group: WorkerGroup) -> None:
        trainer = self.trainer
        group.start()
        self.view.attempt_started(group.infos)
        group.setup_torch_distributed()
        n = len(group)
        start = self._latest()
        shards = _shard_datasets(trainer.datasets, n,
                                 n * trainer.scaling_config.num_cpus_per_worker)
        cc = self.checkpoint_config
        _get_all([
            group.execute_single_async(
                info.rank, start_session, trainer.train_loop_per_worker,
                trainer.train_loop_config,
                TrainContext(info.rank, n, info.local_rank, info.local_world_size,
                             info.node_rank, trainer.run_config.name or "",
                             self.run_storage.url, trainer.scaling_config.use_gpu),
                self.run_storage.url, self.next_index,
                start.for_rank(info.rank) if start is not None else None,
                {name: parts[info.rank] for name, parts in shards.items()},
                cc.keep_all_ranks, cc.upload_from_workers, cc.async_upload)
            for info in group.infos
        ])
        while True:
            events = _get_all(group.execute_async(next_event, self.next_index))
            done = [e for e in events if isinstance(e, DoneEvent)]
            if len(done) == n:
                return
            if done:
                raise _DoNotRetry(_mismatch_error(events))
            self._handle_reports(events)

    def _handle_reports(self, events: list[ReportEvent]) -> None:
        metrics = events[0].metrics
        self.last_metrics = metrics
        self.history.append(metrics)
        index = self.next_index
        self.view.reported(index, metrics)
        folder = checkpoint_dir_name(index)
        uploads: dict[int, list[FileEntry]] = {}
        for event in events:
            if event.inline is not None:  # gathered on the driver: it writes them itself
                uploads[event.rank] = _write_inline(self.run_storage, folder, event)
            elif event.files is not None:
                uploads[event.rank] = list(event.files)
        if not uploads:
            return
        for rank, files in uploads.items():
            found = self.run_storage.find(folder, rank_dir_name(rank))
            for entry in files:
                if found.get(entry.path) != entry.size:
                    raise StorageError(
                        f"rank {rank}'s upload of {entry.path!r} ({entry.size} bytes) to "
                        f"{self.run_storage.child(folder, rank_dir_name(rank)).url!r} is "
                        f"missing or incomplete (found {found.get(entry.path)} bytes)")
        manifest = Manifest(index=index, world_size=len(events), files=uploads, metrics=metrics)
        self.reports_at_commit[index] = len(self.history)
        self.run_storage.write_bytes(json.dumps({
            "reports": self.history, "reports_at_commit": self.reports_at_commit}).encode(),
            HISTORY_FILE)
        write_manifest(self.run_storage, manifest)  # last: this commits the checkpoint
        self.committed_reports = len(self.history)
        self.committed[index] = manifest
        self.next_index = index + 1
        self.view.committed(index, self.run_storage.child(folder).url,
                            sum(e.size for files in uploads.values() for e in files), metrics)
        for old in self.policy.to_delete(self._records()):
            self._delete(old)

    def _records(self) -> list[CheckpointRecord]:
        return [CheckpointRecord(i, m.metrics) for i, m in sorted(self.committed.items())]

    def _delete(self, index: int) -> None:
        folder = checkpoint_dir_name(index)
        self.run_storage.remove(folder, MANIFEST_NAME)  # first: the checkpoint stops existing
        self.run_storage.remove(folder)
        self.committed.pop(index, None)
        self.view.deleted(index)

    def _clean_uncommitted(self) -> None:
        _, uncommitted = scan_run(self.run_storage)
        # Never reuse an index: a killed worker's last writes cannot land in a new checkpoint.
        self.next_index = max([self.next_index - 1, *uncommitted]) + 1
        for index in uncommitted:
            logger.info("deleting checkpoint %d: it was never committed", index)
            self.run_storage.remove(checkpoint_dir_name(index))

    def _result(self, error: BaseException | None) -> Result:
        latest = self._latest() if self.committed else None
        best = [(Checkpoint(self.run_storage.child(checkpoint_dir_name(r.index)).url),
                 dict(r.metrics)) for r in self.policy.to_keep(self._records())]
        return Result(metrics=self.last_metrics, checkpoint=latest, path=self.run_storage.url,
                      error=error, best_checkpoints=best, metrics_history=list(self.history))


def _write_inline(run: Storage, folder: str, event: ReportEvent) -> list[FileEntry]:
    assert event.inline is not None
    return [run.write_buffer(data, rel, folder, rank_dir_name(event.rank))
            for rel, data in sorted(event.inline.items())]


def _mismatch_error(events: list[Any]) -> ValueError:
    finished = [f"rank {e.rank} after {e.count}" for e in events if isinstance(e, DoneEvent)]
    reporting = [f"rank {e.rank} (report #{e.count + 1})" for e in events
                 if isinstance(e, ReportEvent)]
    return ValueError(
        "ranks called ember.train.report() a different number of times: "
        f"{', '.join(finished)} report(s) finished, while {', '.join(reporting)} called it "
        "again. Every rank must call report() the same number of times (pass checkpoint=None "
        "on ranks with nothing to save)")


def _shard_datasets(datasets: dict[str, Any], n: int, worker_cpus: float
                    ) -> dict[str, list[Any]]:
    """Each dataset split in ``n`` shards: ``streaming_split`` where the dataset has it (an
    ``ember.data``/Ray dataset), else every n-th item of the sequence, starting at the rank."""
    out: dict[str, list[Any]] = {}
    for name, dataset in datasets.items():
        if hasattr(dataset, "streaming_split"):
            out[name] = _split_beside_workers(dataset, n, worker_cpus)
        else:
            items = list(dataset)
            out[name] = [items[rank::n] for rank in range(n)]
    return out


def _split_beside_workers(dataset: Any, n: int, worker_cpus: float) -> list[Any]:
    from ember.data import DataContext, Dataset

    if not isinstance(dataset, Dataset):  # a Ray dataset: Ray Train's own rules apply
        return list(dataset.streaming_split(n, equal=True))
    # The split's pipeline runs while the workers hold their CPUs: keep it off them.
    context = DataContext.get_current()
    DataContext.set_current(replace(context, excluded_cpus=context.excluded_cpus + worker_cpus))
    try:
        return list(dataset.streaming_split(n, equal=True))
    finally:
        DataContext.set_current(context)


def _join(base: str, name: str) -> str:
    if "://" in base:
        return base.rstrip("/") + "/" + name
    return os.path.join(os.path.abspath(os.path.expanduser(base)), name)


def _split(url: str) -> tuple[str, str]:
    if "://" in url:
        parent, name = url.rstrip("/").rsplit("/", 1)
        return parent, name
    return os.path.dirname(url.rstrip("/")), posixpath.basename(url.rstrip("/"))
