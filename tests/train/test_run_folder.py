"""The run folder: commits, indices that are never reused, and corrupt checkpoints skipped."""

from __future__ import annotations

import json
import logging
import os

import pytest

from ember.train import Checkpoint, CorruptCheckpointError, Result
from ember.train._run_folder import RunFolder, scan_run, scan_run_folder
from ember.train._storage import Storage


@pytest.fixture(params=["local", "s3"])
def run_url(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store" / "run")
    return request.getfixturevalue("s3_bucket") + "/runs/run"


def commit_steps(folder: RunFolder, tmp_path, steps) -> None:
    """Commit one checkpoint per step (2 ranks, one file each), as a run would."""
    history = []
    counts = {}
    for step in steps:
        index = folder.next_index
        uploads = {}
        for rank in (0, 1):
            src = tmp_path / f"src_{step}_{rank}"
            src.mkdir()
            (src / "state.json").write_text(json.dumps({"step": step, "rank": rank}))
            uploads[rank] = folder.storage.upload_directory(
                str(src), f"checkpoint_{index:06d}", f"rank_{rank}")
        history.append({"step": step})
        counts[index] = len(history)
        folder.commit(index, uploads, 2, {"step": step}, history, counts)


def read_json(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


def damage(url: str, *parts: str, data: bytes) -> None:
    Storage(url).write_bytes(data, *parts)


@pytest.mark.parametrize(("content", "detail"), [
    (b'{"format_version": 1, "index": 2, "wor', "not JSON"),
    (b"{}", "no 'format_version'"),
    (b'{"format_version": 1, "index": 2}', "field 'files' is missing"),
    (b'{"format_version": 1, "index": 2, "world_size": 2, "time": 1, "files": [1]}',
     "wrong type"),
    (b'{"format_version": 99}', "unknown format_version 99"),
])
def test_a_corrupt_manifest_is_named_and_skipped(run_url, tmp_path, caplog, content, detail):
    folder = RunFolder(Storage(run_url))
    commit_steps(folder, tmp_path, [0, 1, 2])
    damage(run_url, "checkpoint_000002", "manifest.json", data=content)
    manifest_url = Storage(run_url).url_of("checkpoint_000002", "manifest.json")

    with caplog.at_level(logging.WARNING, logger="ember.train"):
        scan = scan_run_folder(Storage(run_url))
    assert sorted(scan.committed) == [0, 1] and list(scan.corrupt) == [2]
    assert scan_run(Storage(run_url)) == (scan.committed, [])
    assert manifest_url in str(scan.corrupt[2]) and detail in str(scan.corrupt[2])
    assert any(manifest_url in r.getMessage() for r in caplog.records)
    # reading it directly names the file too, and never as a raw JSONDecodeError
    checkpoint = Checkpoint(Storage(run_url).url_of("checkpoint_000002"))
    with pytest.raises(CorruptCheckpointError, match=detail) as info:
        checkpoint.check_exists()
    assert manifest_url in str(info.value) and info.value.path == checkpoint.path

    # the latest usable checkpoint is the one before; the corrupt index is never reused
    reopened = RunFolder(Storage(run_url))
    reopened.open()
    assert reopened.latest == 1 and reopened.next_index == 3
    result = Result.from_path(run_url)
    assert result.checkpoint is not None and result.checkpoint.index == 1
    assert result.metrics == {"step": 1}


def test_indices_are_never_reused_after_a_failed_attempt(tmp_path):
    folder = RunFolder(Storage(str(tmp_path / "run")))
    folder.open()
    commit_steps(folder, tmp_path, [0, 1])
    assert folder.next_index == 2
    # An attempt was handing out index 2 when it failed; nothing of it reached storage yet.
    folder.abandon_next_index()
    folder.start_attempt()
    assert folder.next_index == 3
    # A late write of the stopped attempt lands; the next start deletes it and moves past it.
    folder.storage.write_bytes(b"late", "checkpoint_000004", "rank_0", "x")
    folder.start_attempt()
    assert folder.next_index == 5 and folder.storage.listdir() == [
        "checkpoint_000000", "checkpoint_000001", "metrics_history.json"]


def test_a_damaged_shard_is_named_on_restore_and_can_be_let_through(run_url, tmp_path):
    folder = RunFolder(Storage(run_url))
    commit_steps(folder, tmp_path, [0])
    shard = ("checkpoint_000000", "rank_1", "state.json")
    original = Storage(run_url).read_bytes(*shard)
    damage(run_url, *shard, data=original.replace(b"1", b"7"))  # same size, other bytes
    checkpoint = Checkpoint(Storage(run_url).url_of("checkpoint_000000"))

    for view in (checkpoint.for_rank(1), checkpoint):
        with pytest.raises(CorruptCheckpointError, match=r"does not match the manifest.*"
                                                         r"verify_checksums=False") as info, \
                view.as_directory():
            pass
        assert Storage(run_url).url_of(*shard) in str(info.value)
        assert info.value.path == checkpoint.path
    with pytest.raises(CorruptCheckpointError):
        checkpoint.for_rank(1).to_directory(str(tmp_path / "copy"))
    with checkpoint.for_rank(0).as_directory() as good:  # rank 0's shard is fine
        assert read_json(good, "state.json")["rank"] == 0

    trusting = Checkpoint(checkpoint.path, rank=1, verify_checksums=False)
    with trusting.as_directory() as folder_path:
        assert read_json(folder_path, "state.json") == {"step": 0, "rank": 7}
    # a size mismatch (or a missing file) is caught even without the sums
    damage(run_url, *shard, data=b"{}")
    with pytest.raises(CorruptCheckpointError, match="has 2 bytes"), trusting.as_directory():
        pass
    Storage(run_url).remove(*shard)
    with pytest.raises(CorruptCheckpointError, match=r"listed in the manifest.*missing"), \
            trusting.as_directory():
        pass
