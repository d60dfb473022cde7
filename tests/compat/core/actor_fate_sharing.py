# compat: topic doc/source/ray-core/fault_tolerance/actors.rst (actor creator failure)
"""An actor shares the fate of its creator unless it is detached: when the actor that
created a child dies, the child dies too, while a detached actor stays."""

import time

import ray

ray.init(num_cpus=2, namespace="fate-sharing")


@ray.remote(num_cpus=0)
class Child:
    def ping(self):
        return "pong"


@ray.remote(num_cpus=0)
class Parent:
    def start_children(self):
        self.child = Child.remote()
        self.detached = Child.options(name="survivor", lifetime="detached").remote()
        ray.get([self.child.ping.remote(), self.detached.ping.remote()])
        return self.child

    def ping(self):
        return "parent here"


parent = Parent.remote()
child = ray.get(parent.start_children.remote())
assert ray.get(child.ping.remote()) == "pong"

ray.kill(parent)

# The child goes down with its parent; calls on it fail once that is noticed.
deadline = time.monotonic() + 30
while True:
    try:
        ray.get(child.ping.remote(), timeout=10)
    except ray.exceptions.RayActorError:
        print("child died with its parent")
        break
    assert time.monotonic() < deadline, "the child outlived its parent"
    time.sleep(0.2)

# The detached actor is not owned by the parent; it lives until killed.
survivor = ray.get_actor("survivor")
assert ray.get(survivor.ping.remote()) == "pong"
ray.kill(survivor)
print("fate sharing ok")
ray.shutdown()
