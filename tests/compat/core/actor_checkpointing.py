# compat: topic doc/source/ray-core/fault_tolerance/actors.rst (actor checkpointing)
"""Manual actor checkpointing: an actor saves its state to a file after each change and
loads it when it starts, so a new actor (or a restarted one) continues where it was."""

import json
import os

import ray

ray.init(num_cpus=2)

CHECKPOINT = os.path.abspath("counter-checkpoint.json")


@ray.remote(max_restarts=-1)
class DurableCounter:
    def __init__(self, path):
        self.path = path
        self.state = {"count": 0}
        if os.path.exists(path):
            with open(path) as file:
                self.state = json.load(file)
            print("restored", self.state)

    def add(self, n):
        self.state["count"] += n
        # Write to a temporary file, then rename: a crash never leaves half a checkpoint.
        with open(self.path + ".tmp", "w") as file:
            json.dump(self.state, file)
        os.replace(self.path + ".tmp", self.path)
        return self.state["count"]

    def crash(self):
        os._exit(1)


counter = DurableCounter.remote(CHECKPOINT)
assert ray.get([counter.add.remote(1) for _ in range(5)]) == [1, 2, 3, 4, 5]

# The actor process dies; Ray restarts it and __init__ reads the checkpoint.
try:
    ray.get(counter.crash.remote())
except ray.exceptions.RayActorError:
    print("actor crashed, restarting")
assert ray.get(counter.add.remote(10)) == 15

# A brand new actor given the same file picks up the state too.
ray.kill(counter)
replacement = DurableCounter.remote(CHECKPOINT)
assert ray.get(replacement.add.remote(0)) == 15
with open(CHECKPOINT) as f:
    assert json.load(f) == {"count": 15}
print("checkpointing ok")
ray.shutdown()
