"""``ember.air.checkpoint``: Ray 2.5's ``ray.air.checkpoint.Checkpoint``, which is
``ember.train.Checkpoint`` (with ``from_dict``/``to_dict``)."""

from __future__ import annotations

from ember.train import Checkpoint

__all__ = ["Checkpoint"]
