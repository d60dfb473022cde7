"""Ray 2.5's AIR names (``ember.air``), dict checkpoints, ``TorchCheckpoint`` and the trainers'
``preprocessor=``: training code written for Ray 2.5, with ``ray`` changed to ``ember``.

Training loops are defined inside the tests: cloudpickle ships them to the workers by value.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import cloudpickle
import pytest

from ember.air import Checkpoint, session
from ember.air.config import (
    CheckpointConfig,
    DatasetConfig,
    FailureConfig,
    RunConfig,
    ScalingConfig,
)
from ember.train.torch import TorchTrainer


def test_the_air_names_are_ember_trains_and_load_neither_torch_nor_pyarrow():
    code = """
import json, sys
from ember.air import session, Checkpoint, RunConfig, ScalingConfig, CheckpointConfig
from ember.air import FailureConfig, Result, DatasetConfig
from ember.air.config import ScalingConfig as S, RunConfig as R, CheckpointConfig as C
from ember.air.config import FailureConfig as F, DatasetConfig as D
from ember.air.checkpoint import Checkpoint as K
import ember.train as train
heavy = [m for m in ("torch", "pyarrow") if m in sys.modules]
config = CheckpointConfig(num_to_keep=1, _checkpoint_keep_all_ranks=True,
                          _checkpoint_upload_from_workers=True)
