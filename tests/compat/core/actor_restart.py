# compat: topic doc/source/ray-core/fault_tolerance/actors.rst
"""Actor fault tolerance: max_restarts brings a crashed actor back, max_task_retries retries
its calls; once restarts run out, calls raise RayActorError."""

import os

import ray

ray.init(num_cpus=2)


@ray.remote(max_restarts=2, max_task_retries=0)
class Fragile:
    def __init__(self):
        self.calls = 0

    def pid(self):
        return os.getpid()

    def call(self):
        self.calls += 1
        return self.calls

    def crash(self):
        os._exit(1)


actor = Fragile.remote()
assert ray.get([actor.call.remote() for _ in range(3)]) == [1, 2, 3]
first_pid = ray.get(actor.pid.remote())

for restart in range(2):
    try:
        ray.get(actor.crash.remote())
    except ray.exceptions.RayActorError:
        print(f"crash {restart + 1}: caller sees RayActorError")
    # After a restart the actor runs __init__ again: its state starts over.
    # Calls made while it restarts may fail; retry until it answers.
    for _ in range(100):
        try:
            assert ray.get(actor.call.remote()) == 1
            break
        except ray.exceptions.RayActorError:
            continue
    assert ray.get(actor.pid.remote()) != first_pid

# A third crash is one more than max_restarts allows: the actor stays dead.
try:
    ray.get(actor.crash.remote())
except ray.exceptions.RayActorError:
    pass
try:
    ray.get(actor.call.remote())
except ray.exceptions.RayActorError:
    print("no restarts left: actor is dead")
else:
    raise AssertionError("the actor answered after its last restart")


@ray.remote(max_restarts=-1, max_task_retries=-1)
class Resilient:
    """With task retries, a call that was running when the actor died is run again."""

    def __init__(self, marker):
        self.marker = marker

    def risky(self):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)  # the first attempt dies
        return "survived"


marker = os.path.abspath("crashed-once")
resilient = Resilient.remote(marker)
assert ray.get(resilient.risky.remote()) == "survived"
print("actor restart ok")
ray.shutdown()
