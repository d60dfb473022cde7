"""Ray 2.5's deployment graphs (``ember/serve/_graph.py``, ``drivers.py``, ``http_adapters.py``):
``InputNode``, method and function nodes, ``DAGDriver`` over HTTP and through its handle.

HTTP goes only to 127.0.0.1 on a port the proxy picked (``port=0``). Deployments are defined
inside each test, so they ship by value.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import numpy as np
import pytest

import ember
from ember import serve
from ember.serve.dag import InputNode
from ember.serve.drivers import DAGDriver
from ember.serve.http_adapters import (
    NdArray,
    json_request,
    json_to_multi_ndarray,
    json_to_ndarray,
)
from tests.serve._support import TIMEOUT, url

pytestmark = pytest.mark.usefixtures("serve_instance")



def two_models() -> tuple[Any, Any, Any]:
    """ModelA adds 1, ModelB multiplies by 10 and reports its pid; combine lists both and how
    many times ModelA's replica ran (a node used twice must run once per request)."""

    @serve.deployment
    class ModelA:
        def __init__(self) -> None:
            self.calls = 0

        def forward(self, x: int) -> int:
            self.calls += 1
            return x + 1

        def count(self, _: Any = None) -> int:
            return self.calls

    @serve.deployment
    class ModelB:
        def forward(self, x: int) -> dict[str, int]:
            return {"value": x * 10, "pid": os.getpid()}

    @serve.deployment
    def combine(x: int, y: dict[str, int]) -> dict[str, Any]:
        return {"x": x, "y": y["value"], "b_pid": y["pid"], "combine_pid": os.getpid()}

    return ModelA, ModelB, combine


def test_a_two_model_graph_answers_http_and_its_handle_each_node_on_its_replicas() -> None:
    ModelA, ModelB, combine = two_models()
    with InputNode() as user_input:
        a = ModelA.bind()
        b = ModelB.bind()
        x = a.forward.bind(user_input)  # used by b and by combine: computed once per request
        y = b.forward.bind(x)
        combined = combine.bind(x, y)
    handle = serve.run(DAGDriver.bind(combined, http_adapter=json_request), port=0)

    out = ember.get(handle.predict.remote(3))  # Ray 2.5: ray.get(handle.predict.remote(3))
    assert (out["x"], out["y"]) == (4, 40)
    pids = {out["b_pid"], out["combine_pid"], os.getpid()}
    assert len(pids) == 3  # ModelB and combine ran in replicas of their own, not here
    assert ember.get([handle.predict.remote(i) for i in range(3)])[2]["y"] == 30

    with httpx.Client(timeout=TIMEOUT) as client:
        r = client.post(url("/"), json=5)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert (r.json()["x"], r.json()["y"]) == (6, 60)
    # Five requests, each sending ModelA one call although two nodes use its result.
    count = serve.get_deployment_handle("ModelA").count.remote()
    assert count.result(timeout_s=20) == 5
    assert set(serve.status().applications["default"].deployments) == {
        "ModelA", "ModelB", "combine", "DAGDriver"}


def test_several_inputs_by_position_key_and_attribute() -> None:
    @serve.deployment
    class Calc:
        def add(self, a: int, b: int) -> int:
            return a + b

        def scale(self, value: int, factor: int) -> int:
            return value * factor

    with InputNode() as inputs:
        calc = Calc.bind()
        total = calc.add.bind(inputs[0], inputs[1])
        graph = calc.scale.bind(total, inputs["factor"])
    handle = serve.run(DAGDriver.bind(graph), port=0)
    assert handle.predict.remote(1, 2, factor=10).result(timeout_s=20) == 30

    with InputNode() as one:  # one argument: indexing and attributes reach into it
        graph = Calc.options(name="calc2").bind().add.bind(one["a"], one["b"])
    handle = serve.run(DAGDriver.bind(graph), name="one", route_prefix="/one", port=0)
    assert ember.get(handle.predict.remote({"a": 4, "b": 5})) == 9
    with httpx.Client(timeout=TIMEOUT) as client:  # the default adapter hands the Request
        r = client.post(url("/one"), json={"a": 1, "b": 2})
        assert r.status_code == 500  # a Request cannot be indexed: the graph's own failure


def test_a_dict_driver_routes_by_path_over_http_and_predict_with_route() -> None:
    @serve.deployment
    def double(x: int) -> int:
        return 2 * x

    @serve.deployment
    def negate(x: int) -> int:
        return -x

    @serve.deployment
    def say(x: int) -> str:
        return f"got {x}"

    with InputNode() as user_input:
        graph_a = double.bind(user_input)
        graph_b = negate.bind(double.bind(user_input))
    app = DAGDriver.bind({"/double": graph_a, "/negate": graph_b, "/say": say.bind(user_input)},
                         http_adapter=json_request)
    handle = serve.run(app, route_prefix="/math", port=0)

    assert ember.get(handle.predict_with_route.remote("/negate", 4)) == -8
    with httpx.Client(timeout=TIMEOUT) as client:
        assert client.post(url("/math/double"), json=21).json() == 42
        assert client.post(url("/math/negate"), json=3).json() == -6
        said = client.post(url("/math/say"), json=1)  # JSON, as Ray's FastAPI driver sent it
        assert said.headers["content-type"] == "application/json" and said.json() == "got 1"
        missing = client.post(url("/math/other"), json=3)
        assert missing.status_code == 404 and "/double" in missing.json()["detail"]
    with pytest.raises(ValueError, match=r"several graphs.*predict_with_route"):
        handle.predict.remote(1).result(timeout_s=20)


