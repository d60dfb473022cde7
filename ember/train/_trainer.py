"""``TorchTrainer``: runs ``train_loop_per_worker`` on a gang of workers and commits checkpoints.

The driver side of a run: the attempt loop. It starts the worker group, collects every rank's
report and hands it to the run folder (``_run_folder.RunFolder``), which commits the checkpoint;
it applies retention, and restarts the group from the latest committed checkpoint when a worker
fails, once the old group is confirmed stopped.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ember.errors import CorruptCheckpointError, TrainingFailedError
from ember.train._checkpoint import PREPROCESSOR_KEY, Checkpoint
from ember.train._config_classes import DataConfig, DatasetConfig, RunConfig, ScalingConfig
from ember.train._observe import RunView
from ember.train._result import Result
from ember.train._retention import CheckpointRecord, RetentionPolicy
from ember.train._retry import RetryPolicy
from ember.train._run_folder import (
    TRAINER_FILE,
    RunFolder,
    checkpoint_dir_name,
    join_url,
    rank_dir_name,
    split_url,
)
from ember.train._session import (
    DoneEvent,
    ReportEvent,
    TrainContext,
    acknowledge,
    next_event,
    start_session,
)
from ember.train._storage import FileEntry, Storage
from ember.util import WorkerGroup

logger = logging.getLogger("ember.train")

DEFAULT_STORAGE = "~/ember_results"
TEMP_PREFIX = "ember-train-"  # + the driver's pid: a run's temporary folder


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

    ``datasets`` are split among the workers (``get_dataset_shard(name)``), all of them or the
    ones ``dataset_config=DataConfig(datasets_to_split=[...])`` names. Ray 2.5's form,
    ``dataset_config={"val": DatasetConfig(split=True)}``, is accepted too (with its defaults:
    only ``"train"`` is split).

    ``preprocessor`` (Ray 2.5's, an ``ember.data.preprocessors.Preprocessor``) is fit on the
    ``"train"`` dataset (unless it is fit already) when ``fit()`` starts, applied to every
    dataset before they are split, and saved with every checkpoint that rank 0 reports:
    ``result.checkpoint.get_preprocessor()`` gives it back.
    """

    def __init__(
        self,
        train_loop_per_worker: Callable[..., Any],
        *,
        train_loop_config: dict[str, Any] | None = None,
        scaling_config: ScalingConfig,
        run_config: RunConfig | None = None,
        datasets: dict[str, Any] | None = None,
        dataset_config: DataConfig | dict[str, DatasetConfig] | None = None,
        resume_from_checkpoint: Checkpoint | None = None,
        preprocessor: Any = None,
    ) -> None:
        check_loop_and_scaling(train_loop_per_worker, scaling_config)
        check_preprocessor(preprocessor)
        if resume_from_checkpoint is not None and not isinstance(resume_from_checkpoint,
                                                                 Checkpoint):
            raise TypeError("resume_from_checkpoint must be a Checkpoint, got "
                            f"{type(resume_from_checkpoint).__name__}")
        datasets = dict(datasets or {})
        self._dataset_config_arg = dataset_config  # as given: saved for restore
        self._dataset_configs = dataset_configs_of(dataset_config, datasets)
        dataset_config = check_dataset_config(
            _data_config_of(dataset_config, self._dataset_configs), datasets)
        run_config = complete_run_config(run_config, type(self).__name__)
        self.train_loop_per_worker = train_loop_per_worker
        self.train_loop_config = train_loop_config
        self.scaling_config = scaling_config
        self.run_config = run_config
        self.datasets = datasets
        self.dataset_config = dataset_config
        self.resume_from_checkpoint = resume_from_checkpoint
        self.preprocessor = preprocessor
        self._restoring = False

    @property
    def path(self) -> str:
        """The run's folder: ``{storage_path}/{name}``."""
        assert self.run_config.storage_path is not None and self.run_config.name is not None
        return join_url(self.run_config.storage_path, self.run_config.name)

    @classmethod
    def can_restore(cls, path: str) -> bool:
        """Whether ``path`` holds a run that ``restore`` can resume."""
        return RunFolder(Storage(path)).has_trainer_state()

    @classmethod
    def restore(
        cls,
        path: str,
        *,
        train_loop_per_worker: Callable[..., Any] | None = None,
        train_loop_config: dict[str, Any] | None = None,
        datasets: dict[str, Any] | None = None,
        preprocessor: Any = None,
    ) -> TorchTrainer:
        """A trainer that resumes the run in ``path`` (whose driver died) from its latest
        committed checkpoint. Arguments given here replace the saved ones."""
        import cloudpickle

        folder = RunFolder(Storage(path))
        if not folder.has_trainer_state():
            raise FileNotFoundError(f"no run to restore at {path!r}: it has no {TRAINER_FILE} "
                                    "(pass the folder of a run, {storage_path}/{name})")
        state = cloudpickle.loads(folder.read_trainer_state())
        parent, name = split_url(folder.url)
        trainer = cls(
            train_loop_per_worker or state["train_loop_per_worker"],
            train_loop_config=(train_loop_config if train_loop_config is not None
                               else state["train_loop_config"]),
            scaling_config=state["scaling_config"],
            run_config=replace(state["run_config"], name=name, storage_path=parent),
            datasets=datasets if datasets is not None else state["datasets"],
            dataset_config=state.get("dataset_config"),
            resume_from_checkpoint=state["resume_from_checkpoint"],
            preprocessor=preprocessor if preprocessor is not None else state.get("preprocessor"),
        )
        trainer._restoring = True
        return trainer

    def fit(self) -> Result:
        """Train; returns the ``Result``.

        Raises ``TrainingFailedError`` when the run fails for good: its ``result`` attribute
        holds the ``Result`` and its ``__cause__`` the workers' error (with
        ``FailureConfig(fail_fast="raise")``, that error itself is raised). Raises
        ``StorageError`` before any training when the storage path cannot be written.
        Whatever the workers leave in their temporary folders is gone when it returns.
        """
        failure_config = self.run_config.failure_config
        run = Storage(self.path, RetryPolicy(timeout_s=failure_config.storage_timeout_s))
        run.check_writable()
        folder = RunFolder(run)
        scan = folder.open()
        if not self._restoring:
            if scan.committed or scan.corrupt:
                raise ValueError(
                    f"the run folder {self.path!r} already holds checkpoints of an earlier run: "
                    "continue it with TorchTrainer.restore(path), or pick another "
                    "RunConfig(name=...)")
            self._save_state(folder)
        if self.resume_from_checkpoint is not None:
            self.resume_from_checkpoint.check_exists()
        datasets = preprocess_datasets(self.preprocessor, self.datasets, self._dataset_configs)
        result = _Run(self, folder, datasets).run()
        if result.error is not None:
            if failure_config.raises_original_error:
                raise result.error
            error = TrainingFailedError(
                f"training failed: {type(result.error).__name__}: {result.error}")
            error.result = result  # type: ignore[attr-defined]
            raise error from result.error
        return result

    def _save_state(self, target: RunFolder | Storage) -> None:
        import cloudpickle

        folder = target if isinstance(target, RunFolder) else RunFolder(target)

        state = {
            "train_loop_per_worker": self.train_loop_per_worker,
            "train_loop_config": self.train_loop_config,
            "scaling_config": self.scaling_config,
            "run_config": self.run_config,
            "datasets": self.datasets,
            "dataset_config": self._dataset_config_arg,
            "resume_from_checkpoint": self.resume_from_checkpoint,
            "preprocessor": self.preprocessor,
        }
        folder.write_trainer_state(cloudpickle.dumps(state))


