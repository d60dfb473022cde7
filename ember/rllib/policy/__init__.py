"""``ray.rllib.policy``: ``Policy`` (``ember.rl.Policy``, what ``algo.get_policy()`` returns)."""

from __future__ import annotations

from ember.rl import Policy

__all__ = ["Policy"]
