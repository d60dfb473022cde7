# compat: topic doc/source/ray-core/examples/monte_carlo_pi.rst
"""Estimate pi with sampling tasks that report progress to an actor."""

import math
import random
import time

import ray

ray.init(num_cpus=2)

NUM_TASKS = 4
SAMPLES_PER_TASK = 200_000


@ray.remote(num_cpus=0)
class Progress:
    def __init__(self, total):
        self.total = total
        self.done = {}

    def report(self, task, samples):
        self.done[task] = samples

    def fraction(self):
        return sum(self.done.values()) / self.total


@ray.remote
def sample(task, n, progress):
    rng = random.Random(task)
    inside = 0
    for i in range(1, n + 1):
        x, y = rng.random(), rng.random()
        inside += x * x + y * y <= 1
        if i % 50_000 == 0:
            progress.report.remote(task, i)
    return inside


progress = Progress.remote(NUM_TASKS * SAMPLES_PER_TASK)
refs = [sample.remote(t, SAMPLES_PER_TASK, progress) for t in range(NUM_TASKS)]
seen = []
while (fraction := ray.get(progress.fraction.remote())) < 1:
    seen.append(fraction)
    time.sleep(0.1)
inside = sum(ray.get(refs))
pi = 4 * inside / (NUM_TASKS * SAMPLES_PER_TASK)
print(f"pi is about {pi:.4f}; progress seen: {sorted(set(round(f, 2) for f in seen))}")
assert abs(pi - math.pi) < 0.01
assert seen == sorted(seen)
ray.shutdown()
