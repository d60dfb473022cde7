"""``ray.rllib.algorithms.ppo``: ``PPO`` and ``PPOConfig`` (``ember.rl``'s)."""

from __future__ import annotations

from ember.rl import PPO, PPOConfig

__all__ = ["PPO", "PPOConfig"]