print(json.dumps([
    heavy,
    [S, R, C, F, D, K] == [train.ScalingConfig, train.RunConfig, train.CheckpointConfig,
                           train.FailureConfig, train.DatasetConfig, train.Checkpoint],
    [Checkpoint, RunConfig, ScalingConfig, Result] == [train.Checkpoint, train.RunConfig,
                                                       train.ScalingConfig, train.Result],
    [config.keep_all_ranks, config.upload_from_workers, config.num_to_keep],
    session.get_checkpoint is train.get_checkpoint,
]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert json.loads(done.stdout) == [[], True, True, [True, True, 1], True]


def test_session_functions_outside_a_training_loop_say_where_they_work():
    with pytest.raises(RuntimeError, match="only inside train_loop_per_worker"):
        session.get_world_rank()
    with pytest.raises(RuntimeError, match="get_dataset_shard\\('train'\\)"):
        session.get_dataset_shard()


# -- Checkpoint.from_dict / to_dict -------------------------------------------------------------
def test_a_dict_checkpoint_round_trips_through_a_folder_and_pickling(tmp_path):
    data = {"epoch": 3, "weights": [0.5, -1.0]}
    checkpoint = Checkpoint.from_dict(data)

    assert checkpoint.to_dict() == data
    written = checkpoint.to_directory(str(tmp_path / "ckpt"))
    assert os.listdir(written) == ["dict_checkpoint.pkl"]
    assert Checkpoint.from_directory(written).to_dict() == data
    with checkpoint.as_directory() as folder:
        assert Checkpoint.from_directory(folder).to_dict() == data
    assert not os.path.exists(folder)  # the temporary folder went with the context
    assert pickle.loads(pickle.dumps(checkpoint)).to_dict() == data


def test_a_folder_checkpoints_to_dict_packs_its_files_as_ray_2_5_did(tmp_path):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "model.pt").write_bytes(b"weights")
    (source / "sub" / "notes.txt").write_text("hello")

    data = Checkpoint.from_directory(str(source)).to_dict()

    assert sorted(data) == ["fs_checkpoint"] and isinstance(data["fs_checkpoint"], bytes)
    back = Checkpoint.from_dict(data).to_directory(str(tmp_path / "back"))
    assert (tmp_path / "back" / "model.pt").read_bytes() == b"weights"
    assert (tmp_path / "back" / "sub" / "notes.txt").read_text() == "hello"
    assert back == str(tmp_path / "back")


def test_torch_checkpoint_holds_a_model_or_a_state_dict():
    import torch

    from ember.data.preprocessors import BatchMapper
    from ember.train.torch import TorchCheckpoint

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    preprocessor = BatchMapper(lambda df: df, batch_format="pandas")

    whole = pickle.loads(cloudpickle.dumps(TorchCheckpoint.from_model(
        model, preprocessor=preprocessor)))
    assert isinstance(whole, TorchCheckpoint)
    restored = whole.get_model()
    assert torch.equal(restored.weight, model.weight) and restored is not model
    assert isinstance(whole.get_preprocessor(), BatchMapper)

    # a DDP-style state dict ("module." prefixes) loads into a bare model
    prefixed = {f"module.{k}": v for k, v in model.state_dict().items()}
    target = torch.nn.Linear(3, 1)
    loaded = TorchCheckpoint.from_state_dict(prefixed).get_model(target)
    assert loaded is target and torch.equal(target.bias, model.bias)
    assert next(iter(prefixed)).startswith("module.")  # the caller's dict is left as it was
    with pytest.raises(ValueError, match="pass the model"):
        TorchCheckpoint.from_state_dict(model.state_dict()).get_model()


# -- in a run -----------------------------------------------------------------------------------
def air_loop(config):
    """Ray 2.5 code, ``ray`` changed to ``ember``: a dict checkpoint every epoch from every rank;
    rank 1 dies once at the start of epoch ``config['kill_at']``."""
    import signal

    from ember.air import Checkpoint, session

    rank = session.get_world_rank()
    start, resumed = 0, None
    checkpoint = session.get_checkpoint()
    if checkpoint:
        state = checkpoint.to_dict()
        assert state["rank"] == rank, "a rank restored another rank's checkpoint"
        start = resumed = state["epoch"] + 1
    for epoch in range(start, config["epochs"]):
        if rank == 1 and epoch == config["kill_at"] and not os.path.exists(config["marker"]):
            open(config["marker"], "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        session.report(
            {"epoch": epoch, "resumed_at": resumed,
             "who": [session.get_world_rank(), session.get_world_size(),
                     session.get_local_rank(), session.get_local_world_size(),
                     session.get_node_rank()],
             "names": [session.get_trial_name(), session.get_experiment_name()],
             "trial_id": session.get_trial_id()},
            checkpoint=Checkpoint.from_dict({"epoch": epoch, "rank": rank,
                                             "weights": [epoch * 0.5, rank]}))


def test_dict_checkpoints_restore_after_a_worker_dies_and_reach_the_driver(
        s3_bucket, ember_local, tmp_path):
    marker = tmp_path / "killed"
    result = TorchTrainer(
        air_loop, train_loop_config={"epochs": 4, "kill_at": 2, "marker": str(marker)},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(
            name="air", storage_path=s3_bucket,
            checkpoint_config=CheckpointConfig(num_to_keep=1, _checkpoint_keep_all_ranks=True,
                                               _checkpoint_upload_from_workers=True),
            failure_config=FailureConfig(max_failures=1))).fit()

    assert marker.exists(), "the fault was never injected"
    # the restarted ranks resumed from epoch 1's dict checkpoint, each from its own
    assert list(result.metrics_dataframe["resumed_at"].fillna(-1)) == [-1, -1, 2, 2]
    assert result.metrics is not None
    assert result.metrics["who"] == [0, 2, 0, 2, 0]
    assert result.metrics["names"] == ["air", "air"]
    trial_ids = set(result.metrics_dataframe["trial_id"])
    assert len(trial_ids) == 1 and next(iter(trial_ids)).endswith("_00000")  # across restarts
    assert result.checkpoint is not None
    assert result.checkpoint.to_dict() == {"epoch": 3, "rank": 0, "weights": [1.5, 0]}
    assert result.checkpoint.for_rank(1).to_dict() == {"epoch": 3, "rank": 1,
                                                       "weights": [1.5, 1]}
    assert result.path == f"{s3_bucket}/air"


def test_the_trial_dir_of_a_local_run_is_its_folder_for_the_loops_own_files(
        ember_local, tmp_path):
    def loop():
        from ember.air import session

        folder = session.get_trial_dir()
        with open(os.path.join(folder, f"log_{session.get_world_rank()}.txt"), "w") as f:
            f.write("step 1")
        session.report({"dir": folder, "id": session.get_trial_id()})

    result = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=2),
                          run_config=RunConfig(name="logs", storage_path=str(tmp_path))).fit()
    assert result.metrics["dir"] == str(tmp_path / "logs")
    assert sorted(p.name for p in (tmp_path / "logs").glob("log_*.txt")) == [
        "log_0.txt", "log_1.txt"]
    assert result.metrics["id"].endswith("_00000")


def test_torch_checkpoint_reported_in_a_run_gives_the_model_back(ember_local, tmp_path):
    def loop():
        import torch

        from ember.air import session
        from ember.train.torch import TorchCheckpoint, prepare_model

        torch.manual_seed(1)
        model = prepare_model(torch.nn.Linear(2, 1))  # DDP: its state dict has "module."
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(2):
            optimizer.zero_grad()
            model(torch.ones(4, 2)).sum().backward()
            optimizer.step()
            session.report({"step": step,
                            "weight": model.module.weight.detach().flatten().tolist()},
                           checkpoint=TorchCheckpoint.from_state_dict(model.state_dict()))

    import torch

    from ember.train.torch import TorchCheckpoint

    result = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=2),
                          run_config=RunConfig(name="torch", storage_path=str(tmp_path))).fit()

    assert result.checkpoint is not None and result.metrics is not None
    model = TorchCheckpoint.from_checkpoint(result.checkpoint).get_model(torch.nn.Linear(2, 1))
    assert model.weight.flatten().tolist() == pytest.approx(result.metrics["weight"])


