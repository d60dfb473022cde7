"""The ``"data"`` view of the dashboard: each dataset run's operators, as it streams.

The executor hands itself over every loop round; this publishes (at most every
``PUBLISH_PERIOD_S``, and once more at the end) each operator's rows done and expected, rows/s,
output bytes, the bytes of its blocks held now (memory), running tasks and live actors.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from typing import Any

from ember.util import metrics

logger = logging.getLogger("ember.data")

PUBLISH_PERIOD_S = 0.5
_runs = itertools.count(1)
_LOCALS = re.compile(r"[\w.]*<locals>\.")


def _short(name: str) -> str:
    """``MapBatches(double)`` rather than ``MapBatches(test.<locals>.double)``."""
    return _LOCALS.sub("", name)


class DatasetView:
    def __init__(self, stages: list[Any]) -> None:
        self.key = f"dataset_{next(_runs)}"
        self.name = " -> ".join(_short(stage.spec.name) for stage in stages)
        self.started = time.time()
        self._started_clock = time.monotonic()
        self._last = float("-inf")

    def maybe_publish(self, executor: Any, status: str = "running", force: bool = False
                      ) -> None:
        now = time.monotonic()
        if not force and now - self._last < PUBLISH_PERIOD_S:
            return
        self._last = now
        try:
            self._publish(executor, status, now)
        except Exception:  # best-effort telemetry: a view must never break a dataset
            logger.debug("ember.data: publishing the dashboard's view failed", exc_info=True)

    def _publish(self, executor: Any, status: str, now: float) -> None:
        elapsed = max(now - self._started_clock, 1e-9)
        operators = []
        for stage in executor.stages:
            held = sum(b.meta.size_bytes for _, b in stage.inqueue) + sum(
                r.in_bytes + r.est_bytes for r in stage.running.values())
            stats = stage.stats
            operators.append({
                "name": _short(stage.spec.name), "rows": stats.rows, "rows_total": stage.spec.rows_total,
                "rows_per_s": stats.rows / elapsed, "tasks": stats.tasks,
                "running": len(stage.running), "bytes": stats.bytes, "bytes_in_flight": held,
                "peak_bytes_in_flight": stats.peak_bytes_in_flight,
                "actors": len(stage.actors), "peak_rss_bytes": stats.peak_rss_bytes,
            })
        metrics.publish("data", self.key, state={
            "name": self.name, "status": status, "started": self.started, "wall_s": elapsed,
            "memory_budget": executor.budget, "bytes_in_flight": executor._bytes_in_flight(),
            "peak_bytes_in_flight": executor.stats.peak_bytes_in_flight,
            "operators": operators,
        })
