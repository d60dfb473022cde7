"""How many replicas a deployment wants: a pure policy with the clock passed in.

The desired count follows the ongoing requests per replica toward
``target_ongoing_requests``, kept within ``[min_replicas, max_replicas]``:

- the load is the total of ongoing (and queued) requests, averaged over the last
  ``look_back_period_s`` seconds when that is set (default: the latest sample alone);
- ``upscaling_factor`` / ``downscaling_factor`` (Ray's older ``smoothing_factor``,
  ``upscale_smoothing_factor``, ``downscale_smoothing_factor`` mean the same) damp each step:
  the count moves that fraction of the way from the current count to the raw wish (at least
  one replica per step), so ``0.5`` halves every jump;
- a change happens only after the wish to scale in that direction has held for
  ``upscale_delay_s`` (up) or ``downscale_delay_s`` (down) without interruption, so short bursts
  do not churn replicas; the last step from one replica to zero waits
  ``downscale_to_zero_delay_s`` instead, when that is set.

``metrics_interval_s`` is how often the controller samples the load for this policy.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields
from typing import Any

# Ray's spellings accepted as they are.
_ALIASES = {
    "target_num_ongoing_requests_per_replica": "target_ongoing_requests",
    "upscale_smoothing_factor": "upscaling_factor",
    "downscale_smoothing_factor": "downscaling_factor",
}


@dataclass(frozen=True)
class AutoscalingConfig:
    """How a deployment scales between ``min_replicas`` and ``max_replicas`` on its ongoing
    requests (the rules are in this module's docstring). Ray's older option names are
    accepted by ``from_any`` (``target_num_ongoing_requests_per_replica``, ...).

    >>> config = AutoscalingConfig(min_replicas=1, max_replicas=4, target_ongoing_requests=2)
    >>> config.start_replicas
    1
    """
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 1.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    downscale_to_zero_delay_s: float | None = None
    initial_replicas: int | None = None
    metrics_interval_s: float = 0.5
    look_back_period_s: float | None = None
    smoothing_factor: float = 1.0
    upscaling_factor: float | None = None  # default: smoothing_factor
    downscaling_factor: float | None = None  # default: smoothing_factor

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
        if self.downscale_to_zero_delay_s is not None and self.downscale_to_zero_delay_s < 0:
            raise ValueError(
                f"downscale_to_zero_delay_s={self.downscale_to_zero_delay_s} must be >= 0"
            )
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError(
                f"initial_replicas={self.initial_replicas} must lie within "
                f"[min_replicas, max_replicas] = [{self.min_replicas}, {self.max_replicas}]"
            )
        if self.metrics_interval_s <= 0:
            raise ValueError(f"metrics_interval_s={self.metrics_interval_s} must be > 0")
        if self.look_back_period_s is not None and self.look_back_period_s <= 0:
            raise ValueError(
                f"look_back_period_s={self.look_back_period_s} must be > 0 (or None: "
                "the latest sample alone)"
            )
        for key in ("smoothing_factor", "upscaling_factor", "downscaling_factor"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"{key}={value} must be > 0 (1 = no smoothing)")

    @classmethod
    def from_any(cls, value: AutoscalingConfig | dict[str, Any]) -> AutoscalingConfig:
        """An ``AutoscalingConfig`` from itself or a dict of its fields (Ray's older names
        included); an unknown key is a ``ValueError`` that lists the known ones.

        >>> AutoscalingConfig.from_any({"max_replicas": 3,
        ...                             "target_num_ongoing_requests_per_replica": 5})
        ... # doctest: +ELLIPSIS
        AutoscalingConfig(min_replicas=1, max_replicas=3, target_ongoing_requests=5, ...)
        """
        if isinstance(value, AutoscalingConfig):
            return value
        if not isinstance(value, dict):
            raise TypeError(
                f"autoscaling_config must be a dict or AutoscalingConfig, got {value!r}"
            )
        known = {f.name for f in fields(cls)}
        options: dict[str, Any] = {}
        for key, item in value.items():
            name = _ALIASES.get(key, key)
            if name not in known:
                raise ValueError(
                    f"unknown autoscaling_config option {key!r}; known: "
                    f"{', '.join(sorted(known | set(_ALIASES)))}"
                )
            if name in options:
                raise ValueError(f"autoscaling_config sets {name!r} twice (as {key!r} too)")
            options[name] = item
        return cls(**options)

    @property
    def up_factor(self) -> float:
        """The damping of a step up: ``upscaling_factor``, else ``smoothing_factor``."""
        return self.smoothing_factor if self.upscaling_factor is None else self.upscaling_factor

    @property
    def down_factor(self) -> float:
        """The damping of a step down: ``downscaling_factor``, else ``smoothing_factor``."""
        return (self.smoothing_factor if self.downscaling_factor is None
                else self.downscaling_factor)

    @property
    def start_replicas(self) -> int:
        """The replicas a deployment starts with: ``initial_replicas``, else ``min_replicas`` (at
        least one).
        """
        if self.initial_replicas is not None:
            return self.initial_replicas
        return max(1, self.min_replicas)


class AutoscalingPolicy:
    """Feed it the deployment's total ongoing requests; it says how many replicas to run."""

    def __init__(self, config: AutoscalingConfig) -> None:
        self.config = config
        self._direction = 0  # +1 wants up, -1 wants down, 0 content
        self._since = 0.0
        self._samples: deque[tuple[float, float]] = deque()  # (when, total ongoing)

    def raw_desired(self, total_ongoing: float) -> int:
        c = self.config
        wanted = math.ceil(total_ongoing / c.target_ongoing_requests - 1e-9)
        return min(c.max_replicas, max(c.min_replicas, wanted))

    def load(self, total_ongoing: float, now: float) -> float:
        """Record a sample; the load to act on (the average over the look-back window)."""
        window = self.config.look_back_period_s
        if window is None:
            return total_ongoing
        self._samples.append((now, total_ongoing))
        while self._samples and self._samples[0][0] < now - window:
            self._samples.popleft()
        return sum(v for _, v in self._samples) / len(self._samples)

    def smoothed_desired(self, current: int, load: float) -> int:
        """The raw wish, damped by the up/down factor (a step of at least one replica)."""
        c = self.config
        raw = self.raw_desired(load)
        if current == 0 or raw == current:
            return raw
        factor = c.up_factor if raw > current else c.down_factor
        step = factor * (raw - current)
        moved = current + (max(1, math.ceil(step - 1e-9)) if step > 0
                           else min(-1, math.ceil(step - 1e-9)))
        return min(c.max_replicas, max(c.min_replicas, moved))

    def decide(self, current: int, total_ongoing: float, now: float) -> int:
        """The replica count to run from now on (``current`` when nothing should change)."""
        c = self.config
        load = self.load(total_ongoing, now)
        if current < c.min_replicas or current > c.max_replicas:  # out of bounds: fix at once
            self._direction = 0
            return min(c.max_replicas, max(c.min_replicas, current))
        wanted = self.smoothed_desired(current, load)
        to_zero = c.downscale_to_zero_delay_s is not None and wanted == 0
        if to_zero and current > 1:
            wanted = 1  # down to one first; the last step has its own delay
        direction = (wanted > current) - (wanted < current)
        if direction == 0:
            self._direction = 0
            return current
        if direction != self._direction:
            self._direction = direction
            self._since = now
        if direction > 0:
            delay = c.upscale_delay_s
        elif to_zero and current == 1:
            delay = c.downscale_to_zero_delay_s or 0.0
        else:
            delay = c.downscale_delay_s
        if now - self._since >= delay:
            self._direction = 0
            return wanted
        return current
