"""Batch inference with ember.data: a "model" on a pool of actors over a streamed dataset.

Run it from the repository root::

    .venv/bin/python examples/data_batch_inference.py [--quick]

It writes 8 Parquet files of 10,000 feature rows (``--quick``, what CI runs: 1,000) to a
temporary folder, streams them through a small torch model on an actor pool of 2 (the model is
built once per actor), writes the predictions back as Parquet, and prints a few predictions,
the row count and ``ds.stats()`` (per-operator time, rows, bytes and peak memory), e.g.::

    id=  7000  score=+0.2193
    ...
    80000 predictions written to /tmp/ember-inference-.../predictions
    Operator 0 ReadParquet: 8 tasks, 80000 rows, 3.1 MiB output
    ...

It takes a few seconds on 2 CPUs.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

import ember


class Predictor:
    """Built once per actor: load (here: make) the model, then score batch after batch."""

    def __init__(self, num_features: int) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(num_features, 16), torch.nn.ReLU(),
                                         torch.nn.Linear(16, 1)).eval()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            scores = self.model(torch.as_tensor(batch["features"], dtype=torch.float32))
        return {"id": batch["id"], "score": scores.squeeze(1).numpy()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8,000 rows instead of 80,000")
    rows = 8_000 if parser.parse_args().quick else 80_000
    ember.init(num_cpus=2)
    workdir = tempfile.mkdtemp(prefix="ember-inference-")

    # 1. Some input data: 80,000 rows of 4 features, as 8 Parquet files.
    def features(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(int(batch["id"][0]))
        return {"id": batch["id"], "features": rng.normal(size=(len(batch["id"]), 4))}

    (ember.data.range(rows, parallelism=8).map_batches(features)
        .write_parquet(f"{workdir}/features"))

    # 2. Read -> model on 2 actors -> write. Nothing runs until write_parquet pulls it through.
    predictions = ember.data.read_parquet(f"{workdir}/features").map_batches(
        Predictor,
        compute=ember.data.ActorPoolStrategy(size=2),  # as many actors as CPUs: reads still run
        fn_constructor_args=(4,),
        batch_size=1024,
    )
    predictions.write_parquet(f"{workdir}/predictions")

    # 3. Look at the results.
    out = ember.data.read_parquet(f"{workdir}/predictions")
    for row in out.take(3):
        print(f"id={row['id']:>6}  score={row['score']:+.4f}")
    print(f"{out.count()} predictions written to {workdir}/predictions")
    print(predictions.stats())
    ember.shutdown()


if __name__ == "__main__":
    main()
