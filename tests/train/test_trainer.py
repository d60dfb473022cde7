"""TorchTrainer end to end on the local backend: small models, 1-2 workers, real storage.

Training loops are defined inside the tests: cloudpickle ships them to the workers by value.
"""

from __future__ import annotations

import getpass
import json
import os
import time

import pytest

import ember
from ember.train import (
    Checkpoint,
    CheckpointConfig,
    DataConfig,
    FailureConfig,
    Result,
    RunConfig,
    ScalingConfig,
    StorageError,
    TrainingFailedError,
)
from ember.train._run_folder import scan_run
from ember.train._storage import Storage
from ember.train.torch import TorchTrainer


def counting_loop(config):
    """Reports steps ``start..config['steps']-1``, each with a checkpoint of the step; the
    metrics say where the loop resumed from. Optional fault: ``config['kill']`` names a marker
    file; rank 1 kills its own process at step ``config['kill_at']`` (once), after rank 0's
    upload of that step's shard has reached storage."""
    import signal
    import tempfile
    import time

    import ember.train as train

    ctx = train.get_context()
    rank = ctx.get_world_rank()
    resumed_from = -1
    checkpoint = train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder, \
                open(os.path.join(folder, "state.json")) as f:
            state = json.load(f)
        assert state["rank"] == rank, "a rank restored another rank's shard"
        resumed_from = state["step"]
    for step in range(resumed_from + 1, config["steps"]):
        if config.get("kill") and rank == 1 and step == config["kill_at"] \
                and not os.path.exists(config["kill"]):
            shard = os.path.join(config["run_dir"], f"checkpoint_{step:06d}", "rank_0",
                                 "state.json")
            while not os.path.exists(shard):  # rank 0 uploaded; rank 1 dies before its upload
                time.sleep(0.01)
            open(config["kill"], "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as f:
                json.dump({"step": step, "rank": rank}, f)
            train.report({"step": step, "score": config.get("scores", {}).get(str(step), 0),
                          "resumed_from": resumed_from},
                         checkpoint=Checkpoint.from_directory(d))


def read_json(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


def run_dirs(path):
    return sorted(n for n in os.listdir(path) if n.startswith("checkpoint_"))


def test_fit_commits_checkpoints_per_rank_and_keeps_the_best(ember_local, tmp_path):
    scores = {"0": 5, "1": 9, "2": 1, "3": 7, "4": 2}
    trainer = TorchTrainer(
        counting_loop, train_loop_config={"steps": 5, "scores": scores},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="run", storage_path=str(tmp_path), checkpoint_config=(
            CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="score"))))

    result = trainer.fit()

    assert result.error is None and result.path == str(tmp_path / "run")
    assert result.metrics == {"step": 4, "score": 2, "resumed_from": -1}
    assert list(result.metrics_dataframe["step"]) == [0, 1, 2, 3, 4]
    # best two by score (steps 1 and 3) plus the newest (4), whole checkpoints deleted
    assert run_dirs(result.path) == ["checkpoint_000001", "checkpoint_000003", "checkpoint_000004"]
    assert [c.index for c, _ in result.best_checkpoints] == [1, 3, 4]
    assert [m["score"] for _, m in result.best_checkpoints] == [9, 7, 2]
    # Result.from_path reads the same result back from storage
    stored = Result.from_path(result.path)
    assert (stored.metrics, stored.checkpoint, stored.path) == (
        result.metrics, result.checkpoint, result.path)
    assert stored.best_checkpoints == result.best_checkpoints
    assert stored.metrics_history == result.metrics_history and stored.error is None
    assert result.checkpoint is not None and result.checkpoint.index == 4
    with result.checkpoint.as_directory() as folder:
        for rank in (0, 1):
            assert read_json(folder, f"rank_{rank}", "state.json") == {"step": 4, "rank": rank}
    # the manifest is written after every rank's files, and lists them
    for name in run_dirs(result.path):
        folder = os.path.join(result.path, name)
        manifest_time = os.stat(os.path.join(folder, "manifest.json")).st_mtime_ns
        for rank in (0, 1):
            assert os.stat(os.path.join(folder, f"rank_{rank}", "state.json")).st_mtime_ns \
                <= manifest_time
        manifest = read_json(folder, "manifest.json")
        assert manifest["world_size"] == 2 and sorted(manifest["files"]) == ["0", "1"]


