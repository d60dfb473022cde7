"""``ray.rllib.algorithms.algorithm``: ``Algorithm`` (``ember.rl.Algorithm``)."""

from __future__ import annotations

from ember.rl import Algorithm

__all__ = ["Algorithm"]
