"""Block types under Ray's module name (``ray.data.block``): what a custom ``Datasource`` uses.

A block is a ``pyarrow.Table`` (a read task may also return a ``pandas.DataFrame`` or a dict of
NumPy arrays; ember converts it). ``BlockMetadata`` describes what a read task will produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ember.data._block import Block

__all__ = ["Block", "BlockMetadata"]


@dataclass
class BlockMetadata:
    """What a read task says about its output before it runs: ``num_rows`` and ``size_bytes``
    (each ``None`` when unknown), the ``input_files`` it reads, and ``exec_stats`` (unused)."""

    num_rows: int | None = None
    size_bytes: int | None = None
    input_files: list[str] | None = None
    exec_stats: Any = None
    schema: Any = None  # older Ray releases had it here; accepted, not used
