"""The ``"train"`` view of the dashboard: each run's workers, reports and checkpoints.

The driver side of a run (``_trainer._Run``) tells this what happens; it publishes the run's
state (status, workers, last metrics, checkpoints with their committed state and size) and
one event per report (its metrics), which the dashboard plots live.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ember.util import metrics


def plain(values: dict[str, Any]) -> dict[str, Any]:
    """Report metrics as plain data: numbers stay numbers (numpy and torch scalars too)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, bool) or value is None or isinstance(value, str):
            out[str(key)] = value
            continue
        try:
            number = float(value)  # ints, floats, numpy scalars, one-element tensors
        except (TypeError, ValueError):
            out[str(key)] = str(value)[:200]
            continue
        out[str(key)] = number if math.isfinite(number) else None
    return out


class RunView:
    def __init__(self, name: str, trainer: str, num_workers: int, path: str) -> None:
        self.key = name or trainer
        self.state: dict[str, Any] = {
            "status": "starting", "trainer": trainer, "num_workers": num_workers, "path": path,
            "workers": [], "reports": 0, "last_metrics": {}, "checkpoints": [], "error": None,
            "attempt": 0, "started": time.time(),
        }

    def _publish(self, event: dict[str, Any] | None = None) -> None:
        metrics.publish("train", self.key, state=self.state, event=event)

    def attempt_started(self, workers: list[Any]) -> None:
        self.state["attempt"] += 1
        self.state["status"] = "running"
        self.state["workers"] = [{"rank": w.rank, "pid": w.pid, "node_id": w.node_id,
                                  "gpu_ids": list(w.gpu_ids)} for w in workers]
        self._publish()

    def reported(self, index: int, report_metrics: dict[str, Any]) -> None:
        values = plain(report_metrics)
        self.state["reports"] += 1
        self.state["last_metrics"] = values
        self._publish({"report": self.state["reports"], "time": time.time(), "metrics": values,
                       "checkpoint_index": index})

    def committed(self, index: int, path: str, size_bytes: int,
                  report_metrics: dict[str, Any]) -> None:
        self.state["checkpoints"].append({"index": index, "committed": True,
                                          "size_bytes": size_bytes, "path": path,
                                          "metrics": plain(report_metrics), "deleted": False})
        self._publish()

    def deleted(self, index: int) -> None:
        for checkpoint in self.state["checkpoints"]:
            if checkpoint["index"] == index:
                checkpoint["deleted"] = True
        self._publish()

    def finished(self, error: BaseException | None) -> None:
        self.state["status"] = "failed" if error is not None else "finished"
        self.state["error"] = None if error is None else f"{type(error).__name__}: {error}"
        self.state["workers"] = []
        self._publish()