def test_killed_worker_restarts_from_latest_committed_checkpoint(ember_local, tmp_path):
    marker = tmp_path / "killed"
    run_dir = tmp_path / "run"
    trainer = TorchTrainer(
        counting_loop,
        train_loop_config={"steps": 4, "kill": str(marker), "kill_at": 2,
                           "run_dir": str(run_dir)},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="run", storage_path=str(tmp_path),
                             failure_config=FailureConfig(max_failures=1)))

    result = trainer.fit()

    assert marker.exists(), "the fault was never injected"
    # step 2 was half uploaded (rank 0 only) when rank 1 died: never committed, so the
    # restart resumed from step 1's checkpoint, and the half checkpoint was deleted
    assert result.metrics == {"step": 3, "score": 0, "resumed_from": 1}
    assert list(result.metrics_dataframe["resumed_from"]) == [-1, -1, 1, 1]
    committed, uncommitted = scan_run(Storage(str(run_dir)))
    assert uncommitted == [] and "checkpoint_000002" not in run_dirs(run_dir)
    assert [m.metrics["step"] for _, m in sorted(committed.items())] == [0, 1, 2, 3]


def test_failures_past_max_failures_fail_the_run(ember_local, tmp_path):
    def loop():
        raise KeyError("boom in the loop")

    trainer = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=1),
                           run_config=RunConfig(name="run", storage_path=str(tmp_path)))
    with pytest.raises(TrainingFailedError, match="boom in the loop") as info:
        trainer.fit()
    assert isinstance(info.value.__cause__, KeyError)
    assert isinstance(info.value.result.error, KeyError)  # type: ignore[attr-defined]


def test_restore_resumes_a_run_whose_driver_stopped(ember_local, tmp_path):
    def loop(config):
        import tempfile

        import ember.train as train

        start = 0
        checkpoint = train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder, \
                    open(os.path.join(folder, "step")) as f:
                start = int(f.read()) + 1
        for step in range(start, 3):
            if step == 2 and not os.path.exists(config["marker"]):
                open(config["marker"], "w").close()
                raise SystemExit("the driver went away")  # ends the first fit() for good
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "step"), "w") as f:
                    f.write(str(step))
                train.report({"step": step, "start": start},
                             checkpoint=Checkpoint.from_directory(d))

    config = {"marker": str(tmp_path / "marker")}
    trainer = TorchTrainer(loop, train_loop_config=config,
                           scaling_config=ScalingConfig(num_workers=2),
                           run_config=RunConfig(name="run", storage_path=str(tmp_path)))
    with pytest.raises(TrainingFailedError):
        trainer.fit()
    path = str(tmp_path / "run")
    assert TorchTrainer.can_restore(path)
    with pytest.raises(ValueError, match=r"TorchTrainer\.restore"):
        trainer.fit()  # a fresh fit must not silently reuse the earlier run's folder

    result = TorchTrainer.restore(path).fit()

    assert result.metrics == {"step": 2, "start": 2}
    assert result.checkpoint is not None and result.checkpoint.metrics["step"] == 2


def test_ranks_reporting_a_different_number_of_times(ember_local, tmp_path):
    def loop():
        import ember.train as train

        for _ in range(2 + train.get_context().get_world_rank()):
            train.report({"x": 1})

    trainer = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=2),
                           run_config=RunConfig(name="run", storage_path=str(tmp_path),
                                                failure_config=FailureConfig(max_failures=3)))
    with pytest.raises(TrainingFailedError, match=r"rank 0 after 2 report\(s\).*rank 1"):
        trainer.fit()


def test_unserializable_metric_names_the_key(ember_local, tmp_path):
    def loop():
        import ember.train as train

        train.report({"ok": 1.0, "bad_metric": object()})

    trainer = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=1),
                           run_config=RunConfig(name="run", storage_path=str(tmp_path)))
    with pytest.raises(TrainingFailedError, match="metric 'bad_metric' cannot be serialized"):
        trainer.fit()


