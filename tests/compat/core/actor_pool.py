# compat: topic python/ray/util/actor_pool.py (ActorPool's documented API)
"""ActorPool: spread work over a fixed set of actors, in order or as results come."""

import time

import ray
from ray.util import ActorPool

ray.init(num_cpus=2)


@ray.remote(num_cpus=0)
class Scorer:
    def __init__(self, weight):
        self.weight = weight

    def score(self, x):
        time.sleep(0.01 * (x % 3))
        return x * self.weight


# Two actors with the same weight: which one serves a call does not change the answer.
pool = ActorPool([Scorer.remote(3), Scorer.remote(3)])

# map yields results in the order of the inputs.
ordered = list(pool.map(lambda actor, x: actor.score.remote(x), range(10)))
assert ordered == [3 * x for x in range(10)], ordered

# map_unordered yields each result as soon as it is ready.
unordered = list(pool.map_unordered(lambda actor, x: actor.score.remote(x), range(10)))
assert sorted(unordered) == ordered

# submit / get_next: feed work one item at a time.
for x in [5, 6, 7]:
    pool.submit(lambda actor, v: actor.score.remote(v), x)
got = []
while pool.has_next():
    got.append(pool.get_next())
assert got == [15, 18, 21]

# More submissions than actors: the extra ones wait for a free actor.
for x in range(6):
    pool.submit(lambda actor, v: actor.score.remote(v), x)
assert sorted(pool.get_next_unordered() for _ in range(6)) == [0, 3, 6, 9, 12, 15]
assert not pool.has_next()

# Actors can be taken out of an idle pool and put back.
actor = pool.pop_idle()
assert actor is not None and pool.has_free()
pool.push(actor)

# get_next with a timeout raises TimeoutError when the result is late.
slow_pool = ActorPool([Scorer.remote(1)])
slow_pool.submit(lambda a, v: a.score.remote(v), 2)
try:
    slow_pool.get_next(timeout=0.0001)
except TimeoutError:
    print("timed out as expected")
print("actor pool ok", ordered)
ray.shutdown()
