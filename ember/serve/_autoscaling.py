"""How many replicas a deployment wants: a pure policy with the clock passed in.

The desired count follows the ongoing requests per replica toward
``target_ongoing_requests``, kept within ``[min_replicas, max_replicas]``. A change happens only
after the wish to scale in that direction has held for ``upscale_delay_s`` (up) or
``downscale_delay_s`` (down) without interruption, so short bursts do not churn replicas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Ray 2.5 spellings accepted as they are.
_ALIASES = {"target_num_ongoing_requests_per_replica": "target_ongoing_requests"}


@dataclass(frozen=True)
class AutoscalingConfig:
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 1.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    initial_replicas: int | None = None
    metrics_interval_s: float = 0.5

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ValueError(f"min_replicas={self.min_replicas} must be >= 0")
        if self.max_replicas < max(1, self.min_replicas):
            raise ValueError(
                f"max_replicas={self.max_replicas} must be >= 1 and >= min_replicas "
                f"({self.min_replicas})"
            )
        if self.target_ongoing_requests <= 0:
            raise ValueError(
                f"target_ongoing_requests={self.target_ongoing_requests} must be > 0"
            )
        if self.upscale_delay_s < 0 or self.downscale_delay_s < 0:
            raise ValueError("upscale_delay_s and downscale_delay_s must be >= 0")
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError(
                f"initial_replicas={self.initial_replicas} must lie within "
                f"[min_replicas, max_replicas] = [{self.min_replicas}, {self.max_replicas}]"
            )

    @classmethod
    def from_any(cls, value: AutoscalingConfig | dict[str, Any]) -> AutoscalingConfig:
        if isinstance(value, AutoscalingConfig):
            return value
        if not isinstance(value, dict):
            raise TypeError(
                f"autoscaling_config must be a dict or AutoscalingConfig, got {value!r}"
            )
        known = set(cls.__dataclass_fields__)
        options: dict[str, Any] = {}
        ignored = {"look_back_period_s", "smoothing_factor", "upscale_smoothing_factor",
                   "downscale_smoothing_factor"}
        for key, item in value.items():
            key = _ALIASES.get(key, key)
            if key in known:
                options[key] = item
            elif key not in ignored:
                raise ValueError(
                    f"unknown autoscaling_config option {key!r}; known: {', '.join(sorted(known))}"
                )
        return cls(**options)

    @property
    def start_replicas(self) -> int:
        if self.initial_replicas is not None:
            return self.initial_replicas
        return max(1, self.min_replicas)


class AutoscalingPolicy:
    """Feed it the deployment's total ongoing requests; it says how many replicas to run."""

    def __init__(self, config: AutoscalingConfig) -> None:
        self.config = config
        self._direction = 0  # +1 wants up, -1 wants down, 0 content
        self._since = 0.0

    def raw_desired(self, total_ongoing: float) -> int:
        c = self.config
        wanted = math.ceil(total_ongoing / c.target_ongoing_requests - 1e-9)
        return min(c.max_replicas, max(c.min_replicas, wanted))

    def decide(self, current: int, total_ongoing: float, now: float) -> int:
        """The replica count to run from now on (``current`` when nothing should change)."""
        c = self.config
        if current < c.min_replicas or current > c.max_replicas:  # out of bounds: fix at once
            self._direction = 0
            return min(c.max_replicas, max(c.min_replicas, current))
        wanted = self.raw_desired(total_ongoing)
        direction = (wanted > current) - (wanted < current)
        if direction == 0:
            self._direction = 0
            return current
        if direction != self._direction:
            self._direction = direction
            self._since = now
        delay = c.upscale_delay_s if direction > 0 else c.downscale_delay_s
        if now - self._since >= delay:
            self._direction = 0
            return wanted
        return current