def test_missing_resume_checkpoint_and_unwritable_storage_fail_before_training(tmp_path):
    def loop():
        raise AssertionError("must not run")

    missing = Checkpoint(str(tmp_path / "no_such_checkpoint"))
    trainer = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=1),
                           run_config=RunConfig(name="run", storage_path=str(tmp_path)),
                           resume_from_checkpoint=missing)
    with pytest.raises(FileNotFoundError, match="no_such_checkpoint"):
        trainer.fit()
    (tmp_path / "file").write_text("")
    trainer = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=1),
                           run_config=RunConfig(name="run", storage_path=str(tmp_path / "file")))
    with pytest.raises(StorageError, match="file/run"):
        trainer.fit()
    assert not ember.is_initialized()  # no worker was started


def test_s3_per_worker_upload_and_rank_restore(s3_bucket, ember_local, tmp_path):
    scaling = ScalingConfig(num_workers=2)
    first = TorchTrainer(counting_loop, train_loop_config={"steps": 2}, scaling_config=scaling,
                         run_config=RunConfig(name="first", storage_path=s3_bucket)).fit()
    assert first.path == f"{s3_bucket}/first"
    assert first.checkpoint is not None and first.checkpoint.ranks == [0, 1]

    def loop():
        import ember.train as train

        rank = train.get_context().get_world_rank()
        checkpoint = train.get_checkpoint()
        with checkpoint.as_directory() as folder:
            files = sorted(os.listdir(folder))
            state = read_json(folder, "state.json")
        train.report({"files": files, "state": state, "rank": rank})

    second = TorchTrainer(loop, scaling_config=scaling, resume_from_checkpoint=first.checkpoint,
                          run_config=RunConfig(name="second", storage_path=s3_bucket)).fit()

    assert second.metrics == {"files": ["state.json"], "state": {"step": 1, "rank": 0},
                              "rank": 0}
    with first.checkpoint.as_directory() as folder:
        assert sorted(os.listdir(folder)) == ["manifest.json", "rank_0", "rank_1"]
        assert read_json(folder, "rank_1", "state.json")["rank"] == 1


def test_gather_on_driver_writes_the_same_layout(ember_local, tmp_path):
    trainer = TorchTrainer(
        counting_loop, train_loop_config={"steps": 1},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="run", storage_path=str(tmp_path), checkpoint_config=(
            CheckpointConfig(_checkpoint_upload_from_workers=False))))
    result = trainer.fit()
    assert result.checkpoint is not None and result.checkpoint.ranks == [0, 1]
    with result.checkpoint.for_rank(1).as_directory() as folder:
        assert read_json(folder, "state.json") == {"step": 0, "rank": 1}


def _large_files_loop():
    import os
    import tempfile

    import ember.train as train

    rank = train.get_context().get_world_rank()
    folder = tempfile.mkdtemp()
    os.makedirs(os.path.join(folder, "sub"))
    with open(os.path.join(folder, "sub", "weights.bin"), "wb") as f:
        f.write(bytes(range(256)) * (12_000 + 24_000 * rank))  # 3 and 9.2 MB: one part, two
    open(os.path.join(folder, "empty"), "wb").close()
    train.report({"rank": rank}, checkpoint=train.Checkpoint.from_directory(folder))


def test_gather_on_driver_carries_large_files_whole_to_s3(ember_local, s3_bucket):
    # upload_from_workers=False (Ray 2.5's default): each rank's files reach the driver through
    # the object store, and the driver uploads them in parts, with the same manifest.
    import hashlib

    result = TorchTrainer(
        _large_files_loop, scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="run", storage_path=s3_bucket, checkpoint_config=(
            CheckpointConfig(keep_all_ranks=True, upload_from_workers=False)))).fit()

    committed, uncommitted = scan_run(Storage(f"{s3_bucket}/run"))
    assert uncommitted == [] and list(committed) == [0]
    for rank in (0, 1):
        expected = bytes(range(256)) * (12_000 + 24_000 * rank)
        entries = {e.path: e for e in committed[0].files[rank]}
        assert set(entries) == {"sub/weights.bin", "empty"}
        assert entries["sub/weights.bin"].size == len(expected)
        assert entries["sub/weights.bin"].sha256 == hashlib.sha256(expected).hexdigest()
        assert entries["empty"].size == 0
        with result.checkpoint.for_rank(rank).as_directory() as folder:
            with open(os.path.join(folder, "sub", "weights.bin"), "rb") as f:
                assert f.read() == expected
            assert os.path.getsize(os.path.join(folder, "empty")) == 0


