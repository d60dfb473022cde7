# compat: topic doc/source/ray-core/patterns/tree-of-actors.rst
"""A tree of actors: a supervisor creates trainer actors, hands each a config, collects
their results; killing the supervisor takes its trainers with it."""

import time

import ray

ray.init(num_cpus=2)


@ray.remote(num_cpus=0)
class Trainer:
    def __init__(self, learning_rate):
        self.learning_rate = learning_rate

    def fit(self, steps):
        loss = 1.0
        for _ in range(steps):
            loss *= 1 - self.learning_rate
        return round(loss, 6)


@ray.remote(num_cpus=0)
class Supervisor:
    def __init__(self, learning_rates):
        self.trainers = {lr: Trainer.remote(lr) for lr in learning_rates}

    def fit_all(self, steps):
        losses = ray.get([t.fit.remote(steps) for t in self.trainers.values()])
        return dict(zip(self.trainers, losses, strict=True))

    def trainers_list(self):
        return list(self.trainers.values())


supervisor = Supervisor.remote([0.01, 0.1, 0.5])
losses = ray.get(supervisor.fit_all.remote(10))
print("losses", losses)
assert min(losses, key=losses.get) == 0.5
assert losses[0.01] > losses[0.1] > losses[0.5]

trainers = ray.get(supervisor.trainers_list.remote())
ray.kill(supervisor)
deadline = time.monotonic() + 30
alive = list(trainers)
while alive:
    assert time.monotonic() < deadline, "trainers outlived their supervisor"
    still = []
    for trainer in alive:
        try:
            ray.get(trainer.fit.remote(1), timeout=10)
            still.append(trainer)
        except ray.exceptions.RayActorError:
            pass
    alive = still
    time.sleep(0.1)
print("trainers ended with their supervisor")
ray.shutdown()