def check_loop_and_scaling(train_loop_per_worker: Any, scaling_config: Any) -> None:
    """The checks every trainer that takes a training loop makes of it and its scaling."""
    if not callable(train_loop_per_worker):
        raise TypeError("train_loop_per_worker must be a function taking no argument or "
                        f"one (the config), got {type(train_loop_per_worker).__name__}")
    if not isinstance(scaling_config, ScalingConfig):
        raise TypeError(f"scaling_config must be a ScalingConfig, got "
                        f"{type(scaling_config).__name__}")


def check_preprocessor(preprocessor: Any) -> None:
    """A trainer's ``preprocessor=``: ``None`` or something with ``fit`` and ``transform`` (an
    ``ember.data.preprocessors.Preprocessor``)."""
    if preprocessor is not None and not (callable(getattr(preprocessor, "fit", None))
                                         and callable(getattr(preprocessor, "transform", None))):
        raise TypeError(f"preprocessor must be an ember.data.preprocessors.Preprocessor (such "
                        f"as BatchMapper or Chain), got {type(preprocessor).__name__}")


def dataset_configs_of(dataset_config: Any, datasets: dict[str, Any]
                       ) -> dict[str, DatasetConfig]:
    """Each dataset's Ray 2.5 ``DatasetConfig``, defaults filled in: from a dict of them
    (``"*"``: the default for the others), or, for a ``DataConfig`` or none, ``split`` as it
    says and the defaults of Ray 2.5 for the rest."""
    if isinstance(dataset_config, dict):
        for key, value in dataset_config.items():
            if not isinstance(value, DatasetConfig):
                raise TypeError(f"dataset_config[{key!r}] must be a DatasetConfig, got "
                                f"{type(value).__name__}")
        wildcard = dataset_config.get("*")
        configs = {name: DatasetConfig().merge(wildcard).merge(dataset_config.get(name))
                   .fill_defaults(name) for name in {*datasets, *dataset_config} - {"*"}}
        missing = sorted(n for n, c in configs.items() if c.required and n not in datasets)
        if missing:
            raise ValueError(f"dataset_config marks {', '.join(map(repr, missing))} as "
                             "required, but the trainer was not given it (datasets: "
                             f"{', '.join(map(repr, sorted(datasets))) or 'none'})")
        configs = {n: c for n, c in configs.items() if n in datasets}
        fit = sorted(n for n, c in configs.items() if c.fit)
        if len(fit) > 1:
            raise ValueError(f"dataset_config sets fit=True for {', '.join(map(repr, fit))}; "
                             "the preprocessor is fit on one dataset only")
        for name, config in configs.items():
            per_epoch = config.per_epoch_preprocessor
            if per_epoch is not None:
                check_preprocessor(per_epoch)
                if getattr(per_epoch.fit_status(), "value", None) != "NOT_FITTABLE":
                    raise ValueError(f"dataset_config[{name!r}].per_epoch_preprocessor must be "
                                     f"stateless (it is never fit), got {per_epoch!r}")
        return configs
    split = dataset_config if isinstance(dataset_config, DataConfig) else DataConfig()
    return {name: DatasetConfig(split=split.splits(name)).fill_defaults(name)
            for name in datasets}


