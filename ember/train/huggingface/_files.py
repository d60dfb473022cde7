"""Checkpoint folders in and out of the workers, shared by the Transformers and Accelerate paths.

Each rank uploads only what it wrote. Hugging Face's formats expect one folder holding every
rank's files (rank 0's ``trainer_state.json`` and, with DDP, its model; each rank's DCP shard
and RNG state), so restoring downloads every rank's part and merges them into one local folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from ember.train._checkpoint import Checkpoint


def stage(source: str, name: str, parent: str) -> str:
    """A new folder under ``parent`` holding ``source`` as ``name/`` (hard links where the
    filesystem allows, else copies): what one rank reports, without copying its bytes."""
    staging = tempfile.mkdtemp(prefix=".ember-upload-", dir=parent)

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, os.path.join(staging, name), copy_function=link)
    return staging


def download_merged(checkpoint: Checkpoint, target: str) -> str:
    """Download every rank's files of a committed checkpoint and merge them into ``target``
    (a file that several ranks wrote is taken from the lowest rank). Returns ``target``."""
    whole = checkpoint.all_ranks()
    os.makedirs(target, exist_ok=True)
    with whole.as_directory() as folder:
        ranks = sorted((n for n in os.listdir(folder) if n.startswith("rank_")),
                       key=lambda n: int(n.split("_", 1)[1]))
        if not ranks:  # a plain folder (resume_from_checkpoint=Checkpoint.from_directory(...))
            shutil.copytree(folder, target, dirs_exist_ok=True)
            return target
        for rank in ranks:
            base = os.path.join(folder, rank)
            for parent, _dirs, names in os.walk(base):
                for name in names:
                    rel = os.path.relpath(os.path.join(parent, name), base)
                    dest = os.path.join(target, rel)
                    if not os.path.exists(dest):
                        os.makedirs(os.path.dirname(dest), exist_ok=True)
                        shutil.copy2(os.path.join(parent, name), dest)
    return target
