"""Checkpoint folders in and out of the workers, shared by the Transformers and Accelerate paths.

Each rank uploads only what it wrote. Hugging Face's formats expect one folder holding every
rank's files (rank 0's ``trainer_state.json`` and, with DDP, its model; each rank's DCP shard
and RNG state), so restoring downloads every rank's part and merges them into one local folder.
A DeepSpeed ZeRO checkpoint is merged the same way, but without the other ranks' partitions:
each rank reads only its own (``files_for_rank``).
"""

from __future__ import annotations

import os
import shutil
import tempfile

from ember.train._checkpoint import Checkpoint
from ember.train._run_folder import rank_dir_name


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


def download_for_rank(checkpoint: Checkpoint, target: str, rank: int) -> str:
    """Download what ``rank`` needs to resume from a committed checkpoint into ``target``: with
    DeepSpeed ZeRO partitions, its own files and the files every rank reads
    (``_deepspeed.files_for_rank``); otherwise every rank's files (``download_merged``)."""
    from ember.train.huggingface import _deepspeed

    manifest = checkpoint.manifest
    if manifest is None:
        return download_merged(checkpoint, target)
    paths = {r: [f.path for f in files] for r, files in manifest.files.items()}
    if not _deepspeed.is_zero_checkpoint(p for files in paths.values() for p in files):
        return download_merged(checkpoint, target)
    os.makedirs(target, exist_ok=True)
    chosen = _deepspeed.files_for_rank(paths, rank, elastic=_deepspeed.elastic_requested())
    whole = checkpoint.all_ranks()
    for source, files in sorted(chosen.items()):
        whole.storage.download_directory(target, rank_dir_name(source), files=files)
    return target