def test_driver_commits_only_after_every_ranks_upload_is_confirmed(tmp_path):
    """The commit step alone (no workers): a shard that did not reach storage blocks the
    manifest; once it is there, the manifest is written and lists both ranks."""
    from ember.train._run_folder import RunFolder
    from ember.train._session import ReportEvent
    from ember.train._trainer import _Run

    trainer = TorchTrainer(lambda: None, scaling_config=ScalingConfig(num_workers=2),
                           run_config=RunConfig(name="run", storage_path=str(tmp_path)))
    run = Storage(trainer.path)
    folder = RunFolder(run)
    folder.open()  # an empty run folder: the next checkpoint is number 0
    attempt = _Run(trainer, folder)
    src = tmp_path / "shard"
    src.mkdir()
    (src / "w.bin").write_bytes(b"12345")
    files0 = run.upload_directory(str(src), "checkpoint_000000", "rank_0")
    claimed1 = [files0[0]]  # rank 1 says it uploaded, but nothing of it is in storage
    events = [ReportEvent(0, 0, {"loss": 1.0}, files0), ReportEvent(1, 0, {"loss": 2.0}, claimed1)]

    with pytest.raises(StorageError, match=r"rank 1's upload of 'w\.bin'"):
        attempt._handle_reports(events)
    assert scan_run(run) == ({}, [0])  # no manifest: the checkpoint does not exist

    run.upload_directory(str(src), "checkpoint_000000", "rank_1")
    attempt._handle_reports(events)
    committed, uncommitted = scan_run(run)
    assert uncommitted == [] and committed[0].ranks == [0, 1]
    assert committed[0].metrics == {"loss": 1.0}  # rank 0's metrics are the run's


def gated_upload_loop(config):
    """Rank-0 uploads wait for the gate file, which the loop creates only after ``report``
    returned: a ``report`` that waited for its upload would stop at the gate (and fail the run
    after ``config['gate_timeout_s']``)."""
    import json
    import os
    import tempfile
    import time

    import ember.train as train
    from ember.train import _storage

    rank = train.get_context().get_world_rank()
    gate, log = config["gate"], config["log"]
    upload = _storage.Storage.upload_directory

    def gated(self, local_dir, *parts):
        if rank == 0:
            deadline = time.monotonic() + config["gate_timeout_s"]
            while not os.path.exists(gate):
                if time.monotonic() > deadline:
                    raise TimeoutError("the gate never opened: report() waited for its upload")
                time.sleep(0.01)
        return upload(self, local_dir, *parts)

    _storage.Storage.upload_directory = gated
    for step in range(2):
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "state.json"), "w") as f:
                json.dump({"step": step, "rank": rank}, f)
            train.report({"step": step}, checkpoint=train.Checkpoint.from_directory(folder))
        # report returned (and the folder is gone) before the gated upload could finish
        if rank == 0 and step == 0:
            with open(log, "w") as f:
                f.write("returned before upload")
            open(gate, "w").close()


def test_async_upload_returns_before_the_upload_and_still_commits(ember_local, tmp_path):
    run_config = RunConfig(name="run", storage_path=str(tmp_path / "store"),
                           checkpoint_config=CheckpointConfig(async_upload=True))
    result = TorchTrainer(
        gated_upload_loop, scaling_config=ScalingConfig(num_workers=2), run_config=run_config,
        train_loop_config={"gate": str(tmp_path / "gate"), "log": str(tmp_path / "log"),
                           "gate_timeout_s": 60},
    ).fit()

    assert (tmp_path / "log").read_text() == "returned before upload"
    committed, uncommitted = scan_run(Storage(result.path))
    assert sorted(committed) == [0, 1] and uncommitted == []
    assert result.checkpoint is not None and result.checkpoint.ranks == [0, 1]
    first = Checkpoint(Storage(result.path).child("checkpoint_000000").url)
    for rank in (0, 1):  # step 0's folder was deleted while its upload waited at the gate
        with first.for_rank(rank).as_directory() as folder:
            assert read_json(folder, "state.json") == {"step": 0, "rank": rank}
        with result.checkpoint.for_rank(rank).as_directory() as folder:
            assert read_json(folder, "state.json") == {"step": 1, "rank": rank}
    assert [m["step"] for m in result.metrics_history] == [0, 1]


