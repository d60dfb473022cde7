"""Storage, manifests and checkpoints, on a local folder and on a real (moto) S3 server."""

from __future__ import annotations

import os

import pytest

from ember.train import Checkpoint, StorageError
from ember.train._manifest import Manifest
from ember.train._run_folder import scan_run, write_manifest
from ember.train._storage import FileEntry, Storage


@pytest.fixture(params=["local", "s3"])
def storage_url(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/runs"


def write_shard(folder, name, data):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def test_upload_records_sizes_and_checksums_and_round_trips(storage_url, tmp_path):
    src = tmp_path / "src"
    write_shard(src / "sub", "b.bin", b"x" * 1000)
    write_shard(src, "a.txt", b"hello")
    run = Storage(storage_url).child("run")

    entries = run.upload_directory(str(src), "checkpoint_000000", "rank_1")

    assert [(e.path, e.size) for e in entries] == [("a.txt", 5), ("sub/b.bin", 1000)]
    assert entries[0].sha256 == ("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b"
                                 "9824")
    assert run.find("checkpoint_000000", "rank_1") == {"a.txt": 5, "sub/b.bin": 1000}
    out = tmp_path / "out"
    run.download_directory(str(out), "checkpoint_000000", "rank_1")
    assert (out / "sub" / "b.bin").read_bytes() == b"x" * 1000


def test_checkpoint_without_manifest_does_not_exist(storage_url, tmp_path):
    run = Storage(storage_url).child("run")
    src = tmp_path / "src"
    write_shard(src, "w.pt", b"0")
    files0 = run.upload_directory(str(src), "checkpoint_000000", "rank_0")
    run.upload_directory(str(src), "checkpoint_000001", "rank_0")
    write_manifest(run, Manifest(index=0, world_size=1, files={0: files0}, metrics={"a": 1}))

    committed, uncommitted = scan_run(run)

    assert sorted(committed) == [0] and uncommitted == [1]
    assert committed[0].metrics == {"a": 1} and committed[0].files[0] == files0
    with pytest.raises(FileNotFoundError, match="never committed"):
        Checkpoint(run.child("checkpoint_000001").url).check_exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Checkpoint(run.child("checkpoint_000007").url).check_exists()


def test_rank_view_holds_only_that_ranks_files(storage_url, tmp_path):
    run = Storage(storage_url).child("run")
    files = {}
    for rank in range(3):
        write_shard(tmp_path / f"r{rank}", f"shard{rank}.bin", bytes([rank]) * 10)
        files[rank] = run.upload_directory(str(tmp_path / f"r{rank}"), "checkpoint_000000",
                                           f"rank_{rank}")
    write_manifest(run, Manifest(index=0, world_size=3, files=files))
    checkpoint = Checkpoint(run.child("checkpoint_000000").url)

    with checkpoint.for_rank(1).as_directory() as folder:
        assert os.listdir(folder) == ["shard1.bin"]
    with checkpoint.as_directory() as folder:
        assert sorted(os.listdir(folder)) == ["manifest.json", "rank_0", "rank_1", "rank_2"]
    assert checkpoint.ranks == [0, 1, 2]


def test_only_rank_zero_saved_every_rank_sees_its_files(tmp_path):
    run = Storage(str(tmp_path)).child("run")
    write_shard(tmp_path / "r0", "model.pt", b"m")
    files = {0: run.upload_directory(str(tmp_path / "r0"), "checkpoint_000000", "rank_0")}
    write_manifest(run, Manifest(index=0, world_size=2, files=files))

    with Checkpoint(run.child("checkpoint_000000").url, rank=1).as_directory() as folder:
        assert os.listdir(folder) == ["model.pt"]


def test_only_rank_zero_saved_the_whole_checkpoint_is_its_folder_as_in_ray(storage_url, tmp_path):
    # Ray's `with result.checkpoint.as_directory() as d: torch.load(f"{d}/model.pt")`.
    run = Storage(storage_url).child("run")
    write_shard(tmp_path / "r0", "model.pt", b"m")
    files = {0: run.upload_directory(str(tmp_path / "r0"), "checkpoint_000000", "rank_0")}
    write_manifest(run, Manifest(index=0, world_size=2, files=files))
    checkpoint = Checkpoint(run.child("checkpoint_000000").url)

    with checkpoint.as_directory() as folder:
        assert os.listdir(folder) == ["model.pt"]
    assert os.listdir(checkpoint.to_directory(str(tmp_path / "out"))) == ["model.pt"]


def test_unwritable_storage_names_path_and_cause(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    url = str(blocker / "runs")
    with pytest.raises(StorageError, match="a_file/runs") as info:
        Storage(url).check_writable()
    assert isinstance(info.value.__cause__, OSError)


def test_from_directory_of_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.*does not exist"):
        Checkpoint.from_directory(tmp_path / "nope")


def test_manifest_json_round_trip():
    manifest = Manifest(index=3, world_size=2, files={1: [FileEntry("a", 1, "00")]},
                        metrics={"loss": 0.5, "nested": {"x": [1, 2]}}, time=12.5)
    assert Manifest.from_json(manifest.to_json()) == manifest
