"""What a new user does first, run from an installed wheel in a fresh venv outside the repository.

tests/packaging/test_wheel.py runs it; each step prints one ``ok ...`` line that the test checks.
"""

from __future__ import annotations

import os
import tempfile

import httpx

import ember
import ember.data
import ember.train
from ember import serve
from ember.train import RunConfig, ScalingConfig
from ember.train.torch import TorchTrainer


def main() -> None:
    print("ember from", os.path.dirname(ember.__file__))
    ember.init(num_cpus=2)

    @ember.remote
    def square(x: int) -> int:
        return x * x

    @ember.remote
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def add(self, k: int) -> int:
            self.n += k
            return self.n

    print("ok task", ember.get([square.remote(i) for i in range(4)]))
    counter = Counter.remote()
    counter.add.remote(2)
    print("ok actor", ember.get(counter.add.remote(3)))

    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "parquet")
        ember.data.range(1000).map_batches(lambda b: {"id": b["id"], "sq": b["id"] ** 2}) \
            .write_parquet(out)
        back = ember.data.read_parquet(out)
        print("ok data", back.count(), sum(int(row["sq"]) for row in back.iter_rows()))

        @serve.deployment
        def hello(request) -> str:
            return f"hello {request.query_params['name']}"

        serve.run(hello.bind(), port=0, name="smoke")
        port = serve.status().http_port
        response = httpx.get(f"http://127.0.0.1:{port}/?name=wheel", timeout=30)
        response.raise_for_status()
        print("ok serve", response.text)
        serve.shutdown()

        def loop(config: dict) -> None:
            import torch
            import torch.distributed as dist

            from ember.train.torch import prepare_model

            model = prepare_model(torch.nn.Linear(4, 1))
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            loss = model(torch.ones(8, 4)).pow(2).mean()
            loss.backward()
            opt.step()
            ember.train.report({"loss": float(loss.detach()), "world": dist.get_world_size()})

        result = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=2),
                              run_config=RunConfig(name="smoke", storage_path=folder)).fit()
        print("ok train", result.metrics["world"])
    ember.shutdown()


if __name__ == "__main__":
    main()
