"""A run's folder in storage: its layout, what it holds, and the only code that changes it.

::

    {storage_path}/{name}/
        trainer.pkl               the trainer's arguments, for TorchTrainer.restore
        metrics_history.json      rank 0's reports up to the latest commit
        checkpoint_000000/
            rank_0/...            each rank's files, uploaded by that rank's worker
            rank_1/...
            manifest.json         written last: the checkpoint exists once it is there

The rules this module keeps:

- A checkpoint is committed by ``RunFolder.commit``: every rank's files are confirmed in storage
  at their reported sizes, the history is written, and the manifest comes last.
- A checkpoint folder without a manifest was never committed: it is never restored, and it is
  deleted when an attempt starts and when the run ends.
- A checkpoint whose manifest cannot be read is corrupt: it is skipped with a warning (the one
  before it is used) and kept for inspection.
- An index is never used twice, so a write of a stopped attempt that lands late can only land in
  a folder that no later checkpoint uses.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ember.errors import CorruptCheckpointError, StorageError
from ember.train._manifest import MANIFEST_NAME, Manifest, read_manifest
from ember.train._storage import FileEntry, Storage

logger = logging.getLogger("ember.train")

TRAINER_FILE = "trainer.pkl"
# Rank 0's reports up to the latest commit, rewritten just before each manifest: a restored run's
# ``Result.metrics_history`` starts with them.
HISTORY_FILE = "metrics_history.json"
CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d{6,})$")


def checkpoint_dir_name(index: int) -> str:
    return f"checkpoint_{index:06d}"


def checkpoint_index(name: str) -> int | None:
    match = CHECKPOINT_DIR.match(name)
    return int(match.group(1)) if match else None


def rank_dir_name(rank: int) -> str:
    return f"rank_{rank}"


def join_url(base: str, name: str) -> str:
    """``{base}/{name}`` for a URL or a local path (made absolute)."""
    if "://" in base:
        return base.rstrip("/") + "/" + name
    return os.path.join(os.path.abspath(os.path.expanduser(base)), name)


def split_url(url: str) -> tuple[str, str]:
    """(parent, name) of a URL or a local path."""
    if "://" in url:
        parent, name = url.rstrip("/").rsplit("/", 1)
        return parent, name
    return os.path.dirname(url.rstrip("/")), posixpath.basename(url.rstrip("/"))


@dataclass(frozen=True)
class RunScan:
    """What a run folder holds: committed checkpoints by index, the indices of uncommitted
    ones (no manifest), and the corrupt ones (a manifest that cannot be read)."""

    committed: dict[int, Manifest]
    uncommitted: list[int]
    corrupt: dict[int, CorruptCheckpointError]

    @property
    def highest_index(self) -> int:
        """The highest index in the folder, of any kind (-1 when there is none)."""
        return max([*self.committed, *self.uncommitted, *self.corrupt, -1])


def scan_run_folder(run: Storage) -> RunScan:
    """Read every checkpoint folder of a run. A corrupt manifest is logged and reported in
    ``corrupt``, never raised: the checkpoints before it stay usable."""
    committed: dict[int, Manifest] = {}
    uncommitted: list[int] = []
    corrupt: dict[int, CorruptCheckpointError] = {}
    for name in run.listdir():
        index = checkpoint_index(name)
        if index is None:
            continue
        try:
            manifest = read_manifest(run.child(name))
        except CorruptCheckpointError as exc:
            logger.warning("skipping checkpoint %d: %s", index, exc)
            corrupt[index] = exc
            continue
        if manifest is None:
            uncommitted.append(index)
        else:
            committed[index] = manifest
    return RunScan(committed, sorted(uncommitted), corrupt)


def scan_run(run: Storage) -> tuple[dict[int, Manifest], list[int]]:
    """The committed checkpoints of a run folder by index, and the indices of uncommitted ones
    (corrupt ones are in neither: see ``scan_run_folder``)."""
    scan = scan_run_folder(run)
    return scan.committed, scan.uncommitted


def write_manifest(run: Storage, manifest: Manifest) -> None:
    run.write_bytes(manifest.to_json().encode(), checkpoint_dir_name(manifest.index),
                    MANIFEST_NAME)


class RunFolder:
    """The driver's view of one run's folder: what is committed, and the next index to use.

    ``open()`` reads the folder; ``start_attempt()`` readies it for a (re)started worker group;
    ``commit`` / ``delete`` change it; ``finish()`` tidies it when the run ends.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.committed: dict[int, Manifest] = {}
        self.corrupt: dict[int, CorruptCheckpointError] = {}
        self.next_index = 0

    @property
    def url(self) -> str:
        return self.storage.url

    def checkpoint_url(self, index: int) -> str:
        return self.storage.url_of(checkpoint_dir_name(index))

    def open(self) -> RunScan:
        """Read the folder: its committed and corrupt checkpoints, and the next index."""
        scan = scan_run_folder(self.storage)
        self.committed = dict(scan.committed)
        self.corrupt = dict(scan.corrupt)
        self.next_index = scan.highest_index + 1
        return scan

    @property
    def latest(self) -> int | None:
        """The index of the latest committed checkpoint that is not known to be corrupt."""
        return max(self.committed) if self.committed else None

    # -- the trainer's state and the history --------------------------------------------------
    def has_trainer_state(self) -> bool:
        return self.storage.exists(TRAINER_FILE)

    def read_trainer_state(self) -> bytes:
        return self.storage.read_bytes(TRAINER_FILE)

    def write_trainer_state(self, data: bytes) -> None:
        self.storage.write_bytes(data, TRAINER_FILE)

    def read_history(self) -> tuple[list[dict[str, Any]], dict[int, int]]:
        """Rank 0's reports up to the latest committed checkpoint, and for each committed index
        how many reports had been made by then (empty when there is no history)."""
        latest = self.latest
        if latest is None or not self.storage.exists(HISTORY_FILE):
            return [], {}
        saved = json.loads(self.storage.read_bytes(HISTORY_FILE))
        # The file may be one commit ahead: the driver can die between it and the manifest.
        counts = {int(i): int(n) for i, n in saved["reports_at_commit"].items()}
        return list(saved["reports"][: counts.get(latest, 0)]), counts

    # -- attempts -----------------------------------------------------------------------------
    def start_attempt(self) -> None:
        """Ready the folder for a worker group that starts now (the previous group's workers
        confirmed stopped): delete the uncommitted checkpoints, and move ``next_index`` past
        every index found in storage."""
        scan = scan_run_folder(self.storage)
        self.corrupt.update(scan.corrupt)
        self.next_index = max(self.next_index, scan.highest_index + 1)
        for index in scan.uncommitted:
            logger.info("deleting checkpoint %d: it was never committed", index)
            self.storage.remove(checkpoint_dir_name(index))

    def abandon_next_index(self) -> None:
        """An attempt failed: never use the index it was handing out. One of its uploads may
        still be under way (an S3 request already sent completes after its sender died), and
        nothing of it may have reached storage yet, so no scan can see it."""
        self.next_index += 1

    def mark_corrupt(self, index: int, error: CorruptCheckpointError) -> None:
        """A restore found checkpoint ``index`` damaged: it is no longer a candidate (and is kept
        in storage for inspection)."""
        logger.warning("checkpoint %d is corrupt, resuming from the committed checkpoint before "
                       "it: %s", index, error)
        self.committed.pop(index, None)
        self.corrupt[index] = error

    def finish(self) -> None:
        """The run ended: delete its uncommitted checkpoints, as far as storage lets us."""
        try:
            self.start_attempt()
        except Exception as exc:  # best effort: such a folder is never restored anyway
            logger.warning("could not delete the uncommitted checkpoints of %s (%s: %s); they "
                           "are never restored, and the next run on this folder deletes them",
                           self.url, type(exc).__name__, exc)

    # -- commits ------------------------------------------------------------------------------
    def write_inline(self, index: int, rank: int, inline: Mapping[str, Any]) -> list[FileEntry]:
        """Write a rank's files that reached the driver (the gather path) into checkpoint
        ``index``."""
        return [self.storage.write_buffer(data, rel, checkpoint_dir_name(index),
                                          rank_dir_name(rank))
                for rel, data in sorted(inline.items())]

    def commit(self, index: int, uploads: Mapping[int, list[FileEntry]], world_size: int,
               metrics: Mapping[str, Any], history: list[dict[str, Any]],
               reports_at_commit: Mapping[int, int]) -> Manifest:
        """Commit checkpoint ``index``: check that every rank's files are in storage at their
        reported sizes, write the history, then the manifest (last: from then on the checkpoint
        exists). Raises ``StorageError`` naming a file that is missing or short."""
        folder = checkpoint_dir_name(index)
        for rank, files in uploads.items():
            found = self.storage.find(folder, rank_dir_name(rank))
            for entry in files:
                if found.get(entry.path) != entry.size:
                    raise StorageError(
                        f"rank {rank}'s upload of {entry.path!r} ({entry.size} bytes) to "
                        f"{self.storage.url_of(folder, rank_dir_name(rank))!r} is missing or "
                        f"incomplete (found {found.get(entry.path)} bytes)")
        manifest = Manifest(index=index, world_size=world_size, files=dict(uploads),
                            metrics=dict(metrics))
        self.storage.write_bytes(json.dumps({
            "reports": history,
            "reports_at_commit": {str(i): n for i, n in reports_at_commit.items()},
        }).encode(), HISTORY_FILE)
        write_manifest(self.storage, manifest)  # last: this commits the checkpoint
        self.committed[index] = manifest
        self.next_index = max(self.next_index, index + 1)
        return manifest

    def delete(self, index: int) -> None:
        """Delete a committed checkpoint: its manifest first, so that it stops existing at
        once, then its files."""
        folder = checkpoint_dir_name(index)
        self.storage.remove(folder, MANIFEST_NAME)
        self.storage.remove(folder)
        self.committed.pop(index, None)
