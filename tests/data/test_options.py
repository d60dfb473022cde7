"""Ray's ``filesystem=``, ``ray_remote_args`` and the task options of reads, maps and writes
(``ember/data/_options.py``): passed where Ray passes them, refused with the fix otherwise."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import ember
import ember.data as ed
from ember.data._options import remote_args

AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_PROFILE")


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials in the environment (set before ``ember_local`` starts workers): the
    filesystem object the user passes is the only way to the bucket."""
    for key in AWS_VARS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


def test_reads_and_writes_use_the_filesystem_object_given_with_its_credentials(
        _moto_server: str, no_aws_env: None, ember_local: Any) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret="testing",
                           client_kwargs={"endpoint_url": _moto_server})
    bucket = f"ember-fs-{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    # Written by tasks in worker processes, which only have the fs object to reach S3.
    ed.range(300, parallelism=3).write_parquet(f"s3://{bucket}/parquet", filesystem=fs)
    ed.range(30).write_csv(f"{bucket}/csv", filesystem=fs)  # the scheme may be left out
    assert len(fs.ls(f"{bucket}/parquet")) == 3
    ids = sorted(r["id"] for r in ed.read_parquet(f"s3://{bucket}/parquet",
                                                  filesystem=fs).take_all())
    assert ids == list(range(300))
    assert ed.read_csv(f"{bucket}/csv", filesystem=fs).count() == 30
    # pyarrow's own S3 filesystem, as Ray's docs pass it.
    s3 = pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                           endpoint_override=_moto_server.removeprefix("http://"),
                           scheme="http")
    doubled = ed.read_parquet(f"s3://{bucket}/parquet", filesystem=s3).map_batches(
        lambda b: {"id": b["id"] * 2})
    assert sorted(r["id"] for r in doubled.take_all()) == list(range(0, 600, 2))
    # Without the fs object (and no credentials anywhere) the same read fails.
    with pytest.raises(Exception):  # noqa: B017 - botocore's error, whichever it is
        ed.read_parquet(f"s3://{bucket}/parquet").count()


