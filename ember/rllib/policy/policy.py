"""``ray.rllib.policy.policy``: ``Policy`` (``ember.rl.Policy``)."""

from __future__ import annotations

from ember.rl import Policy

__all__ = ["Policy"]
