"""A Ray 2.5 deployment graph, run by ember.serve with only ``ray`` -> ``ember`` in the imports.

Run it from the repository root::

    .venv/bin/python examples/serve_graph_2_5.py

Two models and a function deployment form a graph behind a ``DAGDriver`` with the
``json_request`` adapter; a second driver routes two graphs by path. It prints:

 1. the graph through its handle, the Ray 2.5 way: ``ember.get(handle.predict.remote(3))``,
    and a list of calls with ``ember.get([...])``;
 2. the same graph over HTTP: ``POST /`` with a JSON body;
 3. a JSON body that is not JSON: a 422 that says so;
 4. a driver routing by path (``/calc/add`` and ``/calc/scale``), a graph of two inputs each
    (``InputNode()[0]``, ``InputNode()[1]``).

Ray 2.5 wrote the same with ``import ray``, ``from ray import serve``,
``from ray.serve.dag import InputNode``, ``from ray.serve.drivers import DAGDriver`` and
``from ray.serve.http_adapters import json_request``, and ``ray.get`` for ``ember.get``.
"""

from __future__ import annotations

import httpx

import ember
from ember import serve
from ember.serve.dag import InputNode
from ember.serve.drivers import DAGDriver
from ember.serve.http_adapters import json_request


@serve.deployment
class Preprocess:
    def __init__(self, offset: int) -> None:
        self.offset = offset

    def forward(self, x: int) -> int:
        return x + self.offset


@serve.deployment
class Model:
    def __init__(self, weight: int) -> None:
        self.weight = weight

    def forward(self, x: int) -> int:
        return x * self.weight


@serve.deployment
def combine(features: int, prediction: int) -> dict[str, int]:
    return {"features": features, "prediction": prediction}


@serve.deployment
class Calculator:
    def add(self, a: float, b: float) -> float:
        return a + b

    def scale(self, a: float, b: float) -> float:
        return a * b


def main() -> None:
    ember.init(num_cpus=2)
    try:
        with InputNode() as user_input:
            preprocess = Preprocess.bind(1)
            model = Model.bind(10)
            features = preprocess.forward.bind(user_input)  # used twice, computed once
            prediction = model.forward.bind(features)
            graph = combine.bind(features, prediction)
        handle = serve.run(DAGDriver.bind(graph, http_adapter=json_request), port=0)
        port = serve.status().http_port

        print("1. through the handle, as in Ray 2.5")
        print(f"   ember.get(handle.predict.remote(3)) = {ember.get(handle.predict.remote(3))}")
        many = ember.get([handle.predict.remote(i) for i in range(3)])
        print(f"   predictions for 0, 1, 2: {[m['prediction'] for m in many]}")

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            print("2. over HTTP")
            reply = client.post("/", json=4)
            print(f"   POST / 4 -> {reply.status_code} {reply.json()}")
            print("3. a body that is not JSON")
            bad = client.post("/", content=b"four")
            print(f"   POST / four -> {bad.status_code} {bad.json()['detail'].split(' (')[0]}")

            with InputNode() as pair:
                calculator = Calculator.bind()
                routes = {"/add": calculator.add.bind(pair[0], pair[1]),
                          "/scale": calculator.scale.bind(pair[0], pair[1])}
            calc = serve.run(DAGDriver.bind(routes, http_adapter=json_request), name="calc",
                             route_prefix="/calc", port=0)
            print("4. a driver routing two graphs by path")
            print(f"   predict_with_route('/add', 2, 3) = "
                  f"{ember.get(calc.predict_with_route.remote('/add', 2, 3))}")
            scaled = client.post("/calc/scale", json=[2, 3]).json()
            print(f"   POST /calc/scale [2, 3] -> {scaled}")
    finally:
        serve.shutdown()
        ember.shutdown()


if __name__ == "__main__":
    main()
