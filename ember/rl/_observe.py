"""The ``"rl"`` view of the dashboard: one event per training iteration (the numbers
``algo.train()`` returns), from which it draws the return curve."""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

from ember.util import metrics

_runs = itertools.count(1)


class IterationView:
    def __init__(self, algorithm: str, env: Any, num_env_runners: int, num_learners: int
                 ) -> None:
        env_name = env if isinstance(env, str) else getattr(env, "__name__", "custom env")
        self.key = f"{algorithm}_{env_name}_{next(_runs)}"
        self.state: dict[str, Any] = {
            "algorithm": algorithm, "env": env_name, "num_env_runners": num_env_runners,
            "num_learners": num_learners, "status": "running", "started": time.time(),
        }
        metrics.publish("rl", self.key, state=self.state)

    def iteration(self, result: dict[str, Any]) -> None:
        event = {}
        for key, value in result.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                event[key] = float(value) if math.isfinite(value) else None
        metrics.publish("rl", self.key, event=event)

    def stopped(self) -> None:
        self.state["status"] = "stopped"
        metrics.publish("rl", self.key, state=self.state)