def test_a_local_pyarrow_filesystem_reads_as_a_path_does(ember_local: Any,
                                                          tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": np.arange(50)}), tmp_path / "a.parquet")
    ds = ed.read_parquet(str(tmp_path), filesystem=pafs.LocalFileSystem())
    assert [r["x"] for r in ds.take_all()] == list(range(50))
    with pytest.raises(TypeError, match=r"filesystem='s3' must be a pyarrow\.fs\.FileSystem "
                                        r"or an fsspec filesystem"):
        ed.read_parquet(str(tmp_path), filesystem="s3")


def _env(name: str) -> Any:
    def read(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import os

        return {"value": np.array([os.environ.get(name, "unset")] * len(batch["id"]))}

    return read


class EnvReader:
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"value": np.array([os.environ.get("EMBER_TEST_STAGE", "unset")]
                                  * len(batch["id"]))}


def test_ray_remote_args_reach_the_tasks_and_actors_of_their_own_operator(
        ember_local: Any) -> None:
    first = ed.range(20, parallelism=2).map_batches(
        _env("EMBER_TEST_STAGE"), runtime_env={"env_vars": {"EMBER_TEST_STAGE": "one"}},
        max_retries=1)
    assert {r["value"] for r in first.take_all()} == {"one"}
    # A second map with other options is not fused into the first: each sees its own.
    both = first.map_batches(lambda b: {"first": b["value"], "id": np.arange(len(b["value"]))}
                             ).map_batches(lambda b: {**b, **_env("EMBER_TEST_STAGE")(b)},
                                           runtime_env={"env_vars": {"EMBER_TEST_STAGE": "2"}})
    rows = both.take_all()
    assert {(r["first"], r["value"]) for r in rows} == {("one", "2")}
    pooled = ed.range(20).map_batches(
        EnvReader, compute=ed.ActorPoolStrategy(size=1), max_restarts=2, max_task_retries=2,
        runtime_env={"env_vars": {"EMBER_TEST_STAGE": "actor"}})
    assert {r["value"] for r in pooled.take_all()} == {"actor"}
    rows_env = ed.range(5).map(lambda r: {"v": os.environ.get("EMBER_TEST_STAGE", "unset")},
                               runtime_env={"env_vars": {"EMBER_TEST_STAGE": "row"}})
    assert {r["v"] for r in rows_env.take_all()} == {"row"}


class EnvSource:
    """A Datasource whose read tasks report the environment they ran in."""

    def get_read_tasks(self, parallelism: int, **kwargs: Any) -> list[Any]:
        from ember.data.block import BlockMetadata
        from ember.data.datasource import ReadTask

        def read() -> list[Any]:
            import os

            return [pa.table({"value": [os.environ.get("EMBER_TEST_STAGE", "unset")]})]

        return [ReadTask(read, BlockMetadata(num_rows=1, size_bytes=8))
                for _ in range(parallelism)]


def test_read_and_write_tasks_run_with_what_they_are_given(ember_local: Any,
                                                          tmp_path: Path) -> None:
    env = {"runtime_env": {"env_vars": {"EMBER_TEST_STAGE": "read"}}}
    ds = ed.read_datasource(EnvSource(), override_num_blocks=2, ray_remote_args=env,
                            memory=10**6, concurrency=1)
    assert [r["value"] for r in ds.take_all()] == ["read", "read"]
    ed.range(40, parallelism=4).write_parquet(str(tmp_path / "in"))
    # A file read with options runs in tasks (not in this process): still every row.
    ds = ed.read_parquet(str(tmp_path / "in"), concurrency=1, num_cpus=0.5, memory=10**6,
                         ray_remote_args={"max_retries": 1, **env})
    assert sorted(r["id"] for r in ds.take_all()) == list(range(40))
    ed.range(10).write_json(str(tmp_path / "ok"), concurrency=1,
                            ray_remote_args={"scheduling_strategy": "SPREAD", **env})
    assert ed.read_json(str(tmp_path / "ok")).count() == 10


def test_options_that_cannot_be_passed_on_are_refused_naming_the_known_ones(
        ember_local: Any, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"'max_restarts' cannot be passed on to tasks; "
                                        r"known: max_retries, memory"):
        ed.range(10).map_batches(lambda b: b, max_restarts=1)
    with pytest.raises(TypeError, match="'num_returns' cannot be passed on to an actor pool"):
        ed.range(10).map_batches(EnvReader, compute=ed.ActorPoolStrategy(size=1),
                                 num_returns=3)
    with pytest.raises(ValueError, match="max_retries"):
        ed.range(10).map(lambda r: r, max_retries=-5)
    with pytest.raises(TypeError, match="not GPUs or custom resources"):
        ed.read_parquet(str(tmp_path), ray_remote_args={"num_gpus": 1})
    with pytest.raises(ValueError, match="concurrency=0 must be an int >= 1"):
        ed.range(10).write_csv(str(tmp_path / "x"), concurrency=0)


def test_remote_args_split_resources_from_options() -> None:
    assert remote_args(None, actors=False, what="w") == ({}, {})
    assert remote_args({"num_cpus": 2, "resources": {"a": 1}, "memory": 5,
                        "scheduling_strategy": "SPREAD"}, actors=True, what="w") == (
        {"num_cpus": 2, "resources": {"a": 1}}, {"memory": 5, "scheduling_strategy": "SPREAD"})
    with pytest.raises(TypeError, match="'max_retries' cannot be passed on to an actor "
                                        "pool's actors"):
        remote_args({"max_retries": 1}, actors=True, what="w")
    assert ember.is_initialized() is False  # pure: starts nothing


def test_read_parquet_filter_keeps_the_rows_it_holds_for_on_every_read_path(
        ember_local: Any, tmp_path: Path) -> None:
    import pyarrow.dataset as pads

    for i in range(3):
        pq.write_table(pa.table({"x": np.arange(i * 100, (i + 1) * 100),
                                 "y": np.arange(100) % 7}),
                       tmp_path / f"{i}.parquet", row_group_size=25)
    keep = (pads.field("x") >= 150) & (pads.field("y") == 3)
    expected = sorted(x for x in range(300) if x >= 150 and x % 100 % 7 == 3)
    # Iterated here (read in this process), read by tasks, and projected to a column the
    # filter does not name.
    iterated = [x for b in ed.read_parquet(str(tmp_path), filter=keep).iter_batches()
                for x in b["x"].tolist()]
    assert sorted(iterated) == expected
    in_tasks = ed.read_parquet(str(tmp_path), filter=keep).map_batches(lambda b: b)
    assert sorted(r["x"] for r in in_tasks.take_all()) == expected
    assert ed.read_parquet(str(tmp_path), filter=keep).count() == len(expected)
    only_y = ed.read_parquet(str(tmp_path), columns=["y"], filter=keep).take_all()
    assert only_y == [{"y": 3}] * len(expected)
    with pytest.raises(TypeError, match=r"filter='x > 5' must be a pyarrow\.compute\.Expression"):
        ed.read_parquet(str(tmp_path), filter="x > 5")
    with pytest.raises(Exception, match="nope"):  # pyarrow's error, with the file named
        ed.read_parquet(str(tmp_path), filter=pads.field("nope") > 1).take_all()