def _data_config_of(dataset_config: Any, configs: dict[str, DatasetConfig]) -> Any:
    if isinstance(dataset_config, dict):  # Ray 2.5's form: split the ones it says
        return DataConfig(datasets_to_split=sorted(n for n, c in configs.items() if c.split))
    return dataset_config


def preprocess_datasets(preprocessor: Any, datasets: dict[str, Any],
                        configs: dict[str, DatasetConfig]) -> dict[str, Any]:
    """``datasets`` as the workers get them (Ray 2.5's order): ``preprocessor`` fit on the
    dataset whose config says ``fit`` (unless it is fit already), then applied to each whose
    config says ``transform``, then the config's ``per_epoch_preprocessor`` and
    ``global_shuffle``."""
    out = dict(datasets)
    if preprocessor is not None:
        for name, dataset in datasets.items():
            if configs[name].transform and not hasattr(dataset, "map_batches"):
                raise TypeError(
                    f"preprocessor= applies to datasets, but datasets[{name!r}] is a "
                    f"{type(dataset).__name__}; pass an ember.data dataset "
                    "(ember.data.from_items(...)), or no preprocessor")
        status = getattr(preprocessor.fit_status(), "value", None) \
            if callable(getattr(preprocessor, "fit_status", None)) else "NOT_FITTED"
        fit_on = next((name for name, config in configs.items() if config.fit), None)
        if fit_on is not None and status in ("NOT_FITTED", "PARTIALLY_FITTED"):
            preprocessor.fit(datasets[fit_on])
        out = {name: preprocessor.transform(ds) if configs[name].transform else ds
               for name, ds in datasets.items()}
    for name, config in configs.items():
        if config.per_epoch_preprocessor is not None:
            out[name] = config.per_epoch_preprocessor.transform(out[name])
        if config.global_shuffle:
            out[name] = out[name].random_shuffle()
    return out