_DRIVER = '''
import os, sys, tempfile, time

import ember
from ember.train import Checkpoint, RunConfig, ScalingConfig
from ember.train.torch import TorchTrainer


def loop(config):
    import ember.train as train

    start = 0
    checkpoint = train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder, open(os.path.join(folder, "step")) as f:
            start = int(f.read()) + 1
    for step in range(start, config["steps"]):
        time.sleep(config["sleep"])
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "step"), "w") as f:
                f.write(str(step))
            train.report({"step": step, "start": start}, checkpoint=Checkpoint.from_directory(d))


ember.init(num_cpus=2)
TorchTrainer(loop, train_loop_config={"steps": 1000, "sleep": 0.2},
             scaling_config=ScalingConfig(num_workers=2),
             run_config=RunConfig(name="run", storage_path=sys.argv[1])).fit()
'''


@pytest.mark.slow
def test_sigkilled_driver_leaves_nothing_running_and_the_run_restores(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from tests._support import alive_after, describe, ember_segments

    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    driver = subprocess.Popen([sys.executable, str(script), str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = tmp_path / "run"
    try:
        deadline = time.monotonic() + 90
        while not (run.exists() and len([d for d in run_dirs(run)
                                         if (run / d / "manifest.json").exists()]) >= 2):
            assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint committed in 90 s"
            time.sleep(0.1)
        tree = psutil.Process(driver.pid).children(recursive=True)
        pids = {str(p.pid) for p in [psutil.Process(driver.pid), *tree]}
        assert len(tree) >= 3  # the fork server and two training workers at least
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.stderr.close()

    # The driver's end reaches every process it started: no orphan keeps training, and the
    # shared memory of the dead runtime is swept.
    left = alive_after(tree, timeout=15)
    assert not left, f"left running after the driver was killed: {describe(left)}"
    assert not {s for s in ember_segments() if s.split("-")[2] in pids}

    committed = [d for d in run_dirs(run) if (run / d / "manifest.json").exists()]
    last_step = max(read_json(run, d, "manifest.json")["metrics"]["step"] for d in committed)
    ember.init(num_cpus=2)
    try:
        result = TorchTrainer.restore(str(run), train_loop_config={
            "steps": last_step + 3, "sleep": 0.0}).fit()
    finally:
        ember.shutdown()
    assert result.metrics == {"step": last_step + 2, "start": last_step + 1}
    # The restored run's history starts with the reports of the first driver, up to the
    # checkpoint it resumed from, each step once.
    steps = [m["step"] for m in result.metrics_history]
    assert steps == list(range(last_step + 3))


def test_dataset_pipeline_runs_beside_workers_that_hold_every_cpu(ember_local, tmp_path):
    # 2 workers of 1 CPU on a 2-CPU runtime: the split's read and map tasks must still run
    # (they would wait forever for a CPU if the pipeline planned with the workers' CPUs).
    def loop(config):
        import ember.train as train

        ids = []
        for batch in train.get_dataset_shard("train").iter_batches(batch_size=64):
            ids.extend(int(i) for i in batch["id"])
        train.report({"ids": ids})

    import ember.data as ed

    ds = ed.range(1000, parallelism=8).map_batches(lambda b: {"id": b["id"] * 2})
    result = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=2),
                          run_config=RunConfig(name="run", storage_path=str(tmp_path)),
                          datasets={"train": ds}).fit()
    assert len(result.metrics["ids"]) == 500  # rank 0's equal share
    assert ed.DataContext.get_current().excluded_cpus == 0  # the driver's context is untouched


# -- failures that end in a clear error, with nothing lost (issue 13) -----------------------------
@pytest.fixture
def s3_that_goes_down(monkeypatch):
    """A moto S3 server of this test's own, so that the test can stop it mid-run; botocore's
    own retries are off (``AWS_MAX_ATTEMPTS=1``), so only ember's retries are at work. Yields
    the bucket's URL and the function that stops the server. Request it before
    ``ember_local``: the workers inherit the variables."""
    import socket
    import uuid

    import s3fs
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    stopped = []

    def stop():
        if not stopped:
            stopped.append(True)
            server.stop()

    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                       "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": "testing",
                       "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"ember-test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(bucket)
    try:
        yield f"s3://{bucket}", stop
    finally:
        stop()
        s3fs.S3FileSystem.clear_instance_cache()


def test_storage_outage_mid_run_fails_with_the_result_and_the_workers_error(
        s3_that_goes_down, ember_local, tmp_path):
    import threading
    import time

    url, stop = s3_that_goes_down
    reached, down = tmp_path / "reached_step_1", tmp_path / "storage_down"

    def loop(config):
        import tempfile
        import time

        import ember.train as train

        rank = train.get_context().get_world_rank()
        for step in range(2):
            if step == 1:  # step 0 is committed: wait while the storage goes away
                if rank == 0:
                    open(config["reached"], "w").close()
                while not os.path.exists(config["down"]):
                    time.sleep(0.01)
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "state.json"), "w") as f:
                    f.write(str(step))
                train.report({"step": step}, checkpoint=train.Checkpoint.from_directory(d))

    def take_storage_down():
        deadline = time.monotonic() + 100
        while not reached.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        stop()
        down.touch()

    outage = threading.Thread(target=take_storage_down, daemon=True)
    outage.start()
    trainer = TorchTrainer(
        loop, train_loop_config={"reached": str(reached), "down": str(down)},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="run", storage_path=url,
                             failure_config=FailureConfig(storage_timeout_s=1)))
    with pytest.raises(TrainingFailedError, match=r"uploading 'state\.json'") as info:
        trainer.fit()
    outage.join(timeout=10)

    # the workers' own error is the cause: ember's, naming the upload, retried first
    cause = info.value.__cause__
    assert isinstance(cause, StorageError), repr(cause)
    assert "checkpoint_000001" in str(cause) and "transient error" in str(cause)
    # the result holds what was committed before the outage
    result = info.value.result  # type: ignore[attr-defined]
    assert result.error is cause and result.metrics == {"step": 0}
    assert result.checkpoint is not None and result.checkpoint.index == 0


