# compat: topic doc/source/serve/production-guide/fault-tolerance.md (Serve controller failure)
# compat: expect controller came back
# compat: timeout 180
"""The Serve controller is killed and restarted: the application keeps answering through it
all (same replica), and serve.status and new deployments work again afterwards."""

import os
import time

import ray
import requests
from ray import serve

ray.init(num_cpus=2)


@serve.deployment
class Hello:
    def __call__(self, request=None):
        return f"hello from {os.getpid()}"


handle = serve.run(Hello.bind())
first = requests.get("http://127.0.0.1:8000/", timeout=30).text
assert first.startswith("hello from ")

controller = ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
ray.kill(controller, no_restart=False)

for _ in range(10):  # served throughout, by the replica that was there before
    assert requests.get("http://127.0.0.1:8000/", timeout=30).text == first
assert handle.remote().result(timeout_s=60) == first

deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        if serve.status().applications["default"].status == "RUNNING":
            break
    except Exception:  # the controller is still coming back
        pass
    time.sleep(0.5)
assert serve.status().applications["default"].status == "RUNNING"


@serve.deployment
def later(request=None):
    return "later"


serve.run(later.bind(), name="later", route_prefix="/later")
assert requests.get("http://127.0.0.1:8000/later", timeout=30).text == "later"
assert requests.get("http://127.0.0.1:8000/", timeout=30).text == first

serve.shutdown()
ray.shutdown()
print("controller came back")