def check_dataset_config(dataset_config: DataConfig | None,
                         datasets: dict[str, Any]) -> DataConfig:
    """``dataset_config`` (default: split every dataset), checked against ``datasets``."""
    if dataset_config is None:
        return DataConfig()
    if not isinstance(dataset_config, DataConfig):
        raise TypeError(f"dataset_config must be an ember.train.DataConfig (or Ray 2.5's dict "
                        f"of DatasetConfig by dataset name), got "
                        f"{type(dataset_config).__name__}")
    if dataset_config.datasets_to_split != "all":
        unknown = [name for name in dataset_config.datasets_to_split if name not in datasets]
        if unknown:
            raise ValueError(
                f"DataConfig(datasets_to_split=...) names {', '.join(map(repr, unknown))}, "
                f"which the trainer was not given (datasets: "
                f"{', '.join(map(repr, sorted(datasets))) or 'none'})")
    return dataset_config


def restore_wrapped(path: str, datasets: dict[str, Any] | None,
                    replacements: dict[str, Any], preprocessor: Any = None) -> TorchTrainer:
    """``TorchTrainer.restore(path)`` for a trainer whose loop wraps the user's: each entry of
    ``replacements`` that is not None replaces that key of the saved loop config."""
    trainer = TorchTrainer.restore(path, datasets=datasets, preprocessor=preprocessor)
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
    """One ``fit()``: the attempt loop. Each attempt starts a worker group (from the latest
    committed checkpoint), relays the ranks' reports to the run folder's commits, and ends with
    the group confirmed stopped and its temporary files deleted."""

    def __init__(self, trainer: TorchTrainer, folder: RunFolder,
                 datasets: dict[str, Any] | None = None) -> None:
        import cloudpickle

        self.trainer = trainer
        self.folder = folder
        self.datasets = trainer.datasets if datasets is None else datasets
        # saved beside rank 0's files of every checkpoint, as Ray 2.5 did
        self.preprocessor_blob = (None if trainer.preprocessor is None
                                  else cloudpickle.dumps(trainer.preprocessor))
        cc = trainer.run_config.checkpoint_config
        self.checkpoint_config = cc
        self.policy = RetentionPolicy(cc.num_to_keep, cc.checkpoint_score_attribute,
                                      cc.checkpoint_score_order)
        self.history: list[dict[str, Any]] = []
        self.reports_at_commit: dict[int, int] = {}  # checkpoint index -> len(history) then
        if trainer._restoring:
            self.history, self.reports_at_commit = folder.read_history()
        self.committed_reports = len(self.history)
        self.last_metrics: dict[str, Any] | None = None
        # observe: the dashboard's view of this run
        self.view = RunView(trainer.run_config.name or "", type(trainer).__name__,
                            trainer.scaling_config.num_workers, folder.url)
        self.started_from: int | None = None  # the committed checkpoint the attempt resumed
        self.temp_root = ""  # see run()

    def run(self) -> Result:
        failures = 0
        max_failures = self.trainer.run_config.failure_config.max_failures
        error: BaseException | None = None
        last: BaseException | None = None  # the failure the next attempt restarts after
        # The workers' temporary folders (one per rank) live in here: deleted after each
        # attempt, once its workers are stopped, so nothing of the run stays behind. Its name
        # carries this driver's pid, so that a later run can sweep it if this driver is killed.
        sweep_temp_folders_of_dead_drivers(tempfile.gettempdir())
        self.temp_root = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")
        try:
            while True:
                try:
                    self.folder.start_attempt()
                except Exception as exc:
                    if last is None:
                        error = exc
                    else:
                        error = last
                        if hasattr(last, "add_note"):  # Python 3.11+
                            last.add_note(f"ember could not restart the workers: "
                                          f"{type(exc).__name__}: {exc}")
                    break
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
                    self.folder.abandon_next_index()
                    corrupt = self._corrupt_start(exc)
                    if corrupt is not None:  # not the run's fault: resume from the one before
                        self.folder.mark_corrupt(*corrupt)
                        latest = self.folder.latest
                        self.committed_reports = min(self.committed_reports, (
                            0 if latest is None else self.reports_at_commit.get(latest, 0)))
                        last = exc
                        continue
                    failures += 1
                    if max_failures != -1 and failures > max_failures:
                        error = exc
                        break
                    last = exc
                    logger.warning("training failed (%s: %s); restarting the workers from the "
                                   "latest committed checkpoint (failure %d of at most %s)",
                                   type(exc).__name__, exc, failures,
                                   "unlimited" if max_failures == -1 else max_failures)
                finally:
                    self._stop(group)
        finally:
            self.folder.finish()
            shutil.rmtree(self.temp_root, ignore_errors=True)
        self.view.finished(error)
        return self._result(error)

    def _make_group(self) -> WorkerGroup:
        sc = self.trainer.scaling_config
        return WorkerGroup(sc.num_workers, num_cpus_per_worker=sc.num_cpus_per_worker,
                           num_gpus_per_worker=sc.num_gpus_per_worker,
                           resources_per_worker=sc.custom_resources_per_worker,
                           placement_strategy=sc.placement_strategy)

    def _stop(self, group: WorkerGroup) -> None:
        """Stop the group's workers and wait until they are gone (so that none of them writes
        into storage or the temporary folders any more), then delete those folders. (On a
        cluster, this deletes the folders of the workers on the driver's machine; workers on
        other nodes leave theirs in that node's temporary folder.)"""
        group.shutdown()
        shutil.rmtree(self.temp_root, ignore_errors=True)

    def _checkpoint(self, index: int) -> Checkpoint:
        return Checkpoint(self.folder.checkpoint_url(index),
                          verify_checksums=self.checkpoint_config.verify_checksums)

    def _corrupt_start(self, exc: BaseException) -> tuple[int, CorruptCheckpointError] | None:
        """(index, error) when the attempt failed because the committed checkpoint it resumed
        from turned out damaged on restore."""
        if self.started_from is None:
            return None
        url = self.folder.checkpoint_url(self.started_from)
        for candidate in (exc, getattr(exc, "cause", None)):
            if isinstance(candidate, CorruptCheckpointError) and candidate.path == url:
                return self.started_from, candidate
        return None

    def _attempt(self, group: WorkerGroup) -> None:
        trainer = self.trainer
        group.start()
        self.view.attempt_started(group.infos)
        group.setup_torch_distributed()
        n = len(group)
        self.started_from = self.folder.latest
        start = (self._checkpoint(self.started_from) if self.started_from is not None
                 else trainer.resume_from_checkpoint)
        shards = _shard_datasets(self.datasets, trainer.dataset_config, n,
                                 n * trainer.scaling_config.num_cpus_per_worker)
        cc = self.checkpoint_config
        group.get_all([
            group.execute_single_async(
                info.rank, start_session, trainer.train_loop_per_worker,
                trainer.train_loop_config,
                TrainContext(info.rank, n, info.local_rank, info.local_world_size,
                             info.node_rank, trainer.run_config.name or "",
                             self.folder.url, trainer.scaling_config.use_gpu),
                self.folder.storage, self.folder.next_index,
                start.for_rank(info.rank) if start is not None else None,
                {name: parts[info.rank] for name, parts in shards.items()},
                cc.keep_all_ranks, cc.upload_from_workers, cc.async_upload,
                os.path.join(self.temp_root, f"rank_{info.rank}"),
                n * trainer.scaling_config.num_cpus_per_worker)
            for info in group.infos
        ])
        acks: list[Any] = []
        while True:
            # A worker runs the acknowledgement of the last reports before this poll (calls to
            # an actor run in order), so both go out together.
            polls = group.execute_async(next_event)
            events = group.get_all(acks + polls)[len(acks):]
            done = [e for e in events if isinstance(e, DoneEvent)]
            if len(done) == n:
                return
            if done:
                raise _DoNotRetry(_mismatch_error(events))
            self._handle_reports(events)
            acks = group.execute_async(acknowledge, self.folder.next_index)

    def _handle_reports(self, events: list[ReportEvent]) -> None:
        metrics = events[0].metrics
        self.last_metrics = metrics
        self.history.append(metrics)
        index = self.folder.next_index
        self.view.reported(index, metrics)
        uploads: dict[int, list[FileEntry]] = {}
        for event in events:
            if event.inline is not None:  # gathered on the driver: it writes them itself
                uploads[event.rank] = self.folder.write_inline(index, event.rank, event.inline)
            elif event.files is not None:
                uploads[event.rank] = list(event.files)
        if not uploads:
            return
        if self.preprocessor_blob is not None and 0 in uploads:
            entry = self.folder.storage.write_buffer(
                self.preprocessor_blob, PREPROCESSOR_KEY, checkpoint_dir_name(index),
                rank_dir_name(0))
            uploads[0] = [e for e in uploads[0] if e.path != PREPROCESSOR_KEY] + [entry]
        self.reports_at_commit[index] = len(self.history)
        self.folder.commit(index, uploads, len(events), metrics, self.history,
                           self.reports_at_commit)
        self.committed_reports = len(self.history)
        self.view.committed(index, self.folder.checkpoint_url(index),
                            sum(e.size for files in uploads.values() for e in files), metrics)
        for old in self.policy.to_delete(self._records()):
            self.folder.delete(old)
            self.view.deleted(old)

    def _records(self) -> list[CheckpointRecord]:
        return [CheckpointRecord(i, m.metrics) for i, m in sorted(self.folder.committed.items())]

    def _result(self, error: BaseException | None) -> Result:
        latest = self.folder.latest
        best = [(self._checkpoint(r.index), dict(r.metrics))
                for r in self.policy.to_keep(self._records())]
        return Result(metrics=self.last_metrics,
                      checkpoint=self._checkpoint(latest) if latest is not None else None,
                      path=self.folder.url, error=error, best_checkpoints=best,
                      metrics_history=list(self.history))


