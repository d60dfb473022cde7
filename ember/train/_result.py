"""``Result``: what ``TorchTrainer.fit()`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ember.train._checkpoint import Checkpoint


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

    def __repr__(self) -> str:
        error = f", error={type(self.error).__name__}" if self.error else ""
        return (f"Result(metrics={self.metrics}, checkpoint={self.checkpoint}, "
                f"path={self.path!r}{error})")
