# compat: topic doc/source/ray-core/patterns/limit-pending-tasks.rst
"""Backpressure: keep at most N calls in flight with ray.wait, instead of submitting
everything at once and filling memory with pending work."""

import time

import ray

ray.init(num_cpus=2)

MAX_IN_FLIGHT = 4


@ray.remote
class Sink:
    def __init__(self):
        self.received = 0

    def write(self, batch):
        time.sleep(0.01)
        self.received += len(batch)
        return len(batch)

    def total(self):
        return self.received


sink = Sink.remote()
in_flight = []
most_in_flight = 0
for i in range(40):
    if len(in_flight) >= MAX_IN_FLIGHT:
        # Wait for one call to finish before submitting more.
        ready, in_flight = ray.wait(in_flight, num_returns=1)
        ray.get(ready)
    in_flight.append(sink.write.remote([i] * 10))
    most_in_flight = max(most_in_flight, len(in_flight))
ray.get(in_flight)
assert ray.get(sink.total.remote()) == 400
assert most_in_flight == MAX_IN_FLIGHT
print("never more than", most_in_flight, "calls in flight")
ray.shutdown()