def sweep_temp_folders_of_dead_drivers(parent: str) -> list[str]:
    """Delete the run temporary folders in ``parent`` whose driver process is gone (it was
    killed before it could delete them); returns their paths. Folders of live drivers, of other
    users, or with names not ours are left alone."""
    swept: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return swept
    for name in names:
        pid_text = name[len(TEMP_PREFIX):].split("-", 1)[0]
        if not name.startswith(TEMP_PREFIX) or not pid_text.isdigit():
            continue
        path = os.path.join(parent, name)
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            os.kill(int(pid_text), 0)
        except ProcessLookupError:  # its driver is gone
            shutil.rmtree(path, ignore_errors=True)
            swept.append(path)
        except OSError:  # alive (or not ours to signal), or gone meanwhile: leave it
            continue
    return swept


def _mismatch_error(events: list[Any]) -> ValueError:
    finished = [f"rank {e.rank} after {e.count}" for e in events if isinstance(e, DoneEvent)]
    reporting = [f"rank {e.rank} (report #{e.count + 1})" for e in events
                 if isinstance(e, ReportEvent)]
    return ValueError(
        "ranks called ember.train.report() a different number of times: "
        f"{', '.join(finished)} report(s) finished, while {', '.join(reporting)} called it "
        "again. Every rank must call report() the same number of times (pass checkpoint=None "
        "on ranks with nothing to save)")


