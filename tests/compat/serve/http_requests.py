# compat: topic doc/source/serve/http-guide.md (Starlette requests and responses)
"""A plain deployment receives a Starlette Request: query parameters, a JSON body, headers;
it returns a str, a dict, a list, a number or a Starlette Response, and Serve sends each."""

import ray
import requests
from ray import serve
from starlette.requests import Request
from starlette.responses import PlainTextResponse

ray.init(num_cpus=2)


@serve.deployment
class Echo:
    async def __call__(self, request: Request):
        kind = request.query_params.get("kind", "text")
        if kind == "text":
            return "plain"
        if kind == "dict":
            body = await request.json()
            return {"got": body, "method": request.method}
        if kind == "list":
            return [1, 2, 3]
        if kind == "number":
            return 42
        if kind == "params":
            return request.query_params
        if kind == "header":
            return {"agent": request.headers.get("x-agent")}
        return PlainTextResponse("teapot", status_code=418)


serve.run(Echo.bind(), route_prefix="/echo")
url = "http://127.0.0.1:8000/echo"

assert requests.get(url, timeout=30).text == "plain"
assert requests.post(url, params={"kind": "dict"}, json={"a": [1, 2]}, timeout=30).json() == {
    "got": {"a": [1, 2]}, "method": "POST"}
assert requests.get(url, params={"kind": "list"}, timeout=30).json() == [1, 2, 3]
assert requests.get(url, params={"kind": "number"}, timeout=30).json() == 42
assert requests.get(url, params={"kind": "params", "x": "1"}, timeout=30).json() == {
    "kind": "params", "x": "1"}
assert requests.get(url, params={"kind": "header"}, headers={"x-agent": "t"},
                    timeout=30).json() == {"agent": "t"}
teapot = requests.get(url, params={"kind": "other"}, timeout=30)
assert (teapot.status_code, teapot.text) == (418, "teapot")

# Every response carries a request id; one the client sent comes back.
assert requests.get(url, timeout=30).headers.get("x-request-id")
sent = requests.get(url, headers={"x-request-id": "my-id-123"}, timeout=30)
assert sent.headers["x-request-id"] == "my-id-123"

serve.shutdown()
ray.shutdown()
print("http requests ok")
