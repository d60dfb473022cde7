"""``ray.rllib.algorithms.algorithm_config``: ``AlgorithmConfig`` (``ember.rl.AlgorithmConfig``)."""

from __future__ import annotations

from ember.rl import AlgorithmConfig

__all__ = ["AlgorithmConfig"]