def make_center():
    """A fittable preprocessor: subtracts the mean of ``x`` that ``fit`` saw."""
    from ember.data.preprocessors import Preprocessor

    class CenterX(Preprocessor):
        def _fit(self, ds):
            self.mean_ = float(ds.to_pandas()["x"].mean())
            return self

        def _transform_pandas(self, df):
            df["x"] = df["x"] - self.mean_
            return df

    return CenterX()


def test_the_preprocessor_is_fit_on_train_applied_before_the_split_and_saved(
        ember_local, tmp_path):
    import ember
    from ember.data.preprocessors import BatchMapper, Chain

    def double(batch):
        batch["y"] = batch["x"] * 2
        return batch

    def loop():
        from ember.air import Checkpoint, session

        session.report({"train": sorted(r["y"] for r in
                                        session.get_dataset_shard("train").iter_rows()),
                        "valid": sorted(r["y"] for r in
                                        session.get_dataset_shard("valid").iter_rows()),
                        "raw": sorted(r["x"] for r in
                                      session.get_dataset_shard("raw").iter_rows())},
                       checkpoint=Checkpoint.from_dict({"rank": session.get_world_rank()}))

    preprocessor = Chain(make_center(), BatchMapper(double, batch_format="numpy"))
    result = TorchTrainer(
        loop, scaling_config=ScalingConfig(num_workers=2),
        datasets={"train": ember.data.from_items([{"x": float(i)} for i in range(8)]),
                  "valid": ember.data.from_items([{"x": 100.0}, {"x": 102.0}]),
                  "raw": ember.data.from_items([{"x": 1.0}, {"x": 2.0}])},
        dataset_config={"raw": DatasetConfig(transform=False)},  # Ray 2.5's form
        preprocessor=preprocessor,
        run_config=RunConfig(name="pre", storage_path=str(tmp_path))).fit()

    metrics = result.metrics
    assert metrics is not None
    # fit on train (mean 3.5), then x -> (x - 3.5) * 2; train split between the 2 ranks
    assert len(metrics["train"]) == 4
    assert set(metrics["train"]) <= {(i - 3.5) * 2 for i in range(8)}
    # Ray 2.5's defaults: only "train" is split; "valid" is transformed with train's mean
    assert metrics["valid"] == [193.0, 197.0]
    assert metrics["raw"] == [1.0, 2.0]  # DatasetConfig(transform=False)
    assert result.checkpoint is not None
    saved = result.checkpoint.get_preprocessor()
    assert isinstance(saved, Chain) and saved.preprocessors[0].mean_ == 3.5
    assert list(saved.transform_batch({"x": [4.5]})["y"]) == [2.0]
    data = result.checkpoint.to_dict()  # Ray 2.5 kept it in the dict, under "_preprocessor"
    assert data["rank"] == 0 and isinstance(data["_preprocessor"], Chain)


def test_ray_2_5_dataset_configs_are_checked():
    with pytest.raises(ValueError, match="'valid' as required"):
        TorchTrainer(lambda: None, scaling_config=ScalingConfig(num_workers=1),
                     datasets={"train": [1]},
                     dataset_config={"valid": DatasetConfig(required=True)})
    with pytest.raises(ValueError, match="fit=True for 'a', 'train'"):
        TorchTrainer(lambda: None, scaling_config=ScalingConfig(num_workers=1),
                     datasets={"train": [1], "a": [2]},
                     dataset_config={"a": DatasetConfig(fit=True)})
    with pytest.raises(TypeError, match="preprocessor must be"):
        TorchTrainer(lambda: None, scaling_config=ScalingConfig(num_workers=1),
                     preprocessor=lambda batch: batch)


def test_a_preprocessor_needs_datasets_it_can_transform(tmp_path):
    from ember.data.preprocessors import BatchMapper

    trainer = TorchTrainer(lambda: None, scaling_config=ScalingConfig(num_workers=1),
                           datasets={"train": [1, 2]},
                           preprocessor=BatchMapper(lambda df: df, batch_format="pandas"),
                           run_config=RunConfig(name="bad", storage_path=str(tmp_path)))
    with pytest.raises(TypeError, match=r"datasets\['train'\] is a list"):
        trainer.fit()


def test_accelerate_trainer_takes_a_preprocessor(ember_local, tmp_path):
    import ember
    from ember.data.preprocessors import BatchMapper
    from ember.train.huggingface import AccelerateTrainer

    def square(df):
        df["sq"] = df["id"] ** 2
        return df

    def loop():
        from ember.air import session

        session.report({"sq": sorted(r["sq"] for r in
                                     session.get_dataset_shard("train").iter_rows())})

    result = AccelerateTrainer(loop, scaling_config=ScalingConfig(num_workers=2),
                               datasets={"train": ember.data.range(6)},
                               preprocessor=BatchMapper(square, batch_format="pandas"),
                               run_config=RunConfig(name="acc", storage_path=str(tmp_path))
                               ).fit()

    assert result.metrics is not None
    assert len(result.metrics["sq"]) == 3 and set(result.metrics["sq"]) <= {0, 1, 4, 9, 16, 25}
