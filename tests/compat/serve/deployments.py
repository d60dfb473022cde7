# compat: topic doc/source/serve/key-concepts.md (deployments, applications, replicas)
"""A deployment class with two replicas, reached over HTTP and through the handle that
serve.run returns; constructor arguments come from bind()."""

import ray
import requests
from ray import serve

ray.init(num_cpus=4)


@serve.deployment(num_replicas=2)
class Greeter:
    def __init__(self, greeting):
        self.greeting = greeting

    def greet(self, name):
        return f"{self.greeting}, {name}!"

    def replica(self):
        return serve.get_replica_context().replica_tag

    async def __call__(self, request):
        return self.greet(request.query_params.get("name", "world"))


handle = serve.run(Greeter.bind("Hello"))

reply = requests.get("http://127.0.0.1:8000/", params={"name": "Ada"}, timeout=30)
assert reply.status_code == 200, reply.status_code
assert reply.text == "Hello, Ada!", reply.text
assert requests.get("http://127.0.0.1:8000/", timeout=30).text == "Hello, world!"

# A handle calls any method; .result() waits for the value.
assert handle.greet.remote("Grace").result() == "Hello, Grace!"

# Both replicas take calls.
seen = {handle.replica.remote().result() for _ in range(40)}
assert len(seen) == 2, seen

serve.shutdown()
ray.shutdown()
print("deployments ok")
