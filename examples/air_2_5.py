"""Ray 2.5 training code (the AIR API) running on ember: only ``ray`` became ``ember`` in the
imports.

Run:  .venv/bin/python examples/air_2_5.py [--storage PATH_OR_S3_URL]

The loop below is written as Ray 2.5's docs wrote it: ``session.report`` with a dict checkpoint
(``Checkpoint.from_dict``), ``session.get_checkpoint().to_dict()`` to resume, the dataset shard
from ``session.get_dataset_shard("train")``, prepared by a ``BatchMapper`` preprocessor that the
trainer applies before splitting the data between the 2 workers. Rank 1 kills its own process
once, at the start of epoch 2: the run restarts from epoch 1's checkpoint
(``FailureConfig(max_failures=1)``). It prints, e.g.:

    epoch 0  loss 0.2251  (fresh start)
    epoch 1  loss 0.1965  (fresh start)
    epoch 2  loss 0.0209  (resumed after epoch 1)
    epoch 3  loss 0.0183  (resumed after epoch 1)
    checkpoint /tmp/ember-air-.../air_2_5/checkpoint_000004: epoch 3, keys ['_preprocessor',
      'epoch', 'model', 'optimizer']
    y = 3.0 x + 1.0 learned as y = 2.8 x + 1.2
    preprocessor saved with it: BatchMapper(fn=add_target, batch_format='pandas')

(Epoch 2's checkpoint index was taken by the attempt that died, so the last one is numbered 4.)
About 20 s on 2 idle CPU cores (most of it starting the workers twice and importing torch).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import ember
from ember.air import Checkpoint, RunConfig, ScalingConfig, session
from ember.air.config import CheckpointConfig, FailureConfig
from ember.data.preprocessors import BatchMapper
from ember.train.torch import TorchTrainer


def add_target(df):
    """The preprocessor's function (pandas batches): the label to learn, y = 3x + 1."""
    df["x"] = df["x"] / 16.0
    df["y"] = 3.0 * df["x"] + 1.0
    return df


def train_loop_per_worker(config):
    import torch

    from ember.train.torch import prepare_model

    model = prepare_model(torch.nn.Linear(1, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    start, resumed = 0, None
    checkpoint = session.get_checkpoint()
    if checkpoint:
        state = checkpoint.to_dict()
        model.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"] + 1
        resumed = state["epoch"]

    shard = session.get_dataset_shard("train")
    for epoch in range(start, config["epochs"]):
        if (epoch == config["die_at"] and session.get_world_rank() == 1
                and not os.path.exists(config["marker"])):
            open(config["marker"], "w").close()
            os.kill(os.getpid(), 9)  # a worker lost mid-run: the group restarts
        for _ in range(5):
            for batch in shard.iter_torch_batches(batch_size=4, dtypes=torch.float32):
                loss = torch.nn.functional.mse_loss(model(batch["x"].unsqueeze(1)),
                                                    batch["y"].unsqueeze(1))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():  # the loss over this rank's whole shard, after the epoch
            rows = next(shard.iter_torch_batches(batch_size=None, dtypes=torch.float32))
            loss = torch.nn.functional.mse_loss(model(rows["x"].unsqueeze(1)),
                                                rows["y"].unsqueeze(1))
        session.report({"epoch": epoch, "loss": loss.item(), "resumed_after": resumed},
                       checkpoint=Checkpoint.from_dict({
                           "epoch": epoch, "model": model.module.state_dict(),
                           "optimizer": optimizer.state_dict()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage", default=None,
                        help="where runs go (a folder or s3://...); default: a new temp folder")
    args = parser.parse_args()
    storage = args.storage or tempfile.mkdtemp(prefix="ember-air-")
    marker = os.path.join(tempfile.mkdtemp(prefix="marker-"), "died")

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"epochs": 4, "die_at": 2, "marker": marker},
        scaling_config=ScalingConfig(num_workers=2),
        datasets={"train": ember.data.from_items([{"x": float(i)} for i in range(16)])},
        preprocessor=BatchMapper(add_target, batch_format="pandas"),
        run_config=RunConfig(name="air_2_5", storage_path=storage,
                             checkpoint_config=CheckpointConfig(num_to_keep=1),
                             failure_config=FailureConfig(max_failures=1)))
    result = trainer.fit()
    os.remove(marker)
    os.rmdir(os.path.dirname(marker))

    for row in result.metrics_dataframe.to_dict("records"):
        after = row["resumed_after"]
        how = "fresh start" if after is None or after != after else f"resumed after epoch {after:g}"
        print(f"epoch {row['epoch']}  loss {row['loss']:.4f}  ({how})")
    assert result.checkpoint is not None
    state = result.checkpoint.to_dict()
    print(f"checkpoint {result.checkpoint.path}: epoch {state['epoch']}, keys {sorted(state)}")
    weight, bias = state["model"]["weight"].item(), state["model"]["bias"].item()
    print(f"y = 3.0 x + 1.0 learned as y = {weight:.1f} x + {bias:.1f}")
    print(f"preprocessor saved with it: {result.checkpoint.get_preprocessor()!r}")
    ember.shutdown()


if __name__ == "__main__":
    main()