def test_bad_adapter_input_is_a_422_that_says_what_was_wrong() -> None:
    @serve.deployment
    def total(arrays: dict[str, Any]) -> float:
        return float(sum(a.sum() for a in arrays.values()))

    with InputNode() as user_input:
        graph = total.bind(user_input)
    serve.run(DAGDriver.bind(graph, http_adapter=json_to_multi_ndarray), port=0)
    with httpx.Client(timeout=TIMEOUT) as client:
        good = client.post(url("/"), json={"a": {"array": [1, 2]},
                                           "b": {"array": [1, 2, 3, 4], "shape": [2, 2]}})
        assert good.status_code == 200 and good.json() == 13.0
        not_json = client.post(url("/"), content=b"{oops")
        assert not_json.status_code == 422
        [error] = not_json.json()["detail"]  # FastAPI's shape, as Ray's driver answered
        assert error["type"] == "json_invalid" and "send a JSON body" in error["msg"]
        wrong = client.post(url("/"), json={"a": {"values": [1]}})
        assert wrong.status_code == 422
        [error] = wrong.json()["detail"]
        assert error["loc"] == ["body", "a", "array"] and error["type"] == "missing"


def test_query_parameter_and_uploaded_image_adapters_over_http() -> None:
    import io

    from PIL import Image

    from ember.serve.http_adapters import image_to_ndarray

    def parse_query_args(field_a: int, field_b: str) -> dict[str, Any]:  # Ray 2.5's docs
        return {"a": field_a, "b": field_b}

    @serve.deployment
    def describe(x: Any) -> Any:
        return list(x.shape) if hasattr(x, "shape") else x

    with InputNode() as user_input:
        graph = describe.bind(user_input)
    serve.run(DAGDriver.bind(graph, http_adapter=parse_query_args), name="query", port=0)
    serve.run(DAGDriver.bind(graph, http_adapter=image_to_ndarray),
              name="images", route_prefix="/image", port=0)
    png = io.BytesIO()
    Image.new("RGB", (5, 3)).save(png, format="PNG")
    with httpx.Client(timeout=TIMEOUT) as client:
        assert client.get(url("/?field_a=3&field_b=x")).json() == {"a": 3, "b": "x"}
        bad = client.get(url("/?field_a=three"))
        assert bad.status_code == 422
        assert [(e["loc"], e["type"]) for e in bad.json()["detail"]] == [
            (["query", "field_a"], "int_parsing"), (["query", "field_b"], "missing")]
        # Ray's clients upload the image as the form field "img"; a bare body works too
        form = client.post(url("/image"), files={"img": ("a.png", png.getvalue(), "image/png")})
        assert form.status_code == 200 and form.json() == [3, 5, 3]
        assert client.post(url("/image"), content=png.getvalue()).json() == [3, 5, 3]


def test_an_exception_in_a_node_is_a_500_with_the_request_id_and_raised_by_the_handle() -> None:
    @serve.deployment
    class Fragile:
        def forward(self, x: int) -> int:
            if x < 0:
                raise ValueError(f"negative input {x}")
            return x

    with InputNode() as user_input:
        graph = Fragile.bind().forward.bind(user_input)
    handle = serve.run(DAGDriver.bind(graph, http_adapter=json_request), port=0)
    with pytest.raises(ValueError, match="negative input -1"):
        ember.get(handle.predict.remote(-1))
    with httpx.Client(timeout=TIMEOUT) as client:
        r = client.post(url("/"), json=-2)
        assert r.status_code == 500
        request_id = r.headers["x-request-id"]
        assert request_id and f"request id {request_id}" in r.text
        assert client.post(url("/"), json=2).json() == 2


def test_graph_nodes_are_refused_where_they_cannot_run() -> None:
    @serve.deployment
    def echo(x: Any) -> Any:
        return x

    with InputNode() as user_input:
        node = echo.bind(user_input)
    with pytest.raises(TypeError, match=r"serve.run\(DAGDriver.bind\(graph\)\)"):
        serve.run(node)
    with pytest.raises(TypeError, match=r"use \.forward\.bind\(\.\.\.\)"):
        echo.bind().forward()


def test_ndarray_adapters_build_arrays_from_their_json_models() -> None:
    array = json_to_ndarray(NdArray(array=[1, 2, 3, 4], shape=[2, 2], dtype="float32"))
    assert array.dtype == np.float32 and array.tolist() == [[1, 2], [3, 4]]
    arrays = json_to_multi_ndarray({"x": NdArray(array=[[1], [2]])})
    assert arrays["x"].shape == (2, 1)


def test_input_node_is_ray_dag_input_node_too() -> None:
    import ember.dag

    assert ember.dag.InputNode is InputNode
    node = InputNode()
    assert repr(node[0]) == "InputAttributeNode(InputNode()[0])"
    assert repr(node.text) == "InputAttributeNode(InputNode().text)"