LATE_WRITER = """
import glob, json, os, sys, time

run_dir, index, done = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + 60
def committed_at_or_past_index():
    return any(int(path.split("checkpoint_")[-1][:6]) >= index
               for path in glob.glob(os.path.join(run_dir, "checkpoint_*", "manifest.json")))
while not committed_at_or_past_index() and time.monotonic() < deadline:
    time.sleep(0.01)
target = os.path.join(run_dir, "checkpoint_%06d" % index, "rank_0")
os.makedirs(target, exist_ok=True)
with open(os.path.join(target, "state.json"), "w") as f:
    json.dump({"step": index, "rank": 0, "pid": "the stopped attempt"}, f)
open(done, "w").close()
"""


def test_a_late_write_of_a_stopped_attempt_never_lands_in_a_committed_checkpoint(
        ember_local, tmp_path):
    """Rank 1 dies while rank 0's upload of the same checkpoint is still on the wire; that
    upload lands after the restarted group has committed again (as an S3 request that was
    already sent completes after its sender died). It must not land in a committed
    checkpoint: the restarted group never uses the index the failed one was writing."""
    import hashlib

    run_dir = tmp_path / "run"
    config = {"steps": 4, "kill_at": 2, "run_dir": str(run_dir), "writer": LATE_WRITER,
              "killed": str(tmp_path / "killed"), "uploading": str(tmp_path / "uploading"),
              "late_done": str(tmp_path / "late_done")}

    def loop(config):
        import json
        import signal
        import subprocess
        import sys
        import tempfile
        import time

        import ember.train as train
        from ember.train import _storage

        rank = train.get_context().get_world_rank()
        start = 0
        checkpoint = train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder, \
                    open(os.path.join(folder, "state.json")) as f:
                start = json.load(f)["step"] + 1
        for step in range(start, config["steps"]):
            if step == config["kill_at"] and not os.path.exists(config["killed"]):
                if rank == 1:
                    while not os.path.exists(config["uploading"]):
                        time.sleep(0.01)
                    open(config["killed"], "w").close()
                    os.kill(os.getpid(), signal.SIGKILL)

                def upload_in_flight(self, local_dir, *parts):
                    subprocess.Popen([sys.executable, "-c", config["writer"], config["run_dir"],
                                      str(config["kill_at"]), config["late_done"]],
                                     start_new_session=True)
                    open(config["uploading"], "w").close()
                    time.sleep(600)  # until the group is stopped

                _storage.Storage.upload_directory = upload_in_flight
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "state.json"), "w") as f:
                    json.dump({"step": step, "rank": rank, "pid": os.getpid()}, f)
                train.report({"step": step, "pid": os.getpid()},
                             checkpoint=train.Checkpoint.from_directory(d))

    result = TorchTrainer(
        loop, train_loop_config=config, scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="run", storage_path=str(tmp_path),
                             failure_config=FailureConfig(max_failures=1))).fit()
    late_done = tmp_path / "late_done"
    deadline = time.monotonic() + 60
    while not late_done.exists():  # the late write has landed (and its writer exited)
        assert time.monotonic() < deadline, "the late write never happened"
        time.sleep(0.05)

    assert result.metrics is not None and result.metrics["step"] == 3
    committed, _ = scan_run(Storage(str(run_dir)))
    assert sorted(m.metrics["step"] for m in committed.values()) == [0, 1, 2, 3]
    for index, manifest in committed.items():  # every committed checkpoint is intact
        for rank, entries in manifest.files.items():
            for entry in entries:
                path = run_dir / f"checkpoint_{index:06d}" / f"rank_{rank}" / entry.path
                assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256, (
                    f"checkpoint {index} rank {rank} was overwritten: {path.read_text()}")
        assert read_json(run_dir, f"checkpoint_{index:06d}", "rank_0", "state.json")["pid"] \
            == manifest.metrics["pid"]


