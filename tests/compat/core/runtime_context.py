# compat: topic doc/source/ray-core/api/runtime-context.rst
"""ray.get_runtime_context(): who am I (job, task, actor, node), what do I hold, and
my actor's own handle."""

import ray

ray.init(num_cpus=2, namespace="ctx-demo")

driver_ctx = ray.get_runtime_context()
job_id = driver_ctx.get_job_id()
node_id = driver_ctx.get_node_id()
assert isinstance(job_id, str) and job_id
assert driver_ctx.namespace == "ctx-demo"
assert driver_ctx.get_actor_id() is None


@ray.remote(num_cpus=1)
def describe():
    ctx = ray.get_runtime_context()
    return {
        "job": ctx.get_job_id(),
        "task": ctx.get_task_id(),
        "node": ctx.get_node_id(),
        "actor": ctx.get_actor_id(),
        "cpus": ctx.get_assigned_resources().get("CPU"),
        "name": ctx.get_task_name(),
    }


info = ray.get(describe.remote())
assert info["job"] == job_id and info["node"] == node_id
assert info["actor"] is None and info["cpus"] == 1
assert isinstance(info["task"], str) and info["task"]
assert "describe" in info["name"], info["name"]
other = ray.get(describe.remote())
assert other["task"] != info["task"]


@ray.remote
class Worker:
    def whoami(self):
        ctx = ray.get_runtime_context()
        return ctx.get_actor_id(), ctx.get_actor_name(), ctx.get_job_id()

    def me(self):
        # current_actor is this actor's own handle, e.g. to give to others.
        return ray.get_runtime_context().current_actor


worker = Worker.options(name="ctx-worker").remote()
actor_id, actor_name, actor_job = ray.get(worker.whoami.remote())
assert isinstance(actor_id, str) and actor_id
assert actor_name == "ctx-worker" and actor_job == job_id
# The handle the actor gives out reaches the same actor.
same = ray.get(worker.me.remote())
assert ray.get(same.whoami.remote())[0] == actor_id
assert ray.get(Worker.remote().whoami.remote())[0] != actor_id
print("runtime context ok", {"job": job_id, "actor": actor_id[:8]})
ray.shutdown()
