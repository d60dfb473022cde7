"""A worker's shard of an ember dataset as a torch ``IterableDataset`` (one pass per epoch)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


class ShardDataset(torch.utils.data.IterableDataset[Any]):
    """Rows of one rank's shard: an ``ember.data`` ``DataIterator`` (from ``streaming_split``;
    each pass is one epoch of the shared execution) or a list of rows.

    The shard is this rank's already: the Trainer must not split it again, so
    ``prepare_trainer`` gives it a plain ``DataLoader`` instead of Accelerate's sharding one.
    """

    def __init__(self, shard: Any, name: str) -> None:
        super().__init__()
        self.shard = shard
        self.name = name

    def __repr__(self) -> str:
        return f"ShardDataset({self.name!r}, {self.shard!r})"

    def __iter__(self) -> Iterator[Any]:
        if hasattr(self.shard, "iter_rows"):
            yield from self.shard.iter_rows()
        else:
            yield from self.shard
