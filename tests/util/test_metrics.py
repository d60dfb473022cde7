"""``ember.util.metrics``: metrics made in tasks and actors reach the driver's ``/metrics``."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.dashboard import _server
from ember.testing import eventually
from ember.util import metrics
from tests.dashboard._support import scrape


def test_counter_gauge_and_histogram_from_tasks_and_actors_reach_the_driver(ember_local):
    served = metrics.Counter("test_images_served", "Images served.", tag_keys=("model",))
    served.set_default_tags({"model": "resnet"})

    @ember.remote
    def serve_images(n):
        for _ in range(n):
            served.inc()

    @ember.remote
    class Queue:
        def __init__(self):
            self.depth = metrics.Gauge("test_queue_depth", "Items waiting.", ("queue",))
            self.wait = metrics.Histogram("test_wait_ms", "Time in the queue.",
                                          boundaries=[10, 100], tag_keys=("queue",))

        def report(self, depth, waits):
            self.depth.set(depth, tags={"queue": "q1"})
            for ms in waits:
                self.wait.observe(ms, tags={"queue": "q1"})

    ember.get([serve_images.remote(3), serve_images.remote(4)], timeout=60)
    queue = Queue.remote()
    ember.get(queue.report.remote(7, [5, 50, 500]), timeout=60)
    served.inc(2, tags={"model": "vit"})  # in the driver too

    def arrived():
        found = scrape()
        return found.get("test_images_served_total", {}).get((("model", "resnet"),)) == 7.0 \
            and (("le", "+Inf"), ("queue", "q1")) in found.get("test_wait_ms_bucket", {})

    eventually(arrived, what="the workers' metrics on /metrics")
    found = scrape()
    assert found["test_images_served_total"][(("model", "vit"),)] == 2.0
    assert found["test_queue_depth"][(("queue", "q1"),)] == 7.0
    buckets = found["test_wait_ms_bucket"]
    assert [buckets[(("le", le), ("queue", "q1"))] for le in ("10.0", "100.0", "+Inf")] == [
        1.0, 2.0, 3.0]
    assert found["test_wait_ms_sum"][(("queue", "q1"),)] == 555.0
    assert found["test_wait_ms_count"][(("queue", "q1"),)] == 3.0


def test_core_state_is_on_the_metrics_endpoint(ember_local):
    @ember.remote
    def fail():
        raise RuntimeError("no")

    @ember.remote
    class Holder:
        def ping(self):
            return 1

    holder = Holder.options(num_cpus=1).remote()
    ember.get(holder.ping.remote(), timeout=60)
    with pytest.raises(RuntimeError):
        ember.get(fail.remote(), timeout=60)
    ref = ember.put(np.zeros(1 << 17))  # 1 MiB: in shared memory

    found = scrape()
    assert found["ember_tasks"][(("name", "fail"), ("state", "FAILED"))] == 1.0
    assert found["ember_tasks"][(("name", "Holder.ping"), ("state", "FINISHED"))] == 1.0
    assert found["ember_actors"][(("class_name", "Holder"), ("state", "ALIVE"))] == 1.0
    assert found["ember_resources_used"][(("node", "local"), ("resource", "CPU"))] == 1.0
    assert found["ember_resources_total"][(("node", "local"), ("resource", "CPU"))] == 2.0
    in_memory = found["ember_object_store_bytes"][(("location", "in_memory"), ("node", "local"))]
    assert in_memory >= 1 << 20
    del ref


@pytest.mark.parametrize(("make", "message"), [
    (lambda: metrics.Counter("2fast"), "metric name '2fast' is not valid"),
    (lambda: metrics.Counter("ok_name", tag_keys="model"), "write tag_keys=\\('model',\\)"),
    (lambda: metrics.Gauge("ok_gauge", tag_keys=("a-b",)), "tag key 'a-b'"),
    (lambda: metrics.Histogram("no_bounds"), "needs boundaries"),
    (lambda: metrics.Histogram("bad_bounds", boundaries=[5, 1]), "strictly increasing"),
])
def test_bad_metric_definitions_say_what_to_do(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_recording_checks_tags_and_values():
    counter = metrics.Counter("test_checked_total_things", tag_keys=("route",))
    with pytest.raises(ValueError, match="needs a value for tags \\['route'\\]"):
        counter.inc()
    with pytest.raises(ValueError, match="tags \\['colour'\\] that are not among its tag_keys"):
        counter.inc(tags={"route": "/", "colour": "red"})
    with pytest.raises(ValueError, match="positive number"):
        counter.inc(-1, tags={"route": "/"})
    with pytest.raises(ValueError, match="already defined as a counter"):
        metrics.Gauge("test_checked_total_things", tag_keys=("route",))


def test_a_view_published_in_an_actor_reaches_the_driver(ember_local):
    @ember.remote
    class Reporter:
        def run(self):
            metrics.publish("jobs", "nightly", state={"status": "running"},
                            event={"step": 1, "loss": 0.5})
            metrics.publish("jobs", "nightly", event={"step": 2, "loss": 0.25})

    reporter = Reporter.remote()
    ember.get(reporter.run.remote(), timeout=60)
    service = _server.current()
    assert service is not None
    view = eventually(lambda: service.views("jobs").get("nightly"), what="the actor's view")
    eventually(lambda: len(service.views("jobs")["nightly"]["events"]) == 2, what="both events")
    view = service.views("jobs")["nightly"]
    assert view["state"] == {"status": "running"}
    assert [e["loss"] for e in view["events"]] == [0.5, 0.25]
    with pytest.raises(ValueError, match="needs a state=, an event=, or both"):
        metrics.publish("jobs", "nightly")
