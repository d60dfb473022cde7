"""``Result``: what ``TorchTrainer.fit()`` returns."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ember.train._checkpoint import Checkpoint

logger = logging.getLogger("ember.train")


@dataclass
class Result:
    """The outcome of a run.

    - ``metrics``: rank 0's last reported metrics.
    - ``checkpoint``: the latest committed checkpoint (every rank's folder), or ``None``.
    - ``best_checkpoints``: ``(checkpoint, metrics)`` pairs kept by retention, best first.
    - ``error``: the exception that ended the run, if it failed.
    - ``path``: the run's folder in storage.
    - ``metrics_dataframe``: every report of rank 0, one row each (a pandas DataFrame when
      pandas is installed, else a list of dicts). After a restart or ``TorchTrainer.restore``
      it holds each report once: those up to the checkpoint resumed from, then the new ones.
    """

    metrics: dict[str, Any] | None
    checkpoint: Checkpoint | None
    path: str
    error: BaseException | None = None
    best_checkpoints: list[tuple[Checkpoint, dict[str, Any]]] = field(default_factory=list)
    metrics_history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def metrics_dataframe(self) -> Any:
        """Every report of rank 0, one row each: a pandas ``DataFrame`` (a list of dicts when
        pandas is not installed).
        """
        try:
            import pandas as pd
        except ImportError:
            return list(self.metrics_history)
        return pd.DataFrame(self.metrics_history)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], storage_filesystem: Any = None) -> Result:
        """The ``Result`` of the run stored at ``path`` (``{storage_path}/{name}``, a local
        folder or a URL), as ``fit()`` returned it, read back from storage: the latest
        committed checkpoint, the ones retention kept, and rank 0's reports up to the latest
        commit (``metrics`` is the last of them). A corrupt checkpoint is skipped.

        ``storage_filesystem`` (Ray's, a pyarrow filesystem) is not supported: pass a URL
        such as ``s3://bucket/runs/name``; credentials come from the usual variables.
        """
        import cloudpickle

        from ember.train._retention import CheckpointRecord, RetentionPolicy
        from ember.train._run_folder import RunFolder
        from ember.train._storage import Storage

        if storage_filesystem is not None:
            raise ValueError("Result.from_path(storage_filesystem=...) is not supported: pass "
                             "the run's folder as a URL (s3://bucket/runs/name, gs://...) and "
                             "leave storage_filesystem out")
        url = os.fspath(path)
        folder = RunFolder(Storage(url))
        if not folder.storage.exists():
            raise FileNotFoundError(f"no run at {url!r}: pass the folder of a run, "
                                    "{storage_path}/{name} (Result.path)")
        scan = folder.open()
        if not scan.committed and not folder.has_trainer_state():
            raise FileNotFoundError(f"{url!r} holds no run of ember.train (no checkpoint and no "
                                    "trainer.pkl): pass the folder of a run, "
                                    "{storage_path}/{name} (Result.path)")
        policy = RetentionPolicy()
        verify = True
        if folder.has_trainer_state():
            try:  # only for the retention rules: the loop's code need not be importable
                config = cloudpickle.loads(folder.read_trainer_state())["run_config"]
                cc = config.checkpoint_config
                policy = RetentionPolicy(cc.num_to_keep, cc.checkpoint_score_attribute,
                                         cc.checkpoint_score_order)
                verify = cc.verify_checksums
            except Exception as exc:
                logger.warning("Result.from_path(%r): could not read the run's checkpoint "
                               "config (%s: %s); best_checkpoints are ranked newest first",
                               url, type(exc).__name__, exc)
        history, _ = folder.read_history()
        records = [CheckpointRecord(i, m.metrics) for i, m in sorted(folder.committed.items())]

        def checkpoint(index: int) -> Checkpoint:
            return Checkpoint(folder.checkpoint_url(index), verify_checksums=verify)

        latest = folder.latest
        last_metrics = (history[-1] if history else
                        dict(folder.committed[latest].metrics) if latest is not None else None)
        return cls(metrics=last_metrics,
                   checkpoint=checkpoint(latest) if latest is not None else None,
                   path=folder.url,
                   best_checkpoints=[(checkpoint(r.index), dict(r.metrics))
                                     for r in policy.to_keep(records)],
                   metrics_history=history)

    def __repr__(self) -> str:
        error = f", error={type(self.error).__name__}" if self.error else ""
        return (f"Result(metrics={self.metrics}, checkpoint={self.checkpoint}, "
                f"path={self.path!r}{error})")
