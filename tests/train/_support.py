"""Helpers shared by the Hugging Face, Accelerate and DeepSpeed train tests."""

from __future__ import annotations

import json
from typing import Any


def files_by_rank(checkpoint: Any) -> dict[int, dict[str, int]]:
    """rank -> {relative path: size} of a committed checkpoint, from its manifest."""
    return {rank: {f.path: f.size for f in files}
            for rank, files in checkpoint.manifest.files.items()}


def read_log(path: str) -> list[dict[str, Any]]:
    """The JSON lines the workers appended to ``path``."""
    with open(path) as f:
        return [json.loads(line) for line in f]
