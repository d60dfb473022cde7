"""The dashboard's ``"train"`` view of a run: workers, one event per report (the loss curve),
checkpoints with their committed state and size, retention's deletions, the outcome."""

from __future__ import annotations

import os

from ember.dashboard import _server
from ember.testing import eventually
from ember.train import Checkpoint, CheckpointConfig, RunConfig, ScalingConfig
from ember.train.torch import TorchTrainer


def loop(config):
    import tempfile

    import ember.train as train

    for step in range(config["steps"]):
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "weights.bin"), "wb") as f:
                f.write(b"w" * 1000)
            train.report({"loss": 1.0 / (step + 1), "step": step},
                         checkpoint=Checkpoint.from_directory(folder))


def test_a_run_shows_its_loss_points_and_checkpoints(ember_local, tmp_path):
    result = TorchTrainer(
        loop, train_loop_config={"steps": 4}, scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="observed", storage_path=str(tmp_path),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    ).fit()
    assert result.error is None

    service = _server.current()
    assert service is not None
    view = eventually(lambda: service.views("train").get("observed"), what="the run's view")
    state = view["state"]
    assert (state["status"], state["trainer"], state["num_workers"]) == ("finished",
                                                                         "TorchTrainer", 2)
    assert [e["metrics"]["loss"] for e in view["events"]] == [1.0, 0.5, 1 / 3, 0.25]
    assert [e["report"] for e in view["events"]] == [1, 2, 3, 4]
    checkpoints = state["checkpoints"]
    assert [c["index"] for c in checkpoints] == [0, 1, 2, 3]
    assert all(c["committed"] and c["size_bytes"] == 2000 for c in checkpoints)  # 2 ranks
    assert [c["deleted"] for c in checkpoints] == [True, True, False, False]  # num_to_keep=2
    assert state["last_metrics"] == {"loss": 0.25, "step": 3.0}
