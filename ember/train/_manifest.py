"""A checkpoint's manifest: the file that makes a checkpoint exist, and its format.

The driver writes ``checkpoint_NNNNNN/manifest.json`` last, after every rank's upload is
confirmed (``_run_folder.RunFolder.commit``): world size, each rank's files with their sizes and
sha256 sums, and rank 0's metrics.
"""

from __future__ import annotations

import json
import os
import posixpath
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ember.errors import CorruptCheckpointError
from ember.train._storage import FileEntry, Storage

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
    def from_json(cls, text: str | bytes, source: str = "<manifest>") -> Manifest:
        """Parse a manifest; ``CorruptCheckpointError`` naming ``source`` (the file) when it
        is not one this ember can read."""
        def corrupt(detail: str) -> CorruptCheckpointError:
            return CorruptCheckpointError(
                f"checkpoint manifest {source!r} is corrupt: {detail}. This checkpoint cannot "
                "be restored; ember skips it and resumes from the committed checkpoint "
                "before it (delete the folder, or restore its manifest from a backup)",
                path=posixpath.dirname(source) if "://" in source else os.path.dirname(source))

        try:
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise corrupt(f"it is not JSON ({exc}; the file may be truncated)") from None
        if not isinstance(data, dict):
            raise corrupt(f"it holds a {type(data).__name__}, not a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            if "format_version" not in data:
                raise corrupt("it has no 'format_version'")
            raise corrupt(f"unknown format_version {version!r} (this ember reads "
                          f"{FORMAT_VERSION}; a newer ember may have written it)")
        try:
            files = data["files"]
            if not isinstance(files, dict):
                raise TypeError(f"'files' is a {type(files).__name__}, not an object")
            return cls(
                index=int(data["index"]),
                world_size=int(data["world_size"]),
                files={int(rank): [FileEntry(path=str(f["path"]), size=int(f["size"]),
                                             sha256=str(f["sha256"])) for f in entries]
                       for rank, entries in files.items()},
                metrics=dict(data.get("metrics") or {}),
                time=float(data["time"]),
            )
        except KeyError as exc:
            raise corrupt(f"the field {exc} is missing") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise corrupt(f"a field has the wrong type ({exc})") from None


def read_manifest(checkpoint: Storage) -> Manifest | None:
    """The manifest of a checkpoint folder, or ``None`` when it has none (not committed);
    ``CorruptCheckpointError`` naming the file when it cannot be read."""
    try:
        data = checkpoint.read_bytes(MANIFEST_NAME)
    except FileNotFoundError:
        return None
    return Manifest.from_json(data, checkpoint.url_of(MANIFEST_NAME))
