# compat: topic doc/source/serve/api/index.md (serve.status, serve.delete)
"""serve.status reports each application and deployment as RUNNING with its replicas;
serve.delete removes one application and its route, leaving the others."""

import ray
import requests
from ray import serve
from ray.serve.schema import ApplicationStatus

ray.init(num_cpus=4)


@serve.deployment(num_replicas=2)
def hello(request=None):
    return "hello"


@serve.deployment
def bye(request=None):
    return "bye"


serve.run(hello.bind(), name="hello", route_prefix="/hello")
serve.run(bye.bind(), name="bye", route_prefix="/bye")

status = serve.status()
assert set(status.applications) == {"hello", "bye"}
app = status.applications["hello"]
assert app.status == ApplicationStatus.RUNNING == "RUNNING", app.status
deployment = app.deployments["hello"]
assert deployment.status == "HEALTHY", deployment.status
assert deployment.replica_states == {"RUNNING": 2}, deployment.replica_states

assert requests.get("http://127.0.0.1:8000/hello", timeout=30).text == "hello"
serve.delete("hello")
assert set(serve.status().applications) == {"bye"}
assert requests.get("http://127.0.0.1:8000/hello", timeout=30).status_code == 404
assert requests.get("http://127.0.0.1:8000/bye", timeout=30).text == "bye"

serve.shutdown()
ray.shutdown()
print("status and delete ok")
