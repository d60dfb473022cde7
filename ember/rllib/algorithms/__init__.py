"""``ray.rllib.algorithms``'s names: ``Algorithm`` and ``AlgorithmConfig`` (``ember.rl``'s)."""

from __future__ import annotations

from ember.rl import Algorithm, AlgorithmConfig

__all__ = ["Algorithm", "AlgorithmConfig"]