def test_restore_resumes_from_the_checkpoint_before_a_damaged_one(ember_local, tmp_path):
    TorchTrainer(counting_loop, train_loop_config={"steps": 3},
                 scaling_config=ScalingConfig(num_workers=2),
                 run_config=RunConfig(name="run", storage_path=str(tmp_path))).fit()
    shard = tmp_path / "run" / "checkpoint_000002" / "rank_1" / "state.json"
    data = shard.read_bytes()
    damaged = data.replace(b'"rank": 1', b'"rank": 8')
    assert damaged != data and len(damaged) == len(data)
    shard.write_bytes(damaged)  # same size, other bytes: only its sha256 tells

    result = TorchTrainer.restore(str(tmp_path / "run"),
                                  train_loop_config={"steps": 4}).fit()

    assert result.metrics == {"step": 3, "score": 0, "resumed_from": 1}
    assert [m["step"] for m in result.metrics_history] == [0, 1, 2, 3]
    assert shard.read_bytes() == damaged  # kept for inspection, never restored


@pytest.fixture
def own_tmp(monkeypatch, tmp_path):
    """A temporary folder of this test's own for the driver and (request it before
    ``ember_local``) the workers: what a run leaves there is counted exactly."""
    import tempfile

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    # as a fresh shell has it: an earlier test's in-process loop may have pinned the default
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_no_temporary_folder_outlives_the_run(own_tmp, ember_local, tmp_path):
    def loop(config):
        import signal
        import tempfile
        import time

        import ember.train as train

        rank = train.get_context().get_world_rank()
        marker = config["marker"]
        # as a checkpoint's download or an upload's staging folder would be
        with tempfile.TemporaryDirectory(prefix="ember-ckpt-"):
            if config["mode"] == "kill" and rank == 1 and not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
            if config["mode"] == "stop":
                if rank == 0:
                    while not os.path.exists(marker):
                        time.sleep(0.01)
                    raise RuntimeError("rank 0 failed while rank 1 was mid-step")
                open(marker, "w").close()
                time.sleep(600)  # until the group is shut down
            train.report({"tmp": tempfile.gettempdir(),
                          "compile_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR")})

    before = sorted(os.listdir(own_tmp))
    result = TorchTrainer(
        loop, train_loop_config={"mode": "kill", "marker": str(tmp_path / "k")},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="killed", storage_path=str(tmp_path / "store"),
                             failure_config=FailureConfig(max_failures=1))).fit()
    assert (tmp_path / "k").exists()
    assert sorted(os.listdir(own_tmp)) == before
    assert result.metrics is not None and result.metrics["tmp"].startswith(f"{own_tmp}/ember-")
    # torch.compile's cache stays where it was, to outlive the run's temporary folder
    assert result.metrics["compile_cache"] == str(own_tmp / f"torchinductor_{getpass.getuser()}")

    with pytest.raises(TrainingFailedError, match="mid-step"):
        TorchTrainer(loop, train_loop_config={"mode": "stop", "marker": str(tmp_path / "s")},
                     scaling_config=ScalingConfig(num_workers=2),
                     run_config=RunConfig(name="stopped", storage_path=str(tmp_path / "store"))
                     ).fit()
    assert sorted(os.listdir(own_tmp)) == before


