"""Checkpoint retention: which committed checkpoints to delete. Pure: records in, decisions out.

The rules (``CheckpointConfig``):

- ``num_to_keep=None`` keeps everything.
- Without a score attribute, the ``num_to_keep`` newest checkpoints are kept.
- With one, the ``num_to_keep`` best by that metric are kept (``"max"``: higher is better).
  A checkpoint whose metrics lack the attribute (or hold a non-number, or NaN) ranks below every
  scored one; among equal scores the newer one ranks higher.
- The newest checkpoint is always kept besides, whatever its score: it is where a restart resumes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class CheckpointRecord:
    """A committed checkpoint as retention sees it: its index (order of commits) and metrics."""

    index: int
    metrics: Mapping[str, Any]


@dataclass(frozen=True)
class RetentionPolicy:
    num_to_keep: int | None = None
    score_attribute: str | None = None
    score_order: Literal["max", "min"] = "max"

    def __post_init__(self) -> None:
        if self.num_to_keep is not None and self.num_to_keep < 1:
            raise ValueError(f"num_to_keep={self.num_to_keep} must be None or >= 1")
        if self.score_order not in ("max", "min"):
            raise ValueError(f"score_order={self.score_order!r} must be 'max' or 'min'")

    def _rank_key(self, record: CheckpointRecord) -> tuple[int, float, int]:
        """Sort key: larger is better. (has a score, signed score, index)."""
        if self.score_attribute is None:
            return (1, 0.0, record.index)
        score = _score(record.metrics, self.score_attribute)
        if score is None:
            return (0, 0.0, record.index)
        return (1, score if self.score_order == "max" else -score, record.index)

    def ranked(self, records: Sequence[CheckpointRecord]) -> list[CheckpointRecord]:
        """The records, best first."""
        _check_unique(records)
        return sorted(records, key=self._rank_key, reverse=True)

    def to_keep(self, records: Sequence[CheckpointRecord]) -> list[CheckpointRecord]:
        """The records to keep, best first (the newest last when it only stays for restarts)."""
        ranked = self.ranked(records)
        if self.num_to_keep is None:
            return ranked
        kept = ranked[: self.num_to_keep]
        if ranked:
            newest = max(ranked, key=lambda r: r.index)
            if newest not in kept:
                kept.append(newest)
        return kept

    def to_delete(self, records: Sequence[CheckpointRecord]) -> list[int]:
        """Indices of the checkpoints to delete, oldest first."""
        keep = {r.index for r in self.to_keep(records)}
        return sorted(r.index for r in records if r.index not in keep)


def _score(metrics: Mapping[str, Any], attribute: str) -> float | None:
    value: Any = None
    if attribute in metrics:
        value = metrics[attribute]
    else:  # "eval/loss" also reaches into nested dicts, as in Ray
        node: Any = metrics
        for part in attribute.split("/"):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        value = node
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _check_unique(records: Sequence[CheckpointRecord]) -> None:
    seen: set[int] = set()
    for record in records:
        if record.index in seen:
            raise ValueError(f"checkpoint index {record.index} appears twice")
        seen.add(record.index)
