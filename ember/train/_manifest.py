"""A checkpoint's manifest: the file that makes a checkpoint exist.

The driver writes ``checkpoint_NNNNNN/manifest.json`` last, after every rank's upload is
confirmed. A checkpoint folder without it was never committed: it is not restored, and it is
deleted when a run starts or restarts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ember.train._storage import FileEntry, Storage, checkpoint_dir_name, checkpoint_index

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    index: int
    world_size: int
    files: Mapping[int, list[FileEntry]]  # rank -> its files (ranks without files are absent)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    @property
    def ranks(self) -> list[int]:
        return sorted(self.files)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for files in self.files.values() for f in files)

    def to_json(self) -> str:
        return json.dumps({
            "format_version": FORMAT_VERSION,
            "index": self.index,
            "world_size": self.world_size,
            "time": self.time,
            "metrics": dict(self.metrics),
            "files": {str(rank): [vars(f) for f in files]
                      for rank, files in sorted(self.files.items())},
        }, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unknown checkpoint manifest format {data.get('format_version')!r}"
                             f" (this ember reads {FORMAT_VERSION})")
        return cls(
            index=int(data["index"]),
            world_size=int(data["world_size"]),
            files={int(rank): [FileEntry(**f) for f in files]
                   for rank, files in data["files"].items()},
            metrics=data.get("metrics", {}),
            time=float(data["time"]),
        )


def write_manifest(run: Storage, manifest: Manifest) -> None:
    run.write_bytes(manifest.to_json().encode(), checkpoint_dir_name(manifest.index),
                    MANIFEST_NAME)


def read_manifest(checkpoint: Storage) -> Manifest | None:
    """The manifest of a checkpoint folder, or ``None`` when it has none (not committed)."""
    try:
        return Manifest.from_json(checkpoint.read_bytes(MANIFEST_NAME).decode())
    except FileNotFoundError:
        return None


def scan_run(run: Storage) -> tuple[dict[int, Manifest], list[int]]:
    """The committed checkpoints of a run folder by index, and the indices of uncommitted ones."""
    committed: dict[int, Manifest] = {}
    uncommitted: list[int] = []
    for name in run.listdir():
        index = checkpoint_index(name)
        if index is None:
            continue
        manifest = read_manifest(run.child(name))
        if manifest is None:
            uncommitted.append(index)
        else:
            committed[index] = manifest
    return committed, sorted(uncommitted)