def _shard_datasets(datasets: dict[str, Any], config: DataConfig, n: int,
                    worker_cpus: float) -> dict[str, list[Any]]:
    """Each dataset as ``n`` shards. A dataset that ``config`` splits: ``streaming_split``
    where it has one (an ``ember.data``/Ray dataset), else every n-th item of the sequence,
    starting at the rank. Any other dataset: the whole of it for every rank."""
    out: dict[str, list[Any]] = {}
    for name, dataset in datasets.items():
        if not config.splits(name):
            out[name] = [dataset] * n
        elif hasattr(dataset, "streaming_split"):
            out[name] = _split_beside_workers(dataset, n, worker_cpus,
                                              config.preserve_order(name))
        else:
            items = list(dataset)
            out[name] = [items[rank::n] for rank in range(n)]
    return out


def _split_beside_workers(dataset: Any, n: int, worker_cpus: float,
                          preserve_order: bool | None) -> list[Any]:
    from ember.data import DataContext, Dataset

    if not isinstance(dataset, Dataset):  # a Ray dataset: Ray Train's own rules apply
        return list(dataset.streaming_split(n, equal=True))
    # The split's pipeline runs while the workers hold their CPUs: keep it off them.
    context = DataContext.get_current()
    changed = replace(context, excluded_cpus=context.excluded_cpus + worker_cpus)
    if preserve_order is not None:
        changed = replace(changed, preserve_order=preserve_order)
    DataContext.set_current(changed)
    try:
        return list(dataset.streaming_split(n, equal=True))
    finally:
        DataContext.set_current(context)