# -- Ray's names (issue 15) ---------------------------------------------------------------------
def test_ray_spelled_helpers_and_data_config_in_the_loop(ember_local, tmp_path):
    def loop():
        import torch
        from torch.utils.data import DataLoader

        from ember import train  # no import of ember.train.torch: the workers have it

        train.torch.enable_reproducibility(seed=5)
        first = torch.rand(3).tolist()
        train.torch.enable_reproducibility(seed=5)
        again = torch.rand(3).tolist()
        loader = train.torch.prepare_data_loader(
            DataLoader(list(range(16)), batch_size=4, shuffle=True), True, True, True)
        train.report({
            "same_after_reseeding": first == again,
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "device": str(train.torch.get_device()),
            "order": [int(x) for batch in loader for x in batch],
            "train": list(train.get_dataset_shard("train")),
            "val": list(train.get_dataset_shard("val")),
        })

    result = TorchTrainer(
        loop, scaling_config=ScalingConfig(num_workers=2),
        datasets={"train": list(range(6)), "val": ["a", "b", "c"]},
        dataset_config=DataConfig(datasets_to_split=["train"]),
        run_config=RunConfig(name="run", storage_path=str(tmp_path))).fit()

    metrics = result.metrics
    assert metrics is not None
    assert metrics["same_after_reseeding"] and metrics["deterministic"]
    assert metrics["device"] == "cpu"
    assert len(metrics["order"]) == 8 and len(set(metrics["order"])) == 8  # rank 0's half
    assert metrics["train"] == [0, 2, 4] and metrics["val"] == ["a", "b", "c"]


def test_fail_fast_raise_raises_the_workers_own_error(ember_local, tmp_path):
    def loop():
        raise KeyError("boom in the loop")

    trainer = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=1),
                           run_config=RunConfig(name="run", storage_path=str(tmp_path),
                                                failure_config=FailureConfig(fail_fast="raise")))
    with pytest.raises(KeyError, match="boom in the loop") as info:
        trainer.fit()
    assert not isinstance(info.value, TrainingFailedError)


def test_temp_folders_of_killed_drivers_are_swept(tmp_path):
    # A driver killed mid-run cannot delete its run's temporary folder: the next run does.
    import subprocess
    import sys

    from ember.train._trainer import sweep_temp_folders_of_dead_drivers

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(gone.stdout)
    for name in (f"ember-train-{dead_pid}-abc", f"ember-train-{os.getpid()}-def",
                 "ember-train-notapid", "other"):
        (tmp_path / name / "rank_0").mkdir(parents=True)

    swept = sweep_temp_folders_of_dead_drivers(str(tmp_path))

    assert swept == [str(tmp_path / f"ember-train-{dead_pid}-abc")]
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f"ember-train-{os.getpid()}-def", "ember-train-notapid", "other"])
