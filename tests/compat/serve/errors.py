# compat: topic doc/source/serve/monitoring.md (exceptions in deployments)
"""An exception raised in a replica reaches a handle caller as that exception type, and an
HTTP caller as a 500; the replica keeps serving afterwards."""

import ray
import requests
from ray import serve

ray.init(num_cpus=2)


class QuotaExceeded(Exception):
    pass


@serve.deployment
class Quota:
    def __init__(self):
        self.used = 0

    def take(self, n):
        if self.used + n > 10:
            raise QuotaExceeded(f"only {10 - self.used} left")
        self.used += n
        return self.used

    def __call__(self, request):
        return str(self.take(int(request.query_params["n"])))


handle = serve.run(Quota.bind())
assert handle.take.remote(4).result() == 4

try:
    handle.take.remote(100).result()
except QuotaExceeded as error:
    assert "only 6 left" in str(error)
else:
    raise AssertionError("the replica's exception was not raised")

try:
    handle.take.remote(100).result()
except ray.exceptions.RayTaskError as error:
    assert "QuotaExceeded" in str(error)

assert requests.get("http://127.0.0.1:8000/", params={"n": 100}, timeout=30).status_code == 500
assert requests.get("http://127.0.0.1:8000/", params={"n": 1}, timeout=30).text == "5"

serve.shutdown()
ray.shutdown()
print("errors ok")
