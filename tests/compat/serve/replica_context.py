# compat: topic doc/source/serve/api/index.md (serve.get_replica_context)
"""Inside a replica, serve.get_replica_context() names its application, deployment and
replica; outside any replica it raises."""

import ray
from ray import serve

ray.init(num_cpus=2)


@serve.deployment(num_replicas=1)
class WhoAmI:
    def __call__(self):
        context = serve.get_replica_context()
        return {"app": context.app_name, "deployment": context.deployment,
                "replica": context.replica_tag}


handle = serve.run(WhoAmI.bind(), name="identity", route_prefix=None)
info = handle.remote().result()
assert info["app"] == "identity", info
assert info["deployment"] == "WhoAmI", info
assert isinstance(info["replica"], str) and info["replica"], info
assert handle.remote().result()["replica"] == info["replica"]  # one replica

try:
    serve.get_replica_context()
except Exception:
    pass
else:
    raise AssertionError("get_replica_context worked outside a replica")

serve.shutdown()
ray.shutdown()
print("replica context ok")
