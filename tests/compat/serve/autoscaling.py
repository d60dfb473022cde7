# compat: topic doc/source/serve/autoscaling-guide.md
"""An autoscaling deployment starts at min_replicas and adds replicas while requests queue
up, never more than max_replicas."""

import asyncio
import time

import ray
from ray import serve

ray.init(num_cpus=4)


@serve.deployment(
    max_ongoing_requests=2,
    ray_actor_options={"num_cpus": 0.5},
    autoscaling_config={
        "min_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 0,
        "downscale_delay_s": 600,
        "look_back_period_s": 1,
        "metrics_interval_s": 0.5,
    },
)
class Slow:
    async def __call__(self):
        await asyncio.sleep(1.0)
        return serve.get_replica_context().replica_tag


handle = serve.run(Slow.bind())


def running_replicas():
    status = serve.status().applications["default"].deployments["Slow"]
    return status.replica_states.get("RUNNING", 0)


assert running_replicas() == 1

# Keep 8 requests in flight until a second replica answers (or 60 s pass).
replicas = set()
deadline = time.monotonic() + 60
while len(replicas) < 2 and time.monotonic() < deadline:
    replicas |= {r.result() for r in [handle.remote() for _ in range(8)]}

assert len(replicas) >= 2, "no replica was added under load"
assert 2 <= running_replicas() <= 3, running_replicas()

serve.shutdown()
ray.shutdown()
print("autoscaling ok")
